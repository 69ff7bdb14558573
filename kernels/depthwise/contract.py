"""What the depthwise convolution computes and takes: the argument checks and the plain PyTorch reference.

    z = conv2d(x, weight, stride=stride, padding=k // 2, groups=C)          (N, C, OH, OW), OH = (H-1)//s + 1
    y = relu(z * scale[c] + shift[c])                                        (each step optional)

x is (N, C, H, W) in NCHW-contiguous or channels_last memory format, weight is
nn.Conv2d(C, C, k, groups=C, bias=False).weight of shape (C, 1, k, k) with k odd (the Triton path takes
k = 3 or 5), stride 1 or 2, scale and shift are optional (C,) vectors (a folded BatchNorm or a bias). y comes
back in x's dtype and x's memory format. The Triton path takes float32, bfloat16 and float16 x; weight, scale
and shift may have any float dtype (float32 master weights next to a bfloat16 x under autocast): the kernels
read them as stored and accumulate in float32, so only the output is rounded to x's dtype.
`reference_depthwise_conv2d` casts the weight to x's dtype first, as autocast would. Gradients come back in
each input's own dtype.

`reference_depthwise_conv2d` is the CPU path and the test oracle (in float64).
"""

import torch
import torch.nn.functional as F

IMPLS = ("auto", "triton", "reference")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_KERNEL_SIZES = (3, 5)
STRIDES = (1, 2)
MAX_INDEX = 2**31 - 1  # the kernels index in int32


def check_args(x, weight, stride, scale, shift, impl) -> None:
    """Raise ValueError with a readable message for anything depthwise_conv2d does not take."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    C = x.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f"weight must have shape (C, 1, k, k), got {tuple(getattr(weight, 'shape', ()))}")
    if weight.shape[0] != C:
        raise ValueError(f"weight has {weight.shape[0]} channels but x has {C} (weight must be (C, 1, k, k))")
    k = weight.shape[2]
    if weight.shape[3] != k or k % 2 == 0 or k < 3:
        raise ValueError(f"kernel must be square with an odd size >= 3, got {tuple(weight.shape[2:])}")
    if isinstance(stride, bool) or stride not in STRIDES:
        raise ValueError(f"stride must be one of {STRIDES}, got {stride!r}")
    for name, v in (("scale", scale), ("shift", shift)):
        if v is not None and (not isinstance(v, torch.Tensor) or tuple(v.shape) != (C,)):
            raise ValueError(f"{name} must be None or a ({C},) tensor, got {tuple(getattr(v, 'shape', ()))}")
    for name, t in (("weight", weight), ("scale", scale), ("shift", shift)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def check_triton_args(x: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise ValueError for what check_args accepts but the Triton path does not."""
    if x.dtype not in TRITON_DTYPES:
        raise ValueError(f"the Triton path takes x of dtype {TRITON_DTYPES}, got {x.dtype}")
    if weight.shape[-1] not in TRITON_KERNEL_SIZES:
        raise ValueError(f"the Triton path takes kernel sizes {TRITON_KERNEL_SIZES}, got {weight.shape[-1]}")
    if x.numel() > MAX_INDEX:
        raise ValueError(f"x has {x.numel()} elements; the kernels index in int32 (at most {MAX_INDEX})")
    if not (x.is_cuda or x.device.type == "cpu"):
        raise ValueError(f"the Triton path runs on CUDA (or the CPU interpreter), not {x.device}")


def output_hw(H: int, W: int, stride: int) -> tuple[int, int]:
    """'same' padding k // 2 with odd k: OH = floor((H + 2p - k) / s) + 1 = (H - 1) // s + 1."""
    return (H - 1) // stride + 1, (W - 1) // stride + 1


def reference_depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 1,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """relu(conv2d(x, weight, groups=C, padding=k//2) * scale + shift) in plain PyTorch.

    The CPU path and the test oracle. The weight (and scale, shift) are cast to x's dtype first, as autocast
    would; compute in float64 for an exact oracle.
    """
    check_args(x, weight, stride, scale, shift, "reference")
    C, k = x.shape[1], weight.shape[-1]
    y = F.conv2d(x, weight.to(x.dtype), stride=stride, padding=k // 2, groups=C)
    if scale is not None:
        y = y * scale.to(y.dtype).view(1, C, 1, 1)
    if shift is not None:
        y = y + shift.to(y.dtype).view(1, C, 1, 1)
    return torch.relu(y) if relu else y
