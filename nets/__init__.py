"""Architectures as parameter pytrees plus pure forward functions (see nets/core.py for the contract).

    net = nets.build("resnet18", num_classes=10)
    params, state = net.init(torch.Generator().manual_seed(0))
    logits, new_state = net.apply(params, state, x, train=True)
    logits, new_state = net.apply(params, state, x, train=True, key=nets.step_key(seed, step))  # explicit draws

Every module of this package other than the infrastructure below is a family file that registers its
variants when imported; importing `nets` imports them all.
"""

import importlib
import pkgutil

from nets.core import IMAGE_SHAPE, Net, NetError
from nets.registry import build, declarations, names, options, parse_options
from nets.rng import step_key

_INFRASTRUCTURE = {"core", "options", "registry", "blocks", "rng", "fold", "__main__"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"nets.{_module.name}")

__all__ = ["IMAGE_SHAPE", "Net", "NetError", "build", "declarations", "names", "options", "parse_options", "step_key"]
