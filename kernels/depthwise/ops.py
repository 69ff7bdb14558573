"""The launchers as torch.library triton_ops, for torch.compile and torch.func: custom ops are traceable and
unwrap functorch's tensors, and their launches go through wrap_triton, so Inductor sees the kernels. Their
outputs are fresh tensors, as custom ops require. In plain eager mode kernels.depthwise.autograd calls the
launchers directly instead (a custom op's dispatch costs tens of microseconds per call).

Each op has a vmap rule (torch.library.register_vmap): under torch.func.vmap over K members the member dim folds
into the channel dim and the kernels run once over K*C channels (the rules at the end of this file). The
autograd.Function of kernels.depthwise.autograd generates its own vmap rule from them, so vmap(grad(f)) and
grad(vmap(f)) both run the folded kernels.

The launchers are reached through their module, `launchers.launch_*`, so that a test can watch them.
"""

from typing import Optional

import torch
from torch.library import triton_op

from kernels.depthwise import launchers
from kernels.depthwise.contract import MAX_INDEX
from kernels.depthwise.helpers import is_channels_last


@triton_op("cifar_zoo::dwconv_fwd", mutates_args={})
def dwconv_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],  # noqa: UP045 (torch.library's schema inference reads Optional)
    shift: Optional[torch.Tensor],  # noqa: UP045
    stride: int,
    relu: bool,
) -> torch.Tensor:
    """y = relu(dwconv(x) * scale + shift): (N, C, OH, OW) in x's dtype and memory format."""
    return launchers.launch_fwd(x, weight, scale, shift, stride, relu, wrap=True)


@triton_op("cifar_zoo::dwconv_bwd_input", mutates_args={})
def dwconv_bwd_input(
    grad_z: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, stride: int
) -> torch.Tensor:
    """Gradient w.r.t. x, given grad_z w.r.t. the conv output; x supplies shape, dtype and layout."""
    return launchers.launch_bwd_input(grad_z, weight, x, stride, wrap=True)


