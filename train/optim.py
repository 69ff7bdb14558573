"""The optimizers as pure maps over parameter pytrees (foreach ops, no in-place writes).

SGD matches torch.optim.SGD (dampening 0) step for step:
    g = grad + wd * p                  # L2 decay folded into the gradient
    buf = momentum * buf + g           # buf starts at 0, so the first step gives buf = g, as torch's does
    d = g + momentum * buf if nesterov else buf
    p = p - lr * d

AdamW (Loshchilov & Hutter 2019) matches torch.optim.AdamW (amsgrad off) step for step, t = 1, 2, ...:
    p = p * (1 - lr * wd)              # decoupled decay, not part of the gradient
    m = b1 * m + (1 - b1) * grad,   v = b2 * v + (1 - b2) * grad^2
    p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The optimizer state is one flat tree: SGD's momentum buffers under the params' own names; AdamW's moments
under "exp_avg.<name>" and "exp_avg_sq.<name>" (torch's names) and the step count t under "step".

Both are elementwise, so they update the stacked trees of a members run (train/members.py) as they are; only
the rules that read a tensor's shape (which tensors decay) and AdamW's per-member step count, (K,), see the
leading member dimension (member_dims=1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tree = dict[str, torch.Tensor]
OPTIMIZERS = ("sgd", "adamw")
ADAM_EPS = 1e-8  # torch.optim.AdamW's default


def decay_rule(decay_all: bool, member_dims: int = 0) -> Callable[[str, torch.Tensor], bool]:
    """Which tensors get weight decay: all (torch.optim.SGD's default) or weights with ndim >= 2 only
    (biases and normalisation scales excluded: decaying them only fights the normalisation); member_dims
    leading dimensions stack members and are not the weight's own."""
    return (lambda name, t: True) if decay_all else (lambda name, t: t.ndim - member_dims >= 2)


def _scaled(xs: list[torch.Tensor], factor: torch.Tensor, divide: bool = False) -> list[torch.Tensor]:
    """xs * factor (or xs / factor): one 0-dim factor for all (foreach), or a (K,) factor, one per member, over
    each stacked tensor's leading dimension."""
    if factor.ndim == 0:
        return torch._foreach_div(xs, factor) if divide else torch._foreach_mul(xs, factor)
    shaped = [factor.reshape(-1, *(1,) * (x.ndim - 1)) for x in xs]
    return [x / f if divide else x * f for x, f in zip(xs, shaped)]


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


def adamw(
    params: Tree,
    grads: Tree,
    opt_state: Tree,
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    decays: Callable[[str, torch.Tensor], bool],
) -> tuple[Tree, Tree]:
    """One AdamW step (the module doc); returns (new params, new optimizer state)."""
    keys = list(params)
    p = [params[k] for k in keys]
    g = [grads[k] for k in keys]
    m = [opt_state[f"exp_avg.{k}"] for k in keys]
    v = [opt_state[f"exp_avg_sq.{k}"] for k in keys]
    t = opt_state["step"] + 1
    if weight_decay:  # lr is a tensor, so the decayed tensors are shrunk as one list by one tensor factor
        decayed = [i for i, k in enumerate(keys) if decays(k, params[k])]
        for i, x in zip(decayed, torch._foreach_mul([p[i] for i in decayed], 1 - lr * weight_decay)):
            p[i] = x
    m = torch._foreach_add(torch._foreach_mul(m, beta1), g, alpha=1 - beta1)
    v = torch._foreach_add(torch._foreach_mul(v, beta2), torch._foreach_mul(g, g), alpha=1 - beta2)
    step_size = lr / (1 - beta1**t)  # t: 0-dim, or one per member (all equal: members step together)
    denom = torch._foreach_add(_scaled(torch._foreach_sqrt(v), torch.sqrt(1 - beta2**t), divide=True), ADAM_EPS)
    p = torch._foreach_sub(p, _scaled(torch._foreach_div(m, denom), step_size))
    state = {**{f"exp_avg.{k}": x for k, x in zip(keys, m)}, **{f"exp_avg_sq.{k}": x for k, x in zip(keys, v)},
             "step": t}
    return dict(zip(keys, p)), state


def init_state(optimizer: str, params: Tree, members: int = 1) -> Tree:
    """The optimizer state before the first step, on the params' devices (and in their layouts). For a members
    run's stacked params (members > 1) AdamW's step count is one per member, (members,), so that every tensor of
    the state stacks the members along its first dimension: an unrolled step (train.step.member_by_member) takes
    member k's state as views at index k and counts that member's steps in its own element."""
    if optimizer == "sgd":
        return zeros_like_tree(params)
    first = next(iter(params.values()))
    moments = {f"{moment}.{k}": torch.zeros_like(x) for moment in ("exp_avg", "exp_avg_sq") for k, x in params.items()}
    count = (members,) if members > 1 else ()
    return {**moments, "step": torch.zeros(count, dtype=first.dtype, device=first.device)}  # a float: t enters powers


def make_update(cfg, member_dims: int = 0) -> Callable[[Tree, Tree, Tree, torch.Tensor], tuple[Tree, Tree]]:
    """(params, grads, optimizer state, lr) -> (params, optimizer state) for the configured optimizer; AdamW's
    beta1 is `momentum` (0.9 by default, as torch's), its beta2 `beta2`. member_dims=1: the trees are a members
    run's, stacked."""
    decays = decay_rule(cfg.decay_all, member_dims)
    if cfg.optimizer == "sgd":
        return lambda p, g, s, lr: sgd(p, g, s, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, decays)
    return lambda p, g, s, lr: adamw(p, g, s, lr, cfg.momentum, cfg.beta2, cfg.weight_decay, decays)
