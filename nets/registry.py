"""Name -> builder. Each family file registers its variants; `build` makes a `Net`.

A builder declares its keyword options on its signature (nets/options.py); `build` checks every value against
those declarations before the builder runs, and `parse_options` reads them from command-line text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from nets.core import Net, NetError
from nets.options import Option, declared_options

_BUILDERS: dict[str, Callable[..., Net]] = {}


def register(name: str) -> Callable:
    def add(builder: Callable[..., Net]) -> Callable[..., Net]:
        if name in _BUILDERS:
            raise RuntimeError(f"net {name!r} registered twice")
        _declarations(builder)  # an option without a valid declaration fails at import, not at build
        _BUILDERS[name] = builder
        return builder

    return add


def names() -> list[str]:
    # Natural order: resnet18 before resnet101.
    return sorted(_BUILDERS, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def declarations(name: str) -> dict[str, Option]:
    """The declaration of each keyword option of a net (num_classes aside): type, constraints, default."""
    return dict(_declarations(_lookup(name)))


def options(name: str) -> dict[str, object]:
    """The keyword options a net accepts, with their defaults (num_classes aside)."""
    return {k: option.default for k, option in declarations(name).items()}


def parse_options(name: str, texts: dict[str, str]) -> dict[str, object]:
    """Command-line text of the net's options ({"width": "64", "dropout": "none"}) as typed, checked values;
    NetError names a bad one. Options the net does not declare come back as they are, for `build` to refuse."""
    declared = declarations(name)
    return {k: declared[k].parse(name, v) if k in declared else v for k, v in texts.items()}


def _lookup(name: str) -> Callable[..., Net]:
    if name not in _BUILDERS:
        raise NetError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    return _BUILDERS[name]


@functools.cache
def _declarations(builder: Callable[..., Net]) -> dict[str, Option]:
    return declared_options(builder)


def build(name: str, num_classes: int = 10, **opts) -> Net:
    """The net `name` for `num_classes` classes; each option is checked against its declaration first."""
    builder = _lookup(name)
    declared = declarations(name)
    unknown = set(opts) - set(declared)
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in options(name).items()) or "none"
        raise NetError(f"{name} has no option {', '.join(sorted(unknown))}; its options: {valid}")
    return builder(num_classes=num_classes, **{k: declared[k].check(name, v) for k, v in opts.items()})
