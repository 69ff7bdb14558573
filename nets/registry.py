"""Name -> builder. Each family file registers its variants; `build` makes a `Net`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from nets.core import Net, NetError

_BUILDERS: dict[str, Callable[..., Net]] = {}


def register(name: str) -> Callable:
    def add(builder: Callable[..., Net]) -> Callable[..., Net]:
        if name in _BUILDERS:
            raise RuntimeError(f"net {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return add


def names() -> list[str]:
    # Natural order: resnet18 before resnet101.
    return sorted(_BUILDERS, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def options(name: str) -> dict[str, object]:
    """The keyword options a net accepts, with their defaults (num_classes aside)."""
    sig = inspect.signature(_lookup(name))
    return {k: p.default for k, p in sig.parameters.items() if k != "num_classes"}


def _lookup(name: str) -> Callable[..., Net]:
    if name not in _BUILDERS:
        raise NetError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    return _BUILDERS[name]


def build(name: str, num_classes: int = 10, **opts) -> Net:
    builder = _lookup(name)
    unknown = set(opts) - set(options(name))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in options(name).items()) or "none"
        raise NetError(f"{name} has no option {', '.join(sorted(unknown))}; its options: {valid}")
    return builder(num_classes=num_classes, **opts)
