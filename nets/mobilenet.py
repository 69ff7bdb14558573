"""MobileNetV1 for 32x32 inputs.

Paper: A. G. Howard, M. Zhu, B. Chen, D. Kalenichenko, W. Wang, T. Weyand, M. Andreetto, H. Adam,
"MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications", 2017 (arXiv:1704.04861).
A 3x3 convolution stem, then the 13 depthwise-separable blocks of the paper's Table 1 (depthwise 3x3 -> BN ->
ReLU, pointwise 1x1 -> BN -> ReLU: Figure 3), global average pooling and one linear classifier. The width
multiplier `alpha` (section 3.3) scales every layer's channels, the stem's included. The depthwise
convolutions are `nets.blocks.DepthwiseConv2d`: the Triton kernel on CUDA, plain PyTorch elsewhere
(`kernels="reference"` forces the latter). Table 1 marks the last depthwise convolution "s2" although its
input and output are both 7x7; it is stride 1 here, as in the TF-slim and Keras implementations.

Adapted for CIFAR: the network reduces 32x on ImageNet (224 -> 7: the stride-2 stem and four stride-2
depthwise convolutions), which would take a 32x32 image to 1x1 maps, where a 3x3 depthwise filter sees only
padding. Here the stem and the 12th block (512 -> 1024 channels) have stride 1, so the downsampling happens in
blocks 2, 4 and 6 only: 32x32 maps through block 1, 16x16 through block 3, 8x8 through block 5 and 4x4 from
block 6 to the pooling, the 8x reduction of the CIFAR ResNets. Keeping block 12's stride (2x2 at the end,
0.09 instead of 0.13 GFLOPs) would leave the last depthwise filters mostly on padding and the 1024-channel
BatchNorms 4 values per image; one SGD step at lr 1e-3 on a batch of 2 (tests/test_nets.py) then raised the
loss for 5 of 80 random seeds, even with the initialisation below. `imagenet=True` restores the paper's
strides; the tests check its size against the paper's 4.2M parameters.

Initialisation: He et al. 2015 in its fan_in mode for every convolution, not the zoo's torchvision-style
fan_out. For a depthwise convolution PyTorch's fan_out counts C x 3 x 3 weights although each output sees
3 x 3 inputs, so the filters would start sqrt(C) times too small (std 0.015 at 1024 channels); fan_in =
(C / groups) x 3 x 3 = 9 is the true fan. Every convolution here feeds a BatchNorm, so the scale of its
weights sets their effective learning rate (lr / |w|^2), and this plain stack of 27 BN-ReLU layers has no
residual connections to damp the growth of gradients towards the input at initialisation (Yang et al. 2019,
"A Mean Field Theory of Batch Normalization"). With fan_out, one SGD step at lr 1e-3 on a batch of 2 raised
the loss for 3 of 40 seeds; with fan_in for none of 120.

Parameters (alpha 1):        10 classes    100 classes   1000 classes
    mobilenetv1               3,217,226     3,309,476      4,231,976
Strides change no parameter, so `imagenet=True` has the same counts.
"""

from __future__ import annotations

from typing import Annotated

from torch import nn

from nets.blocks import DepthwiseConv2d, Kernels, conv_bn_relu
from nets.core import Net
from nets.options import Above
from nets.registry import register

STEM_CHANNELS = 32
# (output channels, depthwise stride) of the 13 depthwise-separable blocks: the paper's Table 1.
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)  # fmt: skip
CIFAR_UNSTRIDED = 11  # the 12th block keeps stride 1 on CIFAR: 32x32 images end at 4x4 maps, not 2x2


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 (stride `stride`) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU (the paper's Figure 3)."""
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, cin: int, cout: int, stride: int, kernels: str):
        super().__init__()
        self.depthwise, self.bn1 = DepthwiseConv2d(cin, 3, stride, kernels), nn.BatchNorm2d(cin)
        self.pointwise, self.bn2 = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class MobileNetV1(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, num_classes: int, alpha: float, imagenet: bool, kernels: str):
        super().__init__()

        def width(channels: int) -> int:  # the width multiplier, applied to every layer
            return max(1, round(channels * alpha))

        cin = width(STEM_CHANNELS)
        self.stem = conv_bn_relu(3, cin, 3, stride=2 if imagenet else 1)
        blocks = []
        for i, (channels, stride) in enumerate(BLOCKS):
            if i == CIFAR_UNSTRIDED and not imagenet:
                stride = 1
            blocks.append(DepthwiseSeparable(cin, width(channels), stride, kernels))
            cin = width(channels)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):  # x: (B, 3, H, W)
        x = self.blocks(self.stem(x))  # (B, 1024 * alpha, H / 8, W / 8) on CIFAR, H / 32 on ImageNet
        return self.fc(self.pool(x).flatten(1))  # (B, num_classes)

    def init_param(self, name, t, generator) -> bool:
        # He et al. 2015, fan_in mode, for every convolution: the true fan of a depthwise filter (see the
        # module docstring for why, with measurements).
        if name.endswith("weight") and t.ndim == 4:
            nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu", generator=generator)
            return True
        return False


@register("mobilenetv1")
def mobilenetv1(num_classes: int = 10, alpha: Annotated[float, Above(0)] = 1.0, imagenet: bool = False,
                kernels: Kernels = "auto") -> Net:
    """alpha: width multiplier (1, 0.75, 0.5, 0.25 in the paper); imagenet: the paper's stride-2 stem;
    kernels: "auto" (Triton depthwise kernel on CUDA) or "reference" (plain PyTorch)."""
    return Net("mobilenetv1", lambda: MobileNetV1(num_classes, alpha, imagenet, kernels), num_classes)
