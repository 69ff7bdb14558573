"""AlexNet for 32x32 inputs: five convolutions, three fully connected layers.

Paper: A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012. Channel widths follow torchvision's single-tower variant (64, 192, 384, 256, 256; from
Krizhevsky's "One weird trick", arXiv:1404.5997) rather than the paper's two-GPU split (96, 256, 384, 384, 256).

Adapted for CIFAR (`config="cifar"`, the default), one row of the CONFIGS table below:
- conv1 is 3x3 stride 1, not 11x11 stride 4: a stride-4 first layer would throw away 15/16 of a 32x32 image's
  positions before any feature is computed. conv2..conv5 keep the paper's 5x5, 3x3, 3x3, 3x3.
- The paper's overlapping max-pools (3x3, stride 2, sec. 3.4) are kept after conv1, conv2 and conv5, with
  padding 1 so that the maps halve exactly: 32 -> 16 -> 8 -> 4. The classifier sees 256 x 4 x 4 = 4096 features.
- The fully connected layers are 1024 wide instead of 4096: the paper's 4096 serve 1000 classes from
  9216 features and 1.2M images; at 4096 wide they would hold ~34M of the net's parameters for 10 classes and
  50k images. 1024 keeps the three-FC design at a CIFAR size.
- BatchNorm after every convolution (option `batchnorm`, on by default for CIFAR): the zoo trains every net
  with one SGD recipe (lr 0.1) tuned for BatchNorm nets. The paper's local response normalisation is dropped
  (torchvision drops it too). With BatchNorm the convolutions have no bias (BN's shift replaces it).
- No dropout by default (option `dropout`, the paper's is 0.5). Above 0 it draws its masks from `apply`'s key
  (nets/rng.py), or without a key from torch's global RNG, which makes the train-mode forward a function of
  more than (params, state, x).

`config="imagenet"` is torchvision's `alexnet` exactly (224x224 inputs, adaptive 6x6 average pool, 4096-wide
classifier, dropout 0.5, no BatchNorm); the tests check it against torchvision. Module names equal
torchvision's (features.N, classifier.N), so torchvision state_dicts load without renaming.

Parameters (config "cifar"):  10 classes    100 classes
    alexnet                    7,704,522     7,796,772
config "imagenet", 1000 classes: 61,100,840 (torchvision's alexnet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import nn

from nets import blocks
from nets.core import Net
from nets.options import DropRate, OneOf
from nets.registry import register


@dataclass(frozen=True)
class Config:
    convs: tuple[tuple[int, int, int, int, bool], ...]  # (out channels, kernel, stride, padding, max-pool after)
    pool: tuple[int, int, int]  # the max-pools' (kernel, stride, padding)
    pooled: int  # side of the adaptive average pool's output grid, which the classifier flattens
    fc_width: int  # width of the two hidden fully connected layers
    batchnorm: bool  # default of the `batchnorm` option
    dropout: float  # default of the `dropout` option


CONFIGS = {
    "cifar": Config(
        convs=(
            (64, 3, 1, 1, True),  # 32x32, pooled to 16x16
            (192, 5, 1, 2, True),  # 16x16, pooled to 8x8
            (384, 3, 1, 1, False),  # 8x8
            (256, 3, 1, 1, False),  # 8x8
            (256, 3, 1, 1, True),  # 8x8, pooled to 4x4
        ),
        pool=(3, 2, 1), pooled=4, fc_width=1024, batchnorm=True, dropout=0.0,
    ),
    "imagenet": Config(  # torchvision's models.alexnet
        convs=(
            (64, 11, 4, 2, True),  # 224 -> 55x55, pooled to 27x27
            (192, 5, 1, 2, True),  # 27x27, pooled to 13x13
            (384, 3, 1, 1, False),  # 13x13
            (256, 3, 1, 1, False),  # 13x13
            (256, 3, 1, 1, True),  # 13x13, pooled to 6x6
        ),
        pool=(3, 2, 0), pooled=6, fc_width=4096, batchnorm=False, dropout=0.5,
    ),
}


class AlexNet(nn.Module):
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, cfg: Config, num_classes: int, batchnorm: bool, dropout: float):
        super().__init__()
        layers, cin = [], 3
        for cout, k, stride, padding, pool_after in cfg.convs:
            layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=not batchnorm))
            layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)] if batchnorm else [nn.ReLU(inplace=True)]
            if pool_after:
                layers.append(nn.MaxPool2d(cfg.pool[0], stride=cfg.pool[1], padding=cfg.pool[2]))
            cin = cout
        self.features = nn.Sequential(*layers)
        # A no-op on the input size each config is built for; it lets other sizes through (torchvision's role).
        self.avgpool = nn.AdaptiveAvgPool2d(cfg.pooled)
        width = cfg.fc_width
        self.classifier = nn.Sequential(  # torchvision's order: dropout before each hidden layer
            blocks.Dropout(dropout),
            nn.Linear(cin * cfg.pooled**2, width),
            nn.ReLU(inplace=True),
            blocks.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, num_classes),
        )

    def forward(self, x):  # x: (B, 3, H, W)
        x = self.avgpool(self.features(x))  # (B, 256, pooled, pooled)
        return self.classifier(x.flatten(1))  # (B, num_classes)


@register("alexnet")
def alexnet(num_classes: int = 10, config: Annotated[str, OneOf(*CONFIGS)] = "cifar", batchnorm: bool | None = None,
            dropout: DropRate | None = None) -> Net:
    """config: "cifar" or "imagenet"; batchnorm, dropout: None takes the config's (cifar: on, 0; imagenet: off, 0.5)."""
    cfg = CONFIGS[config]
    batchnorm = cfg.batchnorm if batchnorm is None else batchnorm
    dropout = cfg.dropout if dropout is None else dropout
    return Net("alexnet", lambda: AlexNet(cfg, num_classes, batchnorm, dropout), num_classes)
