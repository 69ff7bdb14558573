"""Architectures as parameter pytrees plus pure forward functions (see nets/core.py for the contract).

    net = nets.build("resnet18", num_classes=10)
    params, state = net.init(torch.Generator().manual_seed(0))
    logits, new_state = net.apply(params, state, x, train=True)
"""

from nets import resnet  # noqa: F401  (registers its variants)
from nets.core import IMAGE_SHAPE, Net, NetError
from nets.registry import build, names, options

__all__ = ["IMAGE_SHAPE", "Net", "NetError", "build", "names", "options"]
