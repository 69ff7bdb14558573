"""The functional contract every net follows.

A `Net` wraps an `nn.Module` skeleton built on the meta device: it holds no numbers, only the architecture.
The numbers live in two pytrees owned by the caller:

    params: {state_dict key: tensor}   # trainable tensors, flat names equal to the module's state_dict keys
    state:  {state_dict key: tensor}   # BatchNorm running statistics (empty for nets without BatchNorm)

and `apply(params, state, x, train, key=None) -> (logits, new_state)` runs the skeleton through
`torch.func.functional_call`. `key`, an int64 scalar tensor (`nets.step_key` makes one per step), is the train
mode's randomness: dropout and stochastic depth draw from it (nets/rng.py), so the forward is a pure function of
its inputs, each member of a torch.func.vmap over keys draws its own masks, and a compiled step takes the key as
an input. Without a key they draw from torch's global generator; eval mode draws nothing.

The pytrees are flat dicts rather than nested ones: functional_call takes them as they are, and a plain PyTorch
user loads them with `module.load_state_dict({**params, **state})`.

Initialisation is explicit and seeded: `init(generator, device)` walks the skeleton and fills each tensor with
the rule of the layer that owns it (the rules are below, each with its source). A family that needs another
rule for some tensors gives its top module an `init_param(name, tensor, generator) -> bool` method, asked
first for every parameter by its full state_dict name.
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from nets import rng

Tree = dict[str, torch.Tensor]

# The spatial size every net in the zoo is built for (CIFAR images are 32x32 RGB).
IMAGE_SHAPE = (3, 32, 32)


class NetError(ValueError):
    """A user asked for a net or an option that does not exist."""


def _fill(module: nn.Module, name: str, t: torch.Tensor, generator: torch.Generator) -> None:
    """Default rules, one per layer type; they reproduce PyTorch's and torchvision's published choices."""
    if isinstance(module, nn.Conv2d) and name == "weight":
        # He et al. 2015, fan_out mode: torchvision's ResNet/VGG/MobileNet choice for conv layers.
        nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=generator)
    elif isinstance(module, nn.Linear) and name == "weight":
        # PyTorch's own Linear default (kaiming_uniform with a=sqrt(5)) is uniform(+-1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(t.shape[1])
        nn.init.uniform_(t, -bound, bound, generator=generator)
    elif isinstance(module, nn.Linear) and name == "bias":
        bound = 1.0 / math.sqrt(module.in_features)
        nn.init.uniform_(t, -bound, bound, generator=generator)
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        # Normalisation layers start as the identity: scale 1, shift 0.
        nn.init.ones_(t) if name == "weight" else nn.init.zeros_(t)
    elif name == "bias":
        nn.init.zeros_(t)
    else:
        raise NotImplementedError(
            f"no init rule for {type(module).__name__}.{name}: give the module an init_param method"
        )


def _fill_buffer(module: nn.Module, name: str, t: torch.Tensor) -> None:
    if name == "running_var":
        nn.init.ones_(t)
    elif name in ("running_mean", "num_batches_tracked"):
        t.zero_()
    else:
        raise NotImplementedError(f"no init rule for buffer {type(module).__name__}.{name}")


def swap_layers(module: nn.Module, replace: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Every layer of `module` (the root excepted) for which `replace(layer)` gives a module is swapped for it,
    in place, under the same name; layers it gives None for stay. Returns `module`."""
    for name, layer in list(module.named_modules()):
        new = replace(layer) if name else None
        if new is not None:
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent), child, new)
    return module


class Net:
    """A stateless architecture: `init` makes the pytrees, `apply` is the pure forward."""

    def __init__(self, name: str, make_module: Callable[[], nn.Module], num_classes: int):
        self.name = name
        self.num_classes = num_classes
        with torch.device("meta"):
            skeleton = make_module()
        # Two skeletons, one per mode, so that `apply` never flips a flag on a shared module.
        self._skeleton = {True: skeleton.train(), False: copy.deepcopy(skeleton).eval()}
        # The key of the apply call in progress, read by the random layers of both skeletons (nets/rng.py).
        self._keys = rng.KeyHolder()
        for module in self._skeleton.values():
            rng.bind(module, self._keys)

    @property
    def skeletons(self) -> Mapping[bool, nn.Module]:
        """Both skeletons by mode, read-only: {True: the train-mode module, False: the eval-mode one}. A change
        to the architecture's layers (train/sync_bn.py's) must reach both."""
        return types.MappingProxyType(self._skeleton)

    @property
    def module(self) -> nn.Module:
        """The architecture (meta tensors): a plain nn.Module for users who want one."""
        return self._skeleton[True]

    def init(self, generator: torch.Generator, device: torch.device | str = "cpu") -> tuple[Tree, Tree]:
        """Fresh (params, state) on `device`, drawn from `generator` (a CPU generator: same numbers anywhere)."""
        params, state = {}, {}
        special = getattr(self.module, "init_param", lambda name, t, g: False)
        for prefix, m in self.module.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, p in m.named_parameters(recurse=False):
                t = torch.empty(p.shape, dtype=p.dtype)
                if not special(dot + name, t, generator):
                    _fill(m, name, t, generator)
                params[dot + name] = t.to(device)
            for name, b in m.named_buffers(recurse=False):
                t = torch.empty(b.shape, dtype=b.dtype)
                _fill_buffer(m, name, t)
                state[dot + name] = t.to(device)
        return params, state

    def apply(self, params: Tree, state: Tree, x: torch.Tensor, train: bool,
              key: torch.Tensor | None = None) -> tuple[torch.Tensor, Tree]:
        """logits for x (B, 3, H, W); in train mode also the updated BatchNorm statistics.

        BatchNorm updates its running statistics in place, so train mode hands it copies: the caller's
        `state` is never changed. Eval mode reads `state` and returns it as it is, and ignores `key`.
        `key` (int64, shape ()): the draws of dropout and stochastic depth in train mode, a pure function of it;
        None draws them from torch's global generator.
        """
        if train:
            state = {k: v.clone() for k, v in state.items()}
        self._keys.hold(rng.check_key(key) if train else None)
        try:
            logits = functional_call(self._skeleton[train], (params, state), (x,), strict=True)
        finally:
            self._keys.hold(None)  # a layer used outside this call draws from the global generator again
        return logits, state

    def to_module(self, params: Tree, state: Tree, device: torch.device | str | None = None) -> nn.Module:
        """A plain nn.Module holding copies of (params, state), for users who want one (eval mode)."""
        module = copy.deepcopy(self._skeleton[False]).to_empty(device=device or "cpu")
        module.load_state_dict({**params, **state})
        return module

    def param_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def flops(self, batch: int = 1) -> int:
        """Forward FLOPs (a multiply-add counts 2) for `batch` CIFAR images, counted on meta tensors."""
        x = torch.empty(batch, *IMAGE_SHAPE, device="meta")
        with FlopCounterMode(display=False) as counter:
            self._skeleton[False](x)
        return counter.get_total_flops()
