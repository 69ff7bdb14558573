"""depthwise_conv2d, the one entry point: checks the arguments, then runs the Triton kernels (through the autograd
binding of kernels.depthwise.autograd) or the plain PyTorch reference, as impl asks; impl="auto" follows
rules.triton_preferred (`python -m bench depthwise`)."""

import torch

from kernels.depthwise.autograd import DepthwiseConv2dFn
from kernels.depthwise.contract import (
    MAX_INDEX,
    TRITON_DTYPES,
    TRITON_KERNEL_SIZES,
    check_args,
    check_triton_args,
    reference_depthwise_conv2d,
)
from kernels.depthwise.helpers import is_channels_last
from kernels.depthwise.rules import triton_preferred


def _triton_supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.is_cuda and x.dtype in TRITON_DTYPES and weight.shape[-1] in TRITON_KERNEL_SIZES
            and x.numel() <= MAX_INDEX)  # fmt: skip


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 1,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    relu: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """relu(conv2d(x, weight, stride, padding=k//2, groups=C) * scale[c] + shift[c]), differentiable.

    x: (N, C, H, W), NCHW or channels_last (y keeps x's memory format), float32 / bfloat16 / float16 for the
    Triton path. weight: (C, 1, k, k), k odd (3 or 5 for Triton). stride: 1 or 2. scale, shift: (C,) or None.
    impl: "triton" (the kernels; CPU tensors run in Triton's interpreter), "reference" (plain PyTorch), or
    "auto": Triton for CUDA tensors it supports where it measured faster than PyTorch (`triton_preferred`:
    NCHW, fused epilogues, and channels_last layers with small outputs or stride 2), else the reference.
    Raises ValueError on bad arguments.
    """
    check_args(x, weight, stride, scale, shift, impl)
    if impl == "auto":
        fused = scale is not None or shift is not None or relu
        use_triton = _triton_supports(x, weight) and triton_preferred(
            is_channels_last(x), x.dtype, x.shape[2], x.shape[3], stride, fused)
        impl = "triton" if use_triton else "reference"
    if impl == "reference":
        return reference_depthwise_conv2d(x, weight, stride, scale, shift, relu)
    check_triton_args(x, weight)
    return DepthwiseConv2dFn.apply(x, weight, scale, shift, stride, bool(relu))