@triton_op("cifar_zoo::dwconv_bwd_weight", mutates_args={})
def dwconv_bwd_weight(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],  # noqa: UP045
    shift: Optional[torch.Tensor],  # noqa: UP045
    stride: int,
    relu: bool,
    store_grad_z: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_weight, grad_scale, grad_shift, grad_z).

    grad_weight has weight's shape and dtype; grad_scale / grad_shift are (C,) in scale's / shift's dtype,
    or empty when scale / shift is None; grad_z (the gradient w.r.t. the conv output, x's dtype and layout)
    is empty unless store_grad_z.
    """
    return launchers.launch_bwd_weight(grad_y, x, weight, scale, shift, stride, relu, store_grad_z, wrap=True)


@triton_op("cifar_zoo::dwconv_bwd_fused", mutates_args={})
def dwconv_bwd_fused(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: Optional[torch.Tensor],  # noqa: UP045
    schedule: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight, grad_shift) in one pass: stride 1, channels_last, 3x3, no relu or scale; grad_shift
    is empty when shift is None; schedule "tiles" or "window"."""
    return launchers.launch_bwd_fused(grad_y, x, weight, shift, wrap=True, schedule=schedule)


# ---------------------------------------------------------------------------------------------------------
# vmap rules. Under torch.func.vmap over K members (stacked parameters, a batch per member) the member dim folds
# into the channel dim: a depthwise convolution never mixes channels, so K members of C channels are one
# convolution of K*C channels, and each op launches its kernels once. Member k owns channels k*C .. k*C + C-1 of
# every folded tensor; an argument without the member dim (shared by every member) is expanded first. A folded
# output comes back as a view with the member dim where the fold left it (dim 1 of (N, K, C, H, W), dim 0 of
# (K, C, ...)); vmap takes any position.


def _member(t: torch.Tensor, bdim: int | None) -> torch.Tensor:
    """Member 0's view of t: the shape and layout every member shares."""
    return t if bdim is None else t.select(bdim, 0)


def _fold_planes(t: torch.Tensor, bdim: int | None, K: int, channels_last: bool) -> torch.Tensor:
    """Per-member (N, C, H, W) with the member dim at bdim -> (N, K*C, H, W) dense in the layout: a view where
    the members already sit side by side along the channels (an output unfolded here), else one copy."""
    t = t.movedim(bdim, 1) if bdim is not None else t.unsqueeze(1).expand(-1, K, -1, -1, -1)
    N, _, C, H, W = t.shape  # (N, K, C, H, W)
    if channels_last:  # (N, H, W, K*C) in memory, seen as (N, K*C, H, W)
        folded = t.permute(0, 3, 4, 1, 2).reshape(N, H, W, K * C).permute(0, 3, 1, 2)
    else:
        folded = t.reshape(N, K * C, H, W)
    if folded.numel() > MAX_INDEX:
        raise ValueError(f"{K} members fold into a tensor of {folded.numel()} elements; the kernels index in "
                         f"int32 (at most {MAX_INDEX}): fewer members or a smaller batch")
    return folded


def _fold_rows(t: torch.Tensor | None, bdim: int | None, K: int) -> torch.Tensor | None:
    """Per-member weight (C, 1, k, k) or per-channel vector (C,) -> (K*C, ...), contiguous (the kernels read
    scale and shift with stride 1); None stays None."""
    if t is None:
        return None
    t = t.movedim(bdim, 0) if bdim is not None else t.expand(K, *t.shape)
    return t.flatten(0, 1).contiguous()


def _unfold_planes(t: torch.Tensor, K: int) -> tuple[torch.Tensor, int]:
    """(N, K*C, H, W) -> (N, K, C, H, W), a view, and its member dim."""
    return t.unflatten(1, (K, -1)), 1


def _unfold_rows(t: torch.Tensor, present: bool, K: int) -> tuple[torch.Tensor, int | None]:
    """(K*C, ...) -> (K, C, ...), a view, and its member dim; an empty placeholder (present False: no scale or
    shift, no stored grad_z) stays as it is, shared by every member."""
    return (t.unflatten(0, (K, -1)), 0) if present else (t, None)


def _split(outs):
    """((tensor, member dim), ...) -> ((tensors), (member dims)), the pair a vmap rule returns."""
    return tuple(t for t, _ in outs), tuple(d for _, d in outs)


@dwconv_fwd.register_vmap
def _dwconv_fwd_vmap(info, in_dims, x, weight, scale, shift, stride, relu):
    K, (xd, wd, scd, shd) = info.batch_size, in_dims[:4]
    cl = is_channels_last(_member(x, xd))
    y = dwconv_fwd(_fold_planes(x, xd, K, cl), _fold_rows(weight, wd, K), _fold_rows(scale, scd, K),
                   _fold_rows(shift, shd, K), stride, relu)
    return _unfold_planes(y, K)


@dwconv_bwd_input.register_vmap
def _dwconv_bwd_input_vmap(info, in_dims, grad_z, weight, x, stride):
    K, (gzd, wd, xd) = info.batch_size, in_dims[:3]
    cl = is_channels_last(_member(x, xd))
    grad_x = dwconv_bwd_input(_fold_planes(grad_z, gzd, K, cl), _fold_rows(weight, wd, K),
                              _fold_planes(x, xd, K, cl), stride)
    return _unfold_planes(grad_x, K)


@dwconv_bwd_weight.register_vmap
def _dwconv_bwd_weight_vmap(info, in_dims, grad_y, x, weight, scale, shift, stride, relu, store_grad_z):
    K, (gyd, xd, wd, scd, shd) = info.batch_size, in_dims[:5]
    cl = is_channels_last(_member(x, xd))
    grad_w, grad_scale, grad_shift, grad_z = dwconv_bwd_weight(
        _fold_planes(grad_y, gyd, K, cl), _fold_planes(x, xd, K, cl), _fold_rows(weight, wd, K),
        _fold_rows(scale, scd, K), _fold_rows(shift, shd, K), stride, relu, store_grad_z)
    return _split((_unfold_rows(grad_w, True, K), _unfold_rows(grad_scale, scale is not None, K),
                   _unfold_rows(grad_shift, shift is not None, K),
                   _unfold_planes(grad_z, K) if store_grad_z else (grad_z, None)))


@dwconv_bwd_fused.register_vmap
def _dwconv_bwd_fused_vmap(info, in_dims, grad_y, x, weight, shift, schedule):
    K, (gyd, xd, wd, shd) = info.batch_size, in_dims[:4]
    grad_x, grad_w, grad_shift = dwconv_bwd_fused(  # the one pass takes channels_last x only
        _fold_planes(grad_y, gyd, K, True), _fold_planes(x, xd, K, True), _fold_rows(weight, wd, K),
        _fold_rows(shift, shd, K), schedule)
    return _split((_unfold_planes(grad_x, K), _unfold_rows(grad_w, True, K),
                   _unfold_rows(grad_shift, shift is not None, K)))
