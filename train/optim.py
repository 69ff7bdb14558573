"""SGD with momentum and weight decay as pure maps over parameter pytrees (foreach ops, no in-place writes).

Matches torch.optim.SGD (dampening 0) step for step:
    g = grad + wd * p                  # L2 decay folded into the gradient
    buf = momentum * buf + g           # buf starts at 0, so the first step gives buf = g, as torch's does
    d = g + momentum * buf if nesterov else buf
    p = p - lr * d
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tree = dict[str, torch.Tensor]


def decay_rule(decay_all: bool) -> Callable[[str, torch.Tensor], bool]:
    """Which tensors get weight decay: all (torch.optim.SGD's default) or weights with ndim >= 2 only
    (biases and normalisation scales excluded: decaying them only fights the normalisation)."""
    return (lambda name, t: True) if decay_all else (lambda name, t: t.ndim >= 2)


def zeros_like_tree(tree: Tree) -> Tree:
    return {k: torch.zeros_like(v) for k, v in tree.items()}


def sgd(
    params: Tree,
    grads: Tree,
    momentum_buf: Tree,
    lr: torch.Tensor,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    decays: Callable[[str, torch.Tensor], bool],
) -> tuple[Tree, Tree]:
    """One SGD step; returns (new params, new momentum buffers). `lr` is a 0-dim tensor so that a changing
    learning rate never recompiles a compiled step."""
    keys = list(params)
    p = [params[k] for k in keys]
    g = [grads[k] for k in keys]
    b = [momentum_buf[k] for k in keys]
    if weight_decay:
        wd = [weight_decay if decays(k, params[k]) else 0.0 for k in keys]
        g = torch._foreach_add(g, torch._foreach_mul(p, wd))
    b = torch._foreach_add(torch._foreach_mul(b, momentum), g)
    d = torch._foreach_add(g, b, alpha=momentum) if nesterov else b
    p = torch._foreach_sub(p, torch._foreach_mul(d, lr))
    return dict(zip(keys, p)), dict(zip(keys, b))
