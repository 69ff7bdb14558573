"""GoogLeNet (Inception v1) for 32x32 inputs.

Paper: C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke, A. Rabinovich,
"Going Deeper with Convolutions", CVPR 2015 (arXiv:1409.4842). The nine inception modules 3a..5b take their
widths from the paper's Table 1, written once in INCEPTIONS below. As in torchvision, every convolution is
followed by BatchNorm (eps 0.001, torchvision's BasicConv2d) instead of the paper's two local response
normalisations, and has no bias.

Adapted for CIFAR (`config="cifar"`, the default): the ImageNet stem shrinks the image 8x before inception 3a
(7x7 stride-2 conv1, then max-pools 1 and 2: 224 -> 28), which would leave a 32x32 image 4x4 at 3a and 1x1 at
5a. The CIFAR stem keeps the same three convolutions (conv1 3x3 instead of 7x7, conv2 1x1, conv3 3x3) at
stride 1 with no max-pool, so all downsampling happens between the inception groups, by the paper's own
3x3 stride-2 max-pools: 3a-3b see 32x32, maxpool3 -> 4a-4e see 16x16, maxpool4 -> 5a-5b see 8x8, then the
global average pool. That is nearly ImageNet's 28/14/7 grid at those stages, and so nearly its cost: 3.1
forward GFLOPs per 32x32 image (torchvision's at 224x224: 3.0; ResNet-18 here: 1.1).

Options:
- `aux_logits` (off by default): the paper's two auxiliary classifiers after 4a and 4d (average pool to 4x4,
  1x1 conv 128, FC 1024, FC classes). With them, the train-mode forward returns (logits, aux1, aux2), which
  the trainer weighs 1, 0.3, 0.3 (the paper's sec. 5); eval mode returns the logits alone.
- `torchvision_quirks` (off by default): torchvision's GoogLeNet differs from the paper in two places, a 3x3
  convolution in each module's third branch where the paper has 5x5 (pytorch/vision#906) and a 2x2 max-pool
  before 5a where the paper has 3x3; this option reproduces both (and torchvision's main dropout, 0.2 for the
  paper's 0.4, in the imagenet config). The pool change alters nothing at 32x32 (both pools give 16 -> 8).
- `dropout` before the last Linear: 0 by default for CIFAR (above 0 it draws from `apply`'s key, nets/rng.py,
  or without a key from torch's global RNG); the auxiliary heads' dropout is the paper's 0.7 in the imagenet
  config and none in the cifar one.

`config="imagenet", torchvision_quirks=True` is torchvision's `googlenet(weights=None)` exactly (aux heads on,
as its default; transform_input=False); the tests check it against torchvision. Module names equal
torchvision's (conv1.conv, conv1.bn, inception3a.branch1.conv, ..., aux1.fc1, fc), so torchvision state_dicts
load without renaming.

Parameters (config "cifar"):             10 classes    100 classes
    googlenet                             5,983,402     6,075,652
    googlenet, aux_logits=True           10,333,886    10,610,636
    googlenet, torchvision_quirks=True    5,602,474     5,694,724
config "imagenet", torchvision_quirks=True, 1000 classes: 13,004,888 (torchvision's googlenet, aux heads included).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from nets import blocks
from nets.core import Net
from nets.options import DropRate, OneOf
from nets.registry import register

# Widths of each inception module, the paper's Table 1:
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); a module outputs #1x1 + #3x3 + #5x5 + pool proj.
INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
STEM_CHANNELS = (64, 64, 192)  # conv1, conv2 (1x1), conv3
BN_EPS = 1e-3  # torchvision's BasicConv2d value (PyTorch's default is 1e-5)
CONFIGS = ("cifar", "imagenet")
AUX_GRID, AUX_CHANNELS, AUX_WIDTH = 4, 128, 1024  # aux head: pooled grid, 1x1 conv width, hidden FC width
AUX_DROPOUT = {"cifar": 0.0, "imagenet": 0.7}  # the paper's 0.7
# Default main dropout by (config, torchvision_quirks): the paper's 0.4, torchvision's 0.2.
DROPOUT = {("cifar", False): 0.0, ("cifar", True): 0.0, ("imagenet", False): 0.4, ("imagenet", True): 0.2}


class BasicConv2d(nn.Module):
    """Conv (no bias: BN's shift replaces it) -> BatchNorm (eps 0.001) -> ReLU, with torchvision's names."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1 -> 3x3 | 1x1 -> kxk | 3x3 max-pool -> 1x1."""

    def __init__(self, cin: int, widths: tuple[int, ...], branch3_kernel: int):
        super().__init__()
        n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj = widths
        self.branch1 = BasicConv2d(cin, n1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, n3x3red, 1), BasicConv2d(n3x3red, n3x3, 3, padding=1))
        k = branch3_kernel
        self.branch3 = nn.Sequential(BasicConv2d(cin, n5x5red, 1), BasicConv2d(n5x5red, n5x5, k, padding=k // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, 1))

    def forward(self, x):  # (B, cin, H, W) -> (B, n1x1 + n3x3 + n5x5 + pool_proj, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: average pool to 4x4, 1x1 conv, FC, dropout, FC (the paper's sec. 5)."""

    def __init__(self, cin: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = BasicConv2d(cin, AUX_CHANNELS, 1)
        self.fc1 = nn.Linear(AUX_CHANNELS * AUX_GRID**2, AUX_WIDTH)
        self.fc2 = nn.Linear(AUX_WIDTH, num_classes)
        self.dropout = blocks.Dropout(dropout)

    def forward(self, x):  # (B, cin, H, W)
        # The paper's 5x5 stride-3 average pool maps ImageNet's 14x14 to 4x4; adaptive pooling does that at
        # any size (CIFAR's 16x16 too), as torchvision does.
        x = self.conv(F.adaptive_avg_pool2d(x, AUX_GRID)).flatten(1)  # (B, 128 * 4 * 4)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))  # (B, num_classes)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, config: str, aux_logits: bool, torchvision_quirks: bool, dropout: float):
        super().__init__()
        c1, c2, c3 = STEM_CHANNELS
        if config == "cifar":  # stride 1, no pools: 32x32 reaches inception 3a
            self.conv1 = BasicConv2d(3, c1, 3, padding=1)
            self.maxpool1 = nn.Identity()
        else:  # the paper's: 7x7 stride 2 and a max-pool, then another max-pool after conv3 (224 -> 28)
            self.conv1 = BasicConv2d(3, c1, 7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(c1, c2, 1)
        self.conv3 = BasicConv2d(c2, c3, 3, padding=1)
        self.maxpool2 = nn.Identity() if config == "cifar" else nn.MaxPool2d(3, stride=2, ceil_mode=True)

        branch3_kernel = 3 if torchvision_quirks else 5
        cin, taps = c3, {}
        for name, widths in INCEPTIONS.items():
            setattr(self, f"inception{name}", Inception(cin, widths, branch3_kernel))
            cin = widths[0] + widths[2] + widths[4] + widths[5]
            taps[name] = cin
        # Halve the grid between the inception groups (ceil mode, as in the paper's Caffe model).
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2 if torchvision_quirks else 3, stride=2, ceil_mode=True)

        self.aux_logits = aux_logits
        if aux_logits:  # after 4a and 4d, as in the paper
            self.aux1 = InceptionAux(taps["4a"], num_classes, AUX_DROPOUT[config])
            self.aux2 = InceptionAux(taps["4d"], num_classes, AUX_DROPOUT[config])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = blocks.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):  # x: (B, 3, H, W); cifar grids in the comments, for H = W = 32
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))  # (B, 192, 32, 32)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, 16, 16)
        x = self.inception4a(x)  # (B, 512, 16, 16)
        aux1 = self.aux1(x) if self.aux_logits and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, 16, 16)
        aux2 = self.aux2(x) if self.aux_logits and self.training else None
        x = self.maxpool4(self.inception4e(x))  # (B, 832, 8, 8)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, 8, 8)
        logits = self.fc(self.dropout(self.avgpool(x).flatten(1)))  # (B, num_classes)
        return (logits, aux1, aux2) if aux1 is not None else logits


@register("googlenet")
def googlenet(num_classes: int = 10, config: Annotated[str, OneOf(*CONFIGS)] = "cifar", aux_logits: bool | None = None,
              torchvision_quirks: bool = False, dropout: DropRate | None = None) -> Net:
    """config: "cifar" or "imagenet"; aux_logits: None takes the config's (cifar off, imagenet on, as
    torchvision's); torchvision_quirks: torchvision's 3x3 third branch and 2x2 pool; dropout: None takes the
    config's (cifar 0, imagenet 0.4, or torchvision's 0.2 with torchvision_quirks)."""
    aux_logits = config == "imagenet" if aux_logits is None else aux_logits
    dropout = DROPOUT[config, torchvision_quirks] if dropout is None else dropout
    return Net("googlenet", lambda: GoogLeNet(num_classes, config, aux_logits, torchvision_quirks, dropout),
               num_classes)
