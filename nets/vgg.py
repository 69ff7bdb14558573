"""VGG-11/13/16/19 with BatchNorm for 32x32 inputs.

Paper: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (arXiv:1409.1556). The four depths are the paper's configurations A, B, D and E (Table 1), written
once in LAYERS below; BatchNorm after every convolution (Ioffe & Szegedy 2015), as torchvision's vgg*_bn.

Adapted for CIFAR (`config="cifar"`, the default):
- The convolutional part is the paper's unchanged: 3x3 convolutions, five 2x2 max-pools. On 32x32 inputs the
  stages see 32, 16, 8, 4 and 2 pixels and the last pool leaves a 1x1 map of 512 features.
- The head is a single Linear(512, classes). The paper's 4096-4096 MLP combines a 7x7 grid of 512 features
  (25,088 inputs); on a 1x1 map there is no spatial layout left to combine, and a 512-4096-4096 MLP would add
  ~19M parameters (as many as the 9-20M of the convolutions) that a 50k-image dataset does not need.
  The adaptive average pool before it is a no-op at 32x32 and lets larger inputs through.
- The convolutions have no bias: BatchNorm's shift replaces it (its gradient would be zero in train mode).
- No dropout by default (option `dropout`, before the Linear). Above 0 it draws its masks from `apply`'s key
  (nets/rng.py), or without a key from torch's global RNG, which makes the train-mode forward a function of
  more than (params, state, x).

`config="imagenet"` is torchvision's vgg11_bn..vgg19_bn exactly (adaptive 7x7 average pool, 4096-4096
classifier with dropout 0.5, convolutions with bias); the tests check it against torchvision. Module names equal
torchvision's (features.N, classifier.N), so torchvision state_dicts load without renaming.

Parameters (config "cifar"):  10 classes    100 classes
    vgg11                      9,228,362     9,274,532
    vgg13                      9,413,066     9,459,236
    vgg16                     14,724,042    14,770,212
    vgg19                     20,035,018    20,081,188
config "imagenet", 1000 classes: 132,868,840 / 133,053,736 / 138,365,992 / 143,678,248 (torchvision's vgg*_bn).
"""

from __future__ import annotations

from typing import Annotated

from torch import nn

from nets import blocks
from nets.core import Net
from nets.options import DropRate, OneOf
from nets.registry import register

# Output channels of each 3x3 convolution, "M" a 2x2 stride-2 max-pool: the paper's Table 1, columns A, B, D, E.
LAYERS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
CONFIGS = ("cifar", "imagenet")
DROPOUT = {"cifar": 0.0, "imagenet": 0.5}  # default of the `dropout` option; 0.5 is the paper's and torchvision's
IMAGENET_WIDTH, IMAGENET_GRID = 4096, 7  # the paper's hidden FC width, and the 7x7 map it flattens


class VGG(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, depth: int, num_classes: int, config: str, dropout: float):
        super().__init__()
        layers, cin = [], 3
        for v in LAYERS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                # torchvision keeps the (redundant) conv bias in front of BatchNorm; only its config has it.
                conv = nn.Conv2d(cin, v, 3, padding=1, bias=config == "imagenet")
                layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        if config == "cifar":
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(blocks.Dropout(dropout), nn.Linear(cin, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(IMAGENET_GRID)
            self.classifier = nn.Sequential(
                nn.Linear(cin * IMAGENET_GRID**2, IMAGENET_WIDTH),
                nn.ReLU(inplace=True),
                blocks.Dropout(dropout),
                nn.Linear(IMAGENET_WIDTH, IMAGENET_WIDTH),
                nn.ReLU(inplace=True),
                blocks.Dropout(dropout),
                nn.Linear(IMAGENET_WIDTH, num_classes),
            )

    def forward(self, x):  # x: (B, 3, H, W)
        x = self.avgpool(self.features(x))  # (B, 512, 1, 1) for cifar, (B, 512, 7, 7) for imagenet
        return self.classifier(x.flatten(1))  # (B, num_classes)


def vgg(depth: int):
    def build(num_classes: int = 10, config: Annotated[str, OneOf(*CONFIGS)] = "cifar",
              dropout: DropRate | None = None) -> Net:
        """config: "cifar" or "imagenet"; dropout: None takes the config's (cifar 0, imagenet 0.5)."""
        dropout = DROPOUT[config] if dropout is None else dropout
        return Net(f"vgg{depth}", lambda: VGG(depth, num_classes, config, dropout), num_classes)

    return build


for _depth in LAYERS:
    register(f"vgg{_depth}")(vgg(_depth))
