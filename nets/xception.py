"""Xception for 32x32 inputs.

Paper: F. Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017
(arXiv:1610.02357), Figure 5. An entry flow (two 3x3 convolutions, then three residual blocks of two separable
convolutions and a 3x3 stride-2 max-pool, with 1x1 stride-2 convolutions + BN on the shortcuts), a middle flow
of eight residual blocks of three 728-channel separable convolutions with identity shortcuts, and an exit flow
(one more pooling residual block, 728 -> 1024, then separable convolutions to 1536 and 2048 channels with
ReLU), global average pooling and a linear classifier. Every separable convolution (`nets.blocks.
SeparableConv2d`: depthwise 3x3 with no non-linearity, then pointwise 1x1, as the paper prescribes) is
followed by BN; as in the reference Keras implementation there are no biases before BN and the ReLUs come
before the separable convolutions inside the residual branches. The depthwise convolutions run through
`nets.blocks.depthwise`: the Triton kernel on CUDA, plain PyTorch elsewhere (`kernels="reference"`).

Adapted for CIFAR: on ImageNet the network reduces 32x (299 -> 10: a stride-2 unpadded stem convolution and
four stride-2 pools), which would leave a 32x32 image 1x1 before the exit flow's last convolutions. Here the
two stem convolutions have stride 1 and 'same' padding and the first entry block does not downsample (its
shortcut is still a 1x1 convolution + BN: it changes the width, 64 -> 128), so the maps are 32x32 through the
first entry block, 16x16 in the second, 8x8 from the third through the middle flow, and the exit flow's pool
takes them to 4x4 for its 1536/2048-channel convolutions: the 8x reduction of the CIFAR ResNets.
`imagenet=True` restores the paper's strides and unpadded stem; the tests check its size against the paper's
22.9M parameters.

Parameters:                  10 classes    100 classes   1000 classes
    xception                 20,827,442    21,011,852     22,855,952
Strides change no parameter, so `imagenet=True` has the same counts.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from nets.blocks import Kernels, SeparableConv2d
from nets.core import Net
from nets.registry import register

STEM_CHANNELS = (32, 64)
ENTRY_WIDTHS = (128, 256, 728)  # each entry block: two separable convolutions of this width, then a pool
MIDDLE_WIDTH, MIDDLE_BLOCKS, MIDDLE_CONVS = 728, 8, 3
EXIT_BLOCK_WIDTHS = (728, 1024)  # the exit flow's residual block
EXIT_CONV_WIDTHS = (1536, 2048)  # then two separable convolutions with BN and ReLU


class XceptionBlock(nn.Module):
    """[ReLU -> SeparableConv2d -> BN] per width, then a 3x3 max-pool if `stride` is 2, plus the shortcut: the
    identity, or a 1x1 convolution (stride `stride`) + BN where the shape changes.

    relu_first=False drops the first ReLU: the first entry block's input is already a ReLU's output.
    """
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, cin: int, widths: tuple[int, ...], stride: int, relu_first: bool, kernels: str):
        super().__init__()
        self.relu_first = relu_first
        self.sep = nn.ModuleList()
        self.bn = nn.ModuleList()
        c = cin
        for width in widths:
            self.sep.append(SeparableConv2d(c, width, 1, kernels))
            self.bn.append(nn.BatchNorm2d(width))
            c = width
        self.pool = nn.MaxPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != c:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = x
        for i, (sep, bn) in enumerate(zip(self.sep, self.bn)):
            # Not in place: the first ReLU's input is also the shortcut's.
            y = bn(sep(F.relu(y) if i > 0 or self.relu_first else y))
        return self.pool(y) + self.shortcut(x)


class Xception(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, num_classes: int, imagenet: bool, kernels: str):
        super().__init__()
        # The paper's stem: 3x3 stride 2 then 3x3, both unpadded; the CIFAR stem keeps the 32x32 resolution.
        stride, padding = (2, 0) if imagenet else (1, 1)
        c1, c2 = STEM_CHANNELS
        self.conv1, self.bn1 = nn.Conv2d(3, c1, 3, stride=stride, padding=padding, bias=False), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, padding=padding, bias=False), nn.BatchNorm2d(c2)
        self.relu = nn.ReLU(inplace=True)

        entry, cin = [], c2
        for i, width in enumerate(ENTRY_WIDTHS):
            block_stride = 2 if imagenet or i > 0 else 1  # CIFAR: the first entry block keeps 32x32
            entry.append(XceptionBlock(cin, (width, width), block_stride, relu_first=i > 0, kernels=kernels))
            cin = width
        self.entry = nn.Sequential(*entry)
        self.middle = nn.Sequential(
            *(XceptionBlock(cin, (MIDDLE_WIDTH,) * MIDDLE_CONVS, 1, True, kernels) for _ in range(MIDDLE_BLOCKS))
        )
        self.exit_block = XceptionBlock(MIDDLE_WIDTH, EXIT_BLOCK_WIDTHS, 2, True, kernels)
        c3, c4 = EXIT_CONV_WIDTHS
        self.conv3, self.bn3 = SeparableConv2d(EXIT_BLOCK_WIDTHS[-1], c3, 1, kernels), nn.BatchNorm2d(c3)
        self.conv4, self.bn4 = SeparableConv2d(c3, c4, 1, kernels), nn.BatchNorm2d(c4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x):  # x: (B, 3, H, W)
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))  # (B, 64, H, W) on CIFAR
        x = self.middle(self.entry(x))  # (B, 728, H / 4, W / 4)
        x = self.exit_block(x)  # (B, 1024, H / 8, W / 8)
        x = self.relu(self.bn4(self.conv4(self.relu(self.bn3(self.conv3(x))))))  # (B, 2048, H / 8, W / 8)
        return self.fc(self.pool(x).flatten(1))  # (B, num_classes)


@register("xception")
def xception(num_classes: int = 10, imagenet: bool = False, kernels: Kernels = "auto") -> Net:
    """imagenet: the paper's strides and unpadded stem (for 299x299 inputs);
    kernels: "auto" (Triton depthwise kernel on CUDA) or "reference" (plain PyTorch)."""
    return Net("xception", lambda: Xception(num_classes, imagenet, kernels), num_classes)
