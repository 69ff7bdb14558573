"""ResNet-18/34/50/101/152 for 32x32 inputs.

Paper: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385). Bottleneck blocks stride in the 3x3 convolution ("ResNet v1.5"), as torchvision does.

Adapted for CIFAR: the ImageNet stem (7x7 stride-2 convolution and 3x3 max-pool, a 4x reduction) would leave
a 32x32 image 1x1 by the last stage, so the stem is one 3x3 stride-1 convolution and there is no max-pool;
the four stages then see 32, 16, 8 and 4 pixels. This is the widely used CIFAR variant of the ImageNet
depths (not the paper's separate 6n+2 CIFAR family). `stem="imagenet"` restores the ImageNet stem, which the
tests use to check the architecture against torchvision's.

Module and parameter names equal torchvision's (conv1, bn1, layer1.0.conv1, ..., fc), so torchvision
state_dicts load without renaming.

Parameters (stem "cifar"):   10 classes    100 classes
    resnet18                 11,173,962    11,220,132
    resnet34                 21,282,122    21,328,292
    resnet50                 23,520,842    23,705,252
    resnet101                42,512,970    42,697,380
    resnet152                58,156,618    58,341,028
"""

from __future__ import annotations

from typing import Annotated

from torch import nn

from nets.core import Net
from nets.options import AtLeast, OneOf
from nets.registry import register

# Blocks per stage, from the paper's Table 1.
STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STEMS = ("cifar", "imagenet")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class Bottleneck(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


class ResNet(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, depth: int, num_classes: int, width: int, stem: str, zero_init_residual: bool):
        super().__init__()
        block = BasicBlock if depth < 50 else Bottleneck
        self.zero_init_residual = zero_init_residual
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:  # "imagenet"
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        cin = width
        for i, n_blocks in enumerate(STAGES[depth]):
            stage_width = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                cout = stage_width * block.expansion
                downsample = None
                if j == 0 and (stride != 1 or cin != cout):
                    downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
                blocks.append(block(cin, stage_width, stride if j == 0 else 1, downsample))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        last_bn = "bn3" if block is Bottleneck else "bn2"
        self.last_bn_weights = {
            f"layer{i + 1}.{j}.{last_bn}.weight" for i, n in enumerate(STAGES[depth]) for j in range(n)
        }
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):  # x: (B, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))  # (B, num_classes)

    def init_param(self, name, t, generator) -> bool:
        # Goyal et al. 2017 (arXiv:1706.02677, sec. 5.1): with the last BN scale of each residual branch at 0
        # every block starts as the identity, which eases early training. Off by default (torchvision's too).
        if self.zero_init_residual and name in self.last_bn_weights:
            t.zero_()
            return True
        return False


def resnet(depth: int):
    def build(num_classes: int = 10, width: Annotated[int, AtLeast(1)] = 64,
              stem: Annotated[str, OneOf(*STEMS)] = "cifar", zero_init_residual: bool = False) -> Net:
        """width: channels of the first stage (64 in the paper); stem: "cifar" or "imagenet";
        zero_init_residual: each residual branch's last BN scale starts at 0."""
        return Net(f"resnet{depth}", lambda: ResNet(depth, num_classes, width, stem, zero_init_residual), num_classes)

    return build


for _depth in STAGES:
    register(f"resnet{_depth}")(resnet(_depth))
