"""The launchers as torch.library triton_ops, for torch.compile and torch.func: custom ops are traceable and
unwrap functorch's tensors, and their launches go through wrap_triton, so Inductor sees the kernels. Their
outputs are fresh tensors, as custom ops require. In plain eager mode kernels.depthwise.autograd calls the
launchers directly instead (a custom op's dispatch costs tens of microseconds per call).

The launchers are reached through their module, `launchers.launch_*`, so that a test can watch them.
"""

from typing import Optional

import torch
from torch.library import triton_op

from kernels.depthwise import launchers


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
