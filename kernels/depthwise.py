"""Depthwise k x k convolution with a fused per-channel epilogue, forward and backward in Triton.

Contract: `depthwise_conv2d(x, weight, stride, scale, shift, relu)` computes

    z = conv2d(x, weight, stride=stride, padding=k // 2, groups=C)          (N, C, OH, OW), OH = (H-1)//s + 1
    y = relu(z * scale[c] + shift[c])                                        (each step optional)

x is (N, C, H, W) in NCHW-contiguous or channels_last memory format, weight is
nn.Conv2d(C, C, k, groups=C, bias=False).weight of shape (C, 1, k, k) with k odd (the Triton path takes
k = 3 or 5), stride 1 or 2, scale and shift are optional (C,) vectors (a folded BatchNorm or a bias). y comes
back in x's dtype and x's memory format. Tensors that are not dense in that format (slices, an expanded
stride-0 grad_y from `.sum()`) are copied to it first: the kernels index dense tensors, with C, H, W as
compile-time constants (cheap index arithmetic, provable 16-byte alignment; one compilation per layer shape).
The Triton path takes float32, bfloat16 and float16 x; weight, scale and shift may have any float dtype
(float32 master weights next to a bfloat16 x under autocast): the kernels read them as stored and
accumulate in float32, so only the output is rounded to x's dtype (`reference_depthwise_conv2d` casts the
weight to x's dtype first, as autocast would). Gradients come back in each input's own dtype.

Algorithm. A "tile" is rows x cols of output (or input) elements, picked by the memory format so that the
contiguous dimension is the vectorised one:
    channels_last: rows = pixels (n, oh, ow) over the whole batch, cols = channels     (C contiguous)
    NCHW:          rows = planes (n, c),                         cols = pixels (oh, ow) (W contiguous)

    forward, per tile:      acc = sum_{kh,kw} x[n, c, oh*s - p + kh, ow*s - p + kw] * w[c, kh, kw]  (0 in pad)
                            y = relu(acc * scale[c] + shift[c])                     (float32, then x's dtype)
    backward, input pass:   dx[n, c, ih, iw] = sum_{kh,kw} gz[n, c, (ih+p-kh)/s, (iw+p-kw)/s] * w[c, kh, kw]
                            over the taps where the division is exact and in range (transposed conv).
    backward, weight pass:  the k*k taps form a third tile axis, padded to KKP = 16 (k=3) or 32 (k=5):
                            x3 = x at (rows, taps, cols)
                            z  = sum_taps x3 * w                   (recomputed only if relu or scale needs it)
                            g' = grad_y * [y > 0]                  (relu's mask)
                            gz = g' * scale[c]                     (grad w.r.t. z; stored for the input pass)
                            acc[row, tap, col] += gz * x3;  acc_scale += g' * z;  acc_shift += g'
                            Each program loops over a chunk of rows (of images, in NCHW) and writes one
                            float32 partial sum per (chunk, tap, channel); a second small kernel adds the
                            chunks in a fixed order: deterministic, no atomics.
    weight pass, "taps" (channels_last 3x3 only; launch_bwd_weight picks it where faster, wgrad_variant): the same
                            sums from nine shifted (rows, cols) x tiles, as in the forward, and nine
                            (rows, cols) accumulators, reduced over rows once at the end; no padded tap lanes.
    forward and stride-1 input pass, "rows" (channels_last 3x3; kernels/depthwise_rows.py, picked where
                            faster by pointwise_variant): a program walks down whole output rows of one image,
                            keeping the three input rows under its window in registers.
    backward in one pass (channels_last 3x3, stride 1, no relu or scale; kernels/depthwise_backward.py, taken
                            where faster by backward_variant): grad_x and the weight pass's sums from one read
                            of grad_y: "fused", x and grad_y loaded at each of the nine offsets with one
                            address; "window", whole rows down each image, grad_y's three rows in registers.

Autograd: `_DepthwiseConv2dFn`, a torch.autograd.Function with a separate setup_context. In plain eager mode
it calls the launchers directly (a custom op's dispatch costs tens of microseconds per call); under
torch.compile, torch.func transforms or any other tracing it calls the triton_ops cifar_zoo::dwconv_fwd,
dwconv_bwd_weight, dwconv_bwd_input, dwconv_bwd_fused (launches through wrap_triton), the binding that works
in eager mode, under torch.func.grad and inside torch.compile (shared/notes/torch-func-triton.md). No double
backward.

impl="auto" on CUDA uses the kernels where they measured faster than PyTorch on an H100 (`triton_preferred`):
everywhere in NCHW and with a fused epilogue, only for stride-2 and small-output layers in channels_last.
`precompile(layers)` compiles a net's kernel variants ahead, in parallel processes.

Launch configurations come from `pointwise_config` / `wgrad_config`, a table measured on an H100 and an H200 with
`python3 bench/depthwise.py --tune` rather than Triton's autotuner: with C, H, W, the layout, dtype and
epilogue all compile-time, an autotuner multiplies compilations by its config count (the GPU tests timed out
that way) and re-benchmarks every new layer shape at its first call. CPU tensors run the same kernels in
Triton's interpreter (for tests: slow), which needs TRITON_INTERPRET=1 set before triton is first imported.
"""

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["Layer", "depthwise_conv2d", "precompile", "reference_depthwise_conv2d", "triton_preferred"]

IMPLS = ("auto", "triton", "reference")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_KERNEL_SIZES = (3, 5)
STRIDES = (1, 2)
_MAX_INDEX = 2**31 - 1  # the kernels index in int32
_WGRAD_TARGET_PROGRAMS = 1024  # weight-gradient programs to aim for: ~8 per SM on a 132-SM H100
_FINISH_BLOCK_G = 32  # partial sums added per step by the finishing kernel


def _check_args(x, weight, stride, scale, shift, impl) -> None:
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


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    """Like triton.next_power_of_2, whose calls cost microseconds each (it unwraps constexprs)."""
    return 1 << max(0, n - 1).bit_length()


def _output_hw(H: int, W: int, stride: int) -> tuple[int, int]:
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
    _check_args(x, weight, stride, scale, shift, "reference")
    C, k = x.shape[1], weight.shape[-1]
    y = F.conv2d(x, weight.to(x.dtype), stride=stride, padding=k // 2, groups=C)
    if scale is not None:
        y = y * scale.to(y.dtype).view(1, C, 1, 1)
    if shift is not None:
        y = y + shift.to(y.dtype).view(1, C, 1, 1)
    return torch.relu(y) if relu else y


# ---------------------------------------------------------------------------------------------------------
# Launch configurations. BLOCK_R x BLOCK_K is the (rows, cols) tile of the module docstring; the weight
# gradient's tile is (BLOCK_R, KKP, BLOCK_K) and holds a float32 accumulator of that size.

class LaunchConfig(NamedTuple):
    block_r: int  # tile rows: pixels (channels_last) or planes / channels (NCHW)
    block_k: int  # tile columns: channels (channels_last) or pixels of a plane (NCHW)
    num_warps: int


# Measured with `python3 bench/depthwise.py --tune`: the fastest launch configuration per (kernel, C, H, stride),
# channels_last, 3x3, bfloat16, batch 256, as (BLOCK_R, BLOCK_K, num_warps). The first entries of each kernel
# come from an H100 at the benchmark's old shape list (bench/results/depthwise-h100.md); the H200 entries from the
# sweep at the nets' own layers (results/h200-2026-12-01j.log), where it beat the rules below by 3% or more (it
# confirmed the H100 entries within 3%). Shapes not listed use the rules (tiles of 2048-4096 elements; the
# weight gradient wants 32-channel slices).
_MEASURED_CL = {
    "fwd": {(32, 32, 1): (64, 32, 4), (64, 32, 2): (32, 64, 4), (128, 16, 1): (16, 128, 4),
            (256, 8, 1): (16, 128, 4), (512, 4, 2): (64, 32, 4), (1024, 2, 1): (16, 128, 4),
            (728, 8, 1): (8, 256, 4),
            # H200: 1.46x, 1.05x, 1.04x, 1.29x over the rules
            (64, 32, 1): (64, 64, 4), (128, 32, 1): (64, 64, 4), (256, 32, 1): (64, 64, 4), (256, 8, 2): (64, 32, 4)},
    "bwd_input": {(32, 32, 1): (128, 32, 4), (64, 32, 2): (128, 32, 4), (128, 16, 1): (64, 64, 4),
                  (256, 8, 1): (16, 128, 4), (512, 4, 2): (32, 128, 4), (1024, 2, 1): (16, 128, 4),
                  (728, 8, 1): (8, 256, 4),
                  # H200: 1.04x, 1.08x, 1.13x, 1.07x, 1.04x, 1.13x, 1.12x over the rules
                  (64, 32, 1): (64, 64, 4), (128, 32, 1): (16, 128, 4), (256, 32, 1): (16, 128, 4),
                  (256, 16, 1): (16, 128, 4), (728, 16, 1): (8, 256, 4), (128, 16, 2): (64, 64, 4),
                  (256, 8, 2): (64, 64, 4)},
    "bwd_weight": {(512, 4, 2): (4, 32, 2), (1024, 2, 1): (1, 128, 4),
                   (256, 8, 2): (4, 32, 2)},  # H200: 1.10x over the rule
}  # fmt: skip
_MEASURED_NCHW_WGRAD = {(256, 8, 1): (2, 64, 4)}


def pointwise_config(kind: str, channels_last: bool, C: int, H: int, W: int, stride: int, K: int = 3,
                     cpu: bool = False) -> LaunchConfig:
    """Tiles of the forward ("fwd") and grad-input ("bwd_input") kernels: (rows, cols) = (BLOCK_R, BLOCK_K)."""
    np2 = _next_pow2
    if cpu:  # the interpreter: few large tiles (each op of each program is a Python round trip)
        return LaunchConfig(128, 64, 1) if channels_last else LaunchConfig(64, 64, 1)
    if channels_last:
        if K == 3 and (C, H, stride) in _MEASURED_CL[kind] and H == W:
            return LaunchConfig(*_MEASURED_CL[kind][C, H, stride])
        # 16-byte vectors along C; the grad-input pass at 32x32 prefers narrow, tall tiles
        block_k = min(np2(C), 32 if kind == "bwd_input" and H * W >= 1024 else 128)
        tile = 4096 if kind == "bwd_input" and H * W >= 256 else 2048
        return LaunchConfig(max(1, min(256, tile // block_k)), block_k, 4)
    OH, OW = _output_hw(H, W, stride)
    plane = OH * OW if kind == "fwd" else H * W  # pixels per (n, c) plane of the kernel's output
    block_k = min(np2(plane), 256)
    return LaunchConfig(max(1, 2048 // block_k), block_k, 4)


def wgrad_config(channels_last: bool, C: int, H: int, W: int, stride: int, K: int = 3,
                 cpu: bool = False) -> LaunchConfig:
    """Weight-gradient tiles (BLOCK_R, KKP, BLOCK_K): 4096 elements with 4 warps, ~2048 for small layers."""
    np2 = _next_pow2
    kkp = np2(K * K)
    if cpu:
        return LaunchConfig(64, 64, 1)
    OH, OW = _output_hw(H, W, stride)
    if channels_last:
        if K == 3 and (C, H, stride) in _MEASURED_CL["bwd_weight"] and H == W:
            return LaunchConfig(*_MEASURED_CL["bwd_weight"][C, H, stride])
        block_k = min(np2(C), 32)
        if OH * OW <= 4:  # tiny outputs: fewer rows per step, 2 warps
            return LaunchConfig(max(1, 2048 // (kkp * block_k)), block_k, 2)
        return LaunchConfig(max(1, 4096 // (kkp * block_k)), block_k, 4)
    if K == 3 and (C, H, stride) in _MEASURED_NCHW_WGRAD and H == W:
        return LaunchConfig(*_MEASURED_NCHW_WGRAD[C, H, stride])
    block_k = min(np2(OH * OW), 16)
    return LaunchConfig(max(1, 2048 // (kkp * block_k)), block_k, 4)


# launch_bwd_weight(variant=...): the 3-D tap gather, or 9 shifted 2-D loads (channels_last 3x3 only). A third,
# on the rows schedule of kernels/depthwise_rows.py, measured 0.99x taps in bf16 and 0.89x in fp32 (geometric
# means, 0.82-1.26x per layer, bench/results/wgrad-h200-with-rows.md, 2026-12-01) and was removed after that run.
WGRAD_VARIANTS = ("gather", "taps")


def wgrad_variant(channels_last: bool, dtype: torch.dtype, N: int, C: int, H: int, W: int, stride: int,
                  K: int = 3) -> str:
    """The weight-gradient kernel launch_bwd_weight uses by default: "taps" where it measured faster than
    "gather" on an H200 at the nets' 15 layers, batch 256 and 512, at wgrad_taps_config's tiles, with the fused
    epilogue and without (bench/results/wgrad-h200.md, 2026-12-02 06:40 UTC): in float32 at all 30 cases with
    it (1.31-3.28x) and 29 of 30 without (1.12-3.36x; 0.94x at the smallest, 256 channels 8x8 stride 2 at batch
    256); in bfloat16 from 2**21 output elements (N x C x OH x OW; 1.08-2.07x with, 1.05-2.05x without), while
    gather was faster at that one case below (0.86x with, 0.89x without; 0.87x in the 03:16 run and in
    bench/results/wgrad-occupancy-h200.md, 03:04, whose 16-bit tile moved the line down from 2**22).
    float16 follows bfloat16 (same loads; not measured apart). "taps" exists for channels_last 3x3 only."""
    if not (channels_last and K == 3):
        return "gather"
    if dtype == torch.float32:
        return "taps"
    OH, OW = _output_hw(H, W, stride)
    return "taps" if N * C * OH * OW >= 1 << 21 else "gather"


# The "taps" weight pass holds 9 float32 accumulators and 9 x tiles per element of a thread: in 16 bits it moves
# bytes at half its float32 rate, bound by registers and elements rather than bytes, so where it also recomputes
# z (NEED_Z, for relu's mask or dscale) a smaller tile, more programs resident per SM, is faster.
_TAPS_TILE, _TAPS_TILE_SMALL = 1024, 512  # elements of each (BLOCK_R, BLOCK_K) tile with 4 warps: 8, 4 per thread
_TAPS_PLAIN_SMALL = 1 << 23  # output elements (N x C x OH x OW) under which the plain 16-bit pass takes 512 too


def wgrad_taps_config(dtype: torch.dtype, N: int, C: int, H: int, W: int, stride: int, need_z: bool,
                      cpu: bool = False) -> LaunchConfig:
    """Tiles (BLOCK_R, BLOCK_K) of the "taps" weight gradient (channels_last, 3x3), 32 channels wide with
    4 warps; need_z: the pass recomputes the conv output (a relu or scale epilogue). Measured on an H200 at the
    nets' 15 layers, batch 256 and 512:
    - float32 with the epilogue: 32 x 32 (1024 elements), the fastest at 27 of 30 cases
      (bench/results/wgrad-h200.md, 2026-12-02 06:40 UTC; 17 of 30 and within 4.8% in geometric mean in
      bench/results/wgrad-occupancy-h200.md, which also tried 2 and 16 elements per thread).
    - float32 without it: 16 x 32 where the 32-channel slices are full (C a multiple of BLOCK_K), else 32 x 32:
      16 x 32 was the fastest at 25 of 30 cases, and 1.23-1.41x slower than 32 x 32 at the four 728-channel
      ones; over the 30 cases the rule's geometric-mean speedup over gather is 2.18x, the fastest tile's at
      each case 2.19x, 32 x 32 everywhere 1.99x (the same run's rows; 1.24-1.45x, 2.18x, 2.19x and 1.99x in
      the run before it, 06:22, results/h200-2026-12-02f.log, which moved the rule from 32 x 32 everywhere).
    - 16 bits with the epilogue: 16 x 32 (512 elements), 1.25x the 32 x 32 in geometric mean over bfloat16's 30
      cases (0.90-1.56x; slower only at 728 channels, which 32 does not divide), the fastest at 19 and within
      2.5% of the fastest in geometric mean (wgrad-occupancy-h200.md: tiles of 2, 4, 8, 16 elements per thread);
      the fastest at 23 of 30 in wgrad-h200.md.
    - 16 bits without it, as the nets call it in training: 16 x 32 below 2**23 output elements, 32 x 32 from
      there: in bench/depthwise.py's forward+backward, 16 x 32 everywhere against 32 x 32 everywhere (runs of
      2026-12-02 03:12 and 2026-12-01 21:26 UTC, bench/results/wgrad-tiles-h200.md) was 1.04-1.10x at the
      2**22 layers, 0.97-1.03x at 2**23 and 0.87-0.98x from 2**24 (PyTorch's times: 0.99x between the runs);
      timed alone in wgrad-h200.md's plain rows, 1.05-1.32x below 2**23, 1.00-1.06x at 2**23, 0.73-0.98x above."""
    if cpu:  # the interpreter: few large tiles, as in pointwise_config
        return LaunchConfig(128, 64, 1)
    OH, OW = _output_hw(H, W, stride)
    block_k = min(_next_pow2(C), 32)
    if dtype == torch.float32:
        small = not need_z and C % block_k == 0
    else:
        small = need_z or N * C * OH * OW < _TAPS_PLAIN_SMALL
    return LaunchConfig(max(1, (_TAPS_TILE_SMALL if small else _TAPS_TILE) // block_k), block_k, 4)


# backward_variant's one-pass choices -> launch_bwd_fused's schedule (kernels/depthwise_backward.py's two kernels)
FUSED_SCHEDULE = {"fused": "tiles", "window": "window"}
FUSED_SCHEDULES = tuple(FUSED_SCHEDULE.values())
BACKWARD_VARIANTS = ("split", *FUSED_SCHEDULE)  # backward_pass: the weight pass then the grad-input pass, or one
_FUSED_16BIT_MAX = 1 << 25  # elements of x (N x C x H x W) from which the 16-bit one pass measured slower
_WINDOW_MIN_HW = {torch.float32: 1024, torch.bfloat16: 256, torch.float16: 256}  # map sizes the window pays from


def backward_variant(channels_last: bool, dtype: torch.dtype, N: int, C: int, H: int, W: int, stride: int,
                     K: int = 3, changes_grad: bool = False) -> str:
    """How backward_pass computes grad_x and the weight gradient: in one pass (kernels/depthwise_backward.py) where
    it can run (channels_last, 3x3, stride 1, and an epilogue that leaves the gradient unchanged; changes_grad: a
    relu or a scale) and measured faster than "split" (the two passes) on an H200 at the nets' 12 stride-1 layers,
    batch 256 and 512 (`python3 bench/backward.py`, bench/results/backward-h200.md, 2026-12-02 19:24 UTC):
    - "window" (window_config's tile) from 16x16 maps in 16 bits: 1.06-1.61x over split (14 cases), where the
      tiles' one pass gave 0.92-1.13x; and at 32x32 in float32: 1.10-1.58x (8), the tiles' 1.10-1.15x.
    - "fused" (the tiles, bwd_fused_config's) at 16x16 in float32: 1.12-1.29x (6 cases; the window 0.99-1.24x,
      faster at one, 128 channels at batch 256, by 7%); and in 16 bits below 16x16 maps and 2**25 elements of
      x: 1.04-1.14x (all 10 cases there). Float32 at 8x8 and 4x4 keeps split (the tiles 0.93-1.02x; the window
      1.04x and 1.16x at 728 channels 8x8, batch 256 and 512, but 0.86-0.88x at 256 channels: left alone).
    Over the 24 cases of each dtype the rule's geometric mean over split is 1.15x in bfloat16 and 1.12x in
    float32 (1.06x and 1.08x with the tiles alone, the rule before the window). float16 follows bfloat16."""
    if not (channels_last and K == 3 and stride == 1) or changes_grad:
        return "split"
    if H * W >= _WINDOW_MIN_HW.get(dtype, 256):
        return "window"
    if dtype == torch.float32:
        return "fused" if H * W >= 256 else "split"
    return "fused" if N * C * H * W < _FUSED_16BIT_MAX else "split"


def bwd_fused_config(C: int, cpu: bool = False) -> LaunchConfig:
    """Tiles (BLOCK_R, BLOCK_K, num_warps) of launch_bwd_fused: 16 x 32 with 4 warps (4 elements per thread),
    the fastest of the six timed at 38 of the 48 cases in bench/results/backward-h200.md (the 12:44 UTC run, in
    git history at 8b575e1) and 1.045x (bf16) and 1.07x (fp32) over the two passes in geometric mean, where
    32 x 32 gave 0.87x and 1.01x, 8 x 64 0.96x and 0.97x; in both dtypes and at every layer size."""
    if cpu:  # the interpreter: few large tiles, as in pointwise_config
        return LaunchConfig(128, 64, 1)
    block_k = min(_next_pow2(C), 32)
    return LaunchConfig(512 // block_k, block_k, 4)


# ---------------------------------------------------------------------------------------------------------
# Kernels. Tensors are dense in the kernel's layout: channels_last offsets are ((n*H + h)*W + w)*C + c, NCHW
# offsets ((n*C + c)*H + h)*W + w; the weight is read as (C, K*K). Index arithmetic is int32.

@triton.jit
def _affine_relu(acc, sc, sh, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr):
    """The forward epilogue: relu(acc * sc + sh), each step only if the kernel has it."""
    if HAS_SCALE:
        acc = acc * sc
    if HAS_SHIFT:
        acc = acc + sh
    if RELU:
        acc = tl.maximum(acc, 0.0)
    return acc


@triton.jit(do_not_specialize=["N"])  # any batch size reuses one compilation
def _dwconv_fwd_kernel(
    # pointers
    x_ptr, w_ptr, scale_ptr, shift_ptr, y_ptr,
    # sizes: the batch is the only run-time size
    N,
    # compile-time: geometry, layout, epilogue, tile
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr, K: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    PAD: tl.constexpr = K // 2
    OH: tl.constexpr = (H - 1) // STRIDE + 1
    OW: tl.constexpr = (W - 1) // STRIDE + 1
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]  # (1, BLOCK_K)
    if CHANNELS_LAST:  # rows: output pixels of the whole batch; cols: channels
        ow = r % OW
        oh = (r // OW) % OH
        n = r // (OW * OH)
        c = k
        valid = (r < N * (OH * OW)) & (c < C)
        y_off = r * C + c
    else:  # rows: (n, c) planes; cols: output pixels of a plane
        c = r % C
        ow = k % OW
        oh = k // OW
        valid = (r < N * C) & (k < OH * OW)
        y_off = r * (OH * OW) + k
    c_ok = c < C
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for kh in tl.static_range(K):
        ih = oh * STRIDE - PAD + kh
        row_ok = valid & (ih >= 0) & (ih < H)
        for kw in tl.static_range(K):
            iw = ow * STRIDE - PAD + kw
            ok = row_ok & (iw >= 0) & (iw < W)
            if CHANNELS_LAST:
                x_off = ((n * H + ih) * W + iw) * C + c
            else:
                x_off = (r * H + ih) * W + iw
            xv = tl.load(x_ptr + x_off, mask=ok, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (kh * K + kw), mask=c_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)
    sc, sh = 1.0, 0.0
    if HAS_SCALE:
        sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    acc = _affine_relu(acc, sc, sh, HAS_SCALE, HAS_SHIFT, RELU)
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=valid)


@triton.jit(do_not_specialize=["N"])
def _dwconv_bwd_input_kernel(
    # pointers: gz is the gradient w.r.t. the convolution output z (before the epilogue)
    gz_ptr, w_ptr, dx_ptr,
    # sizes
    N,
    # compile-time: geometry (of x), layout, tile
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr, K: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    PAD: tl.constexpr = K // 2
    OH: tl.constexpr = (H - 1) // STRIDE + 1
    OW: tl.constexpr = (W - 1) // STRIDE + 1
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]  # (1, BLOCK_K)
    if CHANNELS_LAST:  # rows: input pixels of the whole batch; cols: channels
        iw = r % W
        ih = (r // W) % H
        n = r // (W * H)
        c = k
        valid = (r < N * (H * W)) & (c < C)
        dx_off = r * C + c
    else:  # rows: (n, c) planes; cols: input pixels of a plane
        c = r % C
        iw = k % W
        ih = k // W
        valid = (r < N * C) & (k < H * W)
        dx_off = r * (H * W) + k
    c_ok = c < C
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for kh in tl.static_range(K):
        th = ih + PAD - kh  # = oh * STRIDE when this tap reaches row ih from output row oh
        oh = th // STRIDE
        row_ok = valid & (th >= 0) & (oh < OH)
        if STRIDE > 1:
            row_ok = row_ok & (th % STRIDE == 0)
        for kw in tl.static_range(K):
            tw = iw + PAD - kw
            ow = tw // STRIDE
            ok = row_ok & (tw >= 0) & (ow < OW)
            if STRIDE > 1:
                ok = ok & (tw % STRIDE == 0)
            if CHANNELS_LAST:
                g_off = ((n * OH + oh) * OW + ow) * C + c
            else:
                g_off = (r * OH + oh) * OW + ow
            gv = tl.load(gz_ptr + g_off, mask=ok, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (kh * K + kw), mask=c_ok, other=0.0)
            acc += gv.to(tl.float32) * wv.to(tl.float32)
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _weight_pass_epilogue(g, z, sc, sh, acc_scale, acc_shift, gz_ptr, g_off, valid,
                          HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr,
                          NEED_Z: tl.constexpr, STORE_GZ: tl.constexpr):
    """One step of the weight passes' epilogue backward, for y = relu(z * sc + sh) (each step optional) and
    g = dL/dy: returns (gz = dL/dz, acc_scale + g' * z, acc_shift + g'), g' = dL/d(z * sc + sh) (g where
    y > 0), and stores gz when STORE_GZ. z is read only when NEED_Z."""
    gz = g
    if NEED_Z:
        y = z
        if HAS_SCALE:
            y = y * sc
        if HAS_SHIFT:
            y = y + sh
        if RELU:
            g = tl.where(y > 0.0, g, 0.0)
        gz = g
        if HAS_SCALE:
            acc_scale += g * z
            gz = g * sc
        if STORE_GZ:
            tl.store(gz_ptr + g_off, gz.to(gz_ptr.dtype.element_ty), mask=valid)
    if HAS_SHIFT:
        acc_shift += g
    return gz, acc_scale, acc_shift


@triton.jit(do_not_specialize=["N", "STEPS"])
def _dwconv_bwd_weight_kernel(
    # pointers: gz_ptr receives the gradient w.r.t. z when STORE_GZ; part_ptr the float32 partial sums
    x_ptr, g_ptr, w_ptr, scale_ptr, shift_ptr, gz_ptr, part_ptr,
    # sizes; STEPS: loop steps per program, each BLOCK_R pixels (channels_last) or one (image, pixel block)
    N, STEPS,
    # compile-time: geometry (of x; KKP = K*K rounded up to a power of 2), layout, epilogue, tile
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr, K: tl.constexpr,
    KKP: tl.constexpr, CHANNELS_LAST: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    RELU: tl.constexpr, NEED_Z: tl.constexpr, STORE_GZ: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # part is (G, K*K + 2, C) float32, G = programs along axis 0: each writes its sum of gz * x per tap,
    # then the sums for dscale and dshift. NEED_Z (= RELU or HAS_SCALE): recompute the conv output z.
    PAD: tl.constexpr = K // 2
    OH: tl.constexpr = (H - 1) // STRIDE + 1
    OW: tl.constexpr = (W - 1) // STRIDE + 1
    PIX_BLOCKS: tl.constexpr = (OH * OW + BLOCK_K - 1) // BLOCK_K  # NCHW: column blocks per plane
    ar = tl.arange(0, BLOCK_R)[:, None, None]  # (BLOCK_R, 1, 1)
    ak = tl.arange(0, BLOCK_K)[None, None, :]  # (1, 1, BLOCK_K)
    tap = tl.arange(0, KKP)[None, :, None]  # (1, KKP, 1)
    kh = tap // K
    kw = tap % K
    tap_ok = tap < K * K
    if CHANNELS_LAST:  # channels are the columns, fixed per program
        c = tl.program_id(1) * BLOCK_K + ak  # (1, 1, BLOCK_K)
    else:  # channels are the rows, fixed per program
        c = tl.program_id(1) * BLOCK_R + ar  # (BLOCK_R, 1, 1)
    c_ok = c < C
    if NEED_Z:
        w3 = tl.load(w_ptr + c * (K * K) + tap, mask=c_ok & tap_ok, other=0.0).to(tl.float32)
    sc, sh = 1.0, 0.0  # the identity where the epilogue has no scale or shift
    if HAS_SCALE:
        sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_R, KKP, BLOCK_K), dtype=tl.float32)  # sum of gz * x per (row, tap, col)
    acc_scale = tl.zeros((BLOCK_R, 1, BLOCK_K), dtype=tl.float32)  # sum of g' * z
    acc_shift = tl.zeros((BLOCK_R, 1, BLOCK_K), dtype=tl.float32)  # sum of g'
    for i in range(STEPS):
        s = tl.program_id(0) * STEPS + i
        if CHANNELS_LAST:
            r = s * BLOCK_R + ar  # output pixels of the whole batch
            ow = r % OW
            oh = (r // OW) % OH
            n = r // (OW * OH)
            valid = (r < N * (OH * OW)) & c_ok
            g_off = r * C + c
        else:
            n = s // PIX_BLOCKS
            k = (s % PIX_BLOCKS) * BLOCK_K + ak  # output pixels of the planes (n, c)
            ow = k % OW
            oh = k // OW
            valid = (n < N) & (k < OH * OW) & c_ok
            g_off = (n * C + c) * (OH * OW) + k
        ih = oh * STRIDE - PAD + kh  # (rows or 1, KKP, 1 or cols)
        iw = ow * STRIDE - PAD + kw
        x_ok = valid & tap_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        if CHANNELS_LAST:
            x_off = ((n * H + ih) * W + iw) * C + c
        else:
            x_off = ((n * C + c) * H + ih) * W + iw
        x3 = tl.load(x_ptr + x_off, mask=x_ok, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + g_off, mask=valid, other=0.0).to(tl.float32)  # (BLOCK_R, 1, BLOCK_K)
        z = 0.0
        if NEED_Z:
            z = tl.sum(x3 * w3, axis=1, keep_dims=True)  # (BLOCK_R, 1, BLOCK_K): the conv output
        gz, acc_scale, acc_shift = _weight_pass_epilogue(g, z, sc, sh, acc_scale, acc_shift, gz_ptr, g_off, valid,
                                                         HAS_SCALE, HAS_SHIFT, RELU, NEED_Z, STORE_GZ)
        acc += gz * x3
    part_base = part_ptr + tl.program_id(0) * ((K * K + 2) * C)
    if CHANNELS_LAST:  # reduce over pixels
        t2 = tl.arange(0, KKP)[:, None]  # (KKP, 1)
        c2 = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]  # (1, BLOCK_K)
        tl.store(part_base + t2 * C + c2, tl.sum(acc, axis=0), mask=(t2 < K * K) & (c2 < C))
        if HAS_SCALE:
            tl.store(part_base + (K * K) * C + c2, tl.sum(acc_scale, axis=0), mask=c2 < C)
        if HAS_SHIFT:
            tl.store(part_base + (K * K + 1) * C + c2, tl.sum(acc_shift, axis=0), mask=c2 < C)
    else:  # reduce over pixels (of several images)
        c2 = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
        t2 = tl.arange(0, KKP)[None, :]  # (1, KKP)
        tl.store(part_base + t2 * C + c2, tl.sum(acc, axis=2), mask=(t2 < K * K) & (c2 < C))
        if HAS_SCALE:
            tl.store(part_base + (K * K) * C + c2, tl.sum(acc_scale, axis=2), mask=c2 < C)
        if HAS_SHIFT:
            tl.store(part_base + (K * K + 1) * C + c2, tl.sum(acc_shift, axis=2), mask=c2 < C)


@triton.jit
def _x_tap(x_ptr, n, oh, ow, c, valid, KH: tl.constexpr, KW: tl.constexpr,
           C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr):
    """x under tap (KH, KW) of each output pixel's 3x3 window (padding 1), channels_last: a float32 tile of
    the shape of n/oh/ow x c, 0 in the padding."""
    ih = oh * STRIDE - 1 + KH
    iw = ow * STRIDE - 1 + KW
    ok = valid & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    return tl.load(x_ptr + ((n * H + ih) * W + iw) * C + c, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _tap_weight(w_ptr, c, c_ok, T: tl.constexpr):
    """weight[c, tap T] of a 3x3 kernel read as (C, 9), in float32."""
    return tl.load(w_ptr + c * 9 + T, mask=c_ok, other=0.0).to(tl.float32)


@triton.jit
def _store_part_row(part_ptr, ROW: tl.constexpr, acc, c, C: tl.constexpr):
    """part[program, ROW, c] = the column sums of acc (BLOCK_R, BLOCK_K); part_ptr points at the program's."""
    tl.store(part_ptr + ROW * C + c, tl.sum(acc, axis=0), mask=c < C)


@triton.jit
def _store_parts3x3(part_ptr, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, acc8, acc_scale, acc_shift, c,
                    C: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr):
    """The program's row of the (G, 9 + 2, C) partial sums: per tap (row-major), then dscale and dshift."""
    part = part_ptr + tl.program_id(0) * ((9 + 2) * C)
    _store_part_row(part, 0, acc0, c, C)
    _store_part_row(part, 1, acc1, c, C)
    _store_part_row(part, 2, acc2, c, C)
    _store_part_row(part, 3, acc3, c, C)
    _store_part_row(part, 4, acc4, c, C)
    _store_part_row(part, 5, acc5, c, C)
    _store_part_row(part, 6, acc6, c, C)
    _store_part_row(part, 7, acc7, c, C)
    _store_part_row(part, 8, acc8, c, C)
    if HAS_SCALE:
        _store_part_row(part, 9, acc_scale, c, C)
    if HAS_SHIFT:
        _store_part_row(part, 10, acc_shift, c, C)


@triton.jit(do_not_specialize=["N", "STEPS"])
def _dwconv_bwd_weight_taps_kernel(
    # pointers: as _dwconv_bwd_weight_kernel (gz_ptr receives grad_z when STORE_GZ; part_ptr the partial sums)
    x_ptr, g_ptr, w_ptr, scale_ptr, shift_ptr, gz_ptr, part_ptr,
    # sizes; STEPS: loop steps per program, each BLOCK_R output pixels of the whole batch
    N, STEPS,
    # compile-time: geometry (of x), epilogue, tile; channels_last and a 3x3 kernel only
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr, NEED_Z: tl.constexpr,
    STORE_GZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # The alternative to _dwconv_bwd_weight_kernel's (BLOCK_R, 16, BLOCK_K) gather, shaped like
    # the forward kernel: per step one (BLOCK_R, BLOCK_K) tile of grad_y and nine shifted x tiles, one
    # float32 accumulator per tap (written out: a jit function cannot index a list of tensors in a loop),
    # reduced over rows once, at the end. part is (G, 9 + 2, C) as there, for the same finishing kernel.
    OH: tl.constexpr = (H - 1) // STRIDE + 1
    OW: tl.constexpr = (W - 1) // STRIDE + 1
    ar = tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
    c1 = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,): channels, fixed per program
    c = c1[None, :]  # (1, BLOCK_K)
    c_ok = c < C
    if NEED_Z:  # (1, BLOCK_K) each: the weight per tap (kh, kw)
        w00 = _tap_weight(w_ptr, c, c_ok, 0)
        w01 = _tap_weight(w_ptr, c, c_ok, 1)
        w02 = _tap_weight(w_ptr, c, c_ok, 2)
        w10 = _tap_weight(w_ptr, c, c_ok, 3)
        w11 = _tap_weight(w_ptr, c, c_ok, 4)
        w12 = _tap_weight(w_ptr, c, c_ok, 5)
        w20 = _tap_weight(w_ptr, c, c_ok, 6)
        w21 = _tap_weight(w_ptr, c, c_ok, 7)
        w22 = _tap_weight(w_ptr, c, c_ok, 8)
    sc, sh = 1.0, 0.0  # the identity where the epilogue has no scale or shift
    if HAS_SCALE:
        sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    # (BLOCK_R, BLOCK_K) each: sum of gz * x under tap (kh, kw); then of g' * z and of g'
    acc00 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc01 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc02 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc10 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc11 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc12 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc20 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc21 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc22 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc_scale = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc_shift = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for i in range(STEPS):
        r = (tl.program_id(0) * STEPS + i) * BLOCK_R + ar  # output pixels of the whole batch
        ow = r % OW
        oh = (r // OW) % OH
        n = r // (OW * OH)
        valid = (r < N * (OH * OW)) & c_ok
        g_off = r * C + c
        # all nine x tiles first: with NEED_Z the mask on g depends on z, which needs every one of them
        x00 = _x_tap(x_ptr, n, oh, ow, c, valid, 0, 0, C, H, W, STRIDE)
        x01 = _x_tap(x_ptr, n, oh, ow, c, valid, 0, 1, C, H, W, STRIDE)
        x02 = _x_tap(x_ptr, n, oh, ow, c, valid, 0, 2, C, H, W, STRIDE)
        x10 = _x_tap(x_ptr, n, oh, ow, c, valid, 1, 0, C, H, W, STRIDE)
        x11 = _x_tap(x_ptr, n, oh, ow, c, valid, 1, 1, C, H, W, STRIDE)
        x12 = _x_tap(x_ptr, n, oh, ow, c, valid, 1, 2, C, H, W, STRIDE)
        x20 = _x_tap(x_ptr, n, oh, ow, c, valid, 2, 0, C, H, W, STRIDE)
        x21 = _x_tap(x_ptr, n, oh, ow, c, valid, 2, 1, C, H, W, STRIDE)
        x22 = _x_tap(x_ptr, n, oh, ow, c, valid, 2, 2, C, H, W, STRIDE)
        g = tl.load(g_ptr + g_off, mask=valid, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_K)
        z = 0.0
        if NEED_Z:
            z = (x00 * w00 + x01 * w01 + x02 * w02 + x10 * w10 + x11 * w11 + x12 * w12
                 + x20 * w20 + x21 * w21 + x22 * w22)  # the conv output
        gz, acc_scale, acc_shift = _weight_pass_epilogue(g, z, sc, sh, acc_scale, acc_shift, gz_ptr, g_off, valid,
                                                         HAS_SCALE, HAS_SHIFT, RELU, NEED_Z, STORE_GZ)
        acc00 += gz * x00
        acc01 += gz * x01
        acc02 += gz * x02
        acc10 += gz * x10
        acc11 += gz * x11
        acc12 += gz * x12
        acc20 += gz * x20
        acc21 += gz * x21
        acc22 += gz * x22
    _store_parts3x3(part_ptr, acc00, acc01, acc02, acc10, acc11, acc12, acc20, acc21, acc22, acc_scale, acc_shift,
                    c1, C, HAS_SCALE, HAS_SHIFT)


@triton.jit(do_not_specialize=["G"])
def _dwconv_wgrad_finish_kernel(
    # pointers: part (G, KK + 2, C) float32 in; grad_weight (C, KK), grad_scale (C,), grad_shift (C,) out
    part_ptr, gw_ptr, gscale_ptr, gshift_ptr,
    # sizes
    G,
    # compile-time
    C: tl.constexpr, KK: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr,
):
    t = tl.program_id(0)  # row of part: a tap (< KK), then scale (KK), then shift (KK + 1)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    gi = tl.arange(0, BLOCK_G)[:, None]  # (BLOCK_G, 1)
    acc = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):  # a fixed order: the sum is deterministic
        g = g0 + gi
        acc += tl.load(part_ptr + (g * (KK + 2) + t) * C + c[None, :], mask=(g < G) & (c[None, :] < C),
                       other=0.0)
    total = tl.sum(acc, axis=0)
    if t < KK:
        tl.store(gw_ptr + c * KK + t, total.to(gw_ptr.dtype.element_ty), mask=c < C)
    elif t == KK:
        if HAS_SCALE:
            tl.store(gscale_ptr + c, total.to(gscale_ptr.dtype.element_ty), mask=c < C)
    else:
        if HAS_SHIFT:
            tl.store(gshift_ptr + c, total.to(gshift_ptr.dtype.element_ty), mask=c < C)


# ---------------------------------------------------------------------------------------------------------
# Launchers: check, allocate, launch. `wrap` routes the launch through wrap_triton (inside a triton_op, so
# that torch.compile sees it); the eager fast path launches directly.

def _launch(kernel, grid, wrap: bool, num_warps: int, device: torch.device, *args, **consts) -> None:
    if device.type == "cuda":
        launcher = wrap_triton(kernel) if wrap else kernel
        launcher[grid](*args, **consts, num_warps=num_warps)
        return
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(kernel, InterpretedFunction):
        raise RuntimeError(
            "impl='triton' on CPU tensors runs the kernels in Triton's interpreter, which needs "
            "TRITON_INTERPRET=1 in the environment before triton is first imported; or use impl='reference'"
        )
    kernel[grid](*args, **consts)


def _is_channels_last(x: torch.Tensor) -> bool:
    """The kernels' layout for x: channels_last if x is (or is closest to) channels_last, else NCHW."""
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return x.stride(1) < x.stride(3)  # neither: follow the innermost of C and W


def _dense(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t itself when dense in the layout, else a dense copy (slices, expanded gradients)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)


def _empty(shape, like: torch.Tensor, channels_last: bool, dtype=None) -> torch.Tensor:
    """An uninitialised (N, C, H, W) output in the layout, allocated by its strides, not memory_format=.
    Inside a triton_op, Inductor (torch 2.11) lowers empty(memory_format=channels_last) as a contiguous empty
    (its `empty` lowering, torch/_inductor/lowering.py, drops memory_format) and copies that into the strides
    the op was traced with: a kernel that writes NaN over the whole output before ours writes it (20 launches,
    0.10 ms of MobileNetV1's 3.73 ms step on the H200: results/h200-2026-12-01t-fills.txt,
    bench/results/step-profile-mobilenetv1-fills.md). empty_strided stays a no-op there."""
    N, C, H, W = shape
    strides = (H * W * C, 1, W * C, C) if channels_last else (C * H * W, H * W, W, 1)
    return torch.empty_strided(shape, strides, device=like.device, dtype=dtype or like.dtype)


POINTWISE_VARIANTS = ("tiles", "rows")  # launch_fwd / launch_bwd_input(variant=...); see pointwise_variant


def pointwise_variant(kind: str, channels_last: bool, dtype: torch.dtype, H: int, W: int, stride: int,
                      K: int = 3) -> str:
    """The schedule launch_fwd ("fwd") / launch_bwd_input ("bwd_input") use by default: "rows"
    (kernels/depthwise_rows.py: a program walks down whole output rows) where it measured faster than the tiles
    on an H200 (results/h200-2026-12-01k.log, each kernel alone at the nets' 15 layers, batch 256 and 512): in
    16-bit everywhere (forward 1.03-1.46x, stride-1 grad-input 1.05-1.45x); in float32 below 32x32 inputs
    (forward 1.02-2.11x; at 32x32 0.96-1.10x) and for every stride-1 grad-input (0.94-2.18x, geomean 1.55).
    It exists for channels_last 3x3 only, and for the grad-input pass at stride 1 only (a flipped forward)."""
    if not (channels_last and K == 3) or (kind == "bwd_input" and stride != 1):
        return "tiles"
    return "tiles" if kind == "fwd" and dtype == torch.float32 and H * W >= 1024 else "rows"


def _pointwise_variant(variant, config, kind, cl, dtype, H, W, stride, K) -> str:
    """variant as given, else "tiles" for an explicit config (the tuner's tiles), else pointwise_variant."""
    variant = variant or ("tiles" if config else pointwise_variant(kind, cl, dtype, H, W, stride, K))
    if variant not in POINTWISE_VARIANTS:
        raise ValueError(f"variant must be one of {POINTWISE_VARIANTS}, got {variant!r}")
    return variant


def launch_fwd(x, weight, scale, shift, stride: int, relu: bool, wrap: bool = False, config=None,
               variant: str | None = None):
    """y = relu(dwconv(x) * scale + shift): (N, C, OH, OW) in x's dtype and memory format.
    variant: "tiles", "rows" or None (pointwise_variant's choice); a config is a tile of the variant."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    OH, OW = _output_hw(H, W, stride)
    cl = _is_channels_last(x)
    x = _dense(x, cl)
    if _pointwise_variant(variant, config, "fwd", cl, x.dtype, H, W, stride, K) == "rows":
        return _rows.launch_rows(x, weight, scale, shift, stride, relu, wrap=wrap, config=config)
    y = _empty((N, C, OH, OW), x, cl)
    cfg = config or pointwise_config("fwd", cl, C, H, W, stride, K, cpu=not x.is_cuda)
    rows, cols = (N * OH * OW, C) if cl else (N * C, OH * OW)
    grid = (_cdiv(rows, cfg.block_r), _cdiv(cols, cfg.block_k))
    _launch(
        _dwconv_fwd_kernel, grid, wrap, cfg.num_warps, x.device,
        x, weight.contiguous(), scale if scale is not None else x, shift if shift is not None else x, y, N,
        C=C, H=H, W=W, STRIDE=stride, K=K, CHANNELS_LAST=cl,
        HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, RELU=relu,
        BLOCK_R=cfg.block_r, BLOCK_K=cfg.block_k,
    )  # fmt: skip
    return y


def launch_bwd_input(grad_z, weight, x, stride: int, wrap: bool = False, config=None, variant: str | None = None):
    """Gradient w.r.t. x given grad_z, the gradient w.r.t. the conv output; x gives shape, dtype, layout.
    variant as in launch_fwd ("rows": the stride-1 forward of grad_z with the kernel flipped)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    cl = _is_channels_last(x)
    grad_z = _dense(grad_z, cl)
    if _pointwise_variant(variant, config, "bwd_input", cl, x.dtype, H, W, stride, K) == "rows":
        if stride != 1:
            raise ValueError(f"variant='rows' computes the grad-input pass at stride 1 only, got stride {stride}")
        return _rows.launch_rows(grad_z, weight, None, None, 1, False, flip=True, wrap=wrap, config=config)
    dx = _empty((N, C, H, W), x, cl)
    cfg = config or pointwise_config("bwd_input", cl, C, H, W, stride, K, cpu=not x.is_cuda)
    rows, cols = (N * H * W, C) if cl else (N * C, H * W)
    grid = (_cdiv(rows, cfg.block_r), _cdiv(cols, cfg.block_k))
    _launch(
        _dwconv_bwd_input_kernel, grid, wrap, cfg.num_warps, x.device,
        grad_z, weight.contiguous(), dx, N,
        C=C, H=H, W=W, STRIDE=stride, K=K, CHANNELS_LAST=cl, BLOCK_R=cfg.block_r, BLOCK_K=cfg.block_k,
    )  # fmt: skip
    return dx


def wgrad_steps(channels_last: bool, N: int, C: int, H: int, W: int, stride: int, cfg: LaunchConfig,
                programs: int = _WGRAD_TARGET_PROGRAMS):
    """(loop steps per program, programs along axis 0, along axis 1) for the weight-gradient kernel."""
    OH, OW = _output_hw(H, W, stride)
    if channels_last:  # steps of BLOCK_R pixels; channels along axis 1
        return _split(_cdiv(N * OH * OW, cfg.block_r), _cdiv(C, cfg.block_k), programs)
    # steps of one (image, pixel block); channels along axis 1
    return _split(N * _cdiv(OH * OW, cfg.block_k), _cdiv(C, cfg.block_r), programs)


def _split(total: int, col_programs: int, programs: int):
    """(steps per program, programs along axis 0, col_programs): `total` loop steps split over about
    `programs` programs in all, col_programs of them along axis 1."""
    steps = _cdiv(total, max(1, min(total, programs // col_programs)))
    return steps, _cdiv(total, steps), col_programs


def launch_bwd_weight(grad_y, x, weight, scale, shift, stride: int, relu: bool, store_grad_z: bool,
                      wrap: bool = False, config=None, programs: int = _WGRAD_TARGET_PROGRAMS,
                      variant: str | None = None):
    """(grad_weight, grad_scale, grad_shift, grad_z); see the triton_op dwconv_bwd_weight.

    variant: "gather" (the (rows, taps, cols) kernel, every layout and kernel size), "taps" (nine shifted 2-D
    loads, channels_last 3x3 only, `wgrad_taps_config`), or None: `wgrad_variant`'s choice. Both fill the
    same partial sums. A `config` is a tile of the variant it is given with (name the variant with it)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    OH, OW = _output_hw(H, W, stride)
    cl = _is_channels_last(x)
    variant = variant or wgrad_variant(cl, x.dtype, N, C, H, W, stride, K)
    if variant not in WGRAD_VARIANTS:
        raise ValueError(f"variant must be one of {WGRAD_VARIANTS}, got {variant!r}")
    if variant != "gather" and not (cl and K == 3):
        raise ValueError(f"variant={variant!r} takes channels_last x and a 3x3 kernel, got "
                         f"{'channels_last' if cl else 'NCHW'} x and a {K}x{K} kernel")
    x, grad_y = _dense(x, cl), _dense(grad_y, cl)
    cpu = not x.is_cuda
    need_z = relu or scale is not None  # the pass recomputes z for relu's mask or for dscale
    cfg = config or (wgrad_taps_config(x.dtype, N, C, H, W, stride, need_z, cpu=cpu) if variant == "taps" else
                     wgrad_config(cl, C, H, W, stride, K, cpu=cpu))
    steps, groups, col_programs = wgrad_steps(cl, N, C, H, W, stride, cfg, programs)
    gz = _empty((N, C, OH, OW), x, cl) if store_grad_z else x.new_empty((0, 0, 0, 0))
    part = torch.empty((groups, K * K + 2, C), device=x.device, dtype=torch.float32)
    pointers = (x, grad_y, weight.contiguous(), scale if scale is not None else x,
                shift if shift is not None else x, gz if store_grad_z else x, part)
    epilogue = dict(HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, RELU=relu,
                    NEED_Z=need_z, STORE_GZ=store_grad_z)
    if variant == "taps":
        kernel, tile = _dwconv_bwd_weight_taps_kernel, dict(BLOCK_R=cfg.block_r)
    else:
        kernel, tile = _dwconv_bwd_weight_kernel, dict(K=K, KKP=_next_pow2(K * K), CHANNELS_LAST=cl,
                                                       BLOCK_R=cfg.block_r)
    _launch(
        kernel, (groups, col_programs), wrap, cfg.num_warps, x.device, *pointers, N, steps,
        C=C, H=H, W=W, STRIDE=stride, **tile, **epilogue, BLOCK_K=cfg.block_k,
    )  # fmt: skip
    return (*_finish_weight_grad(part, weight, scale, shift, wrap), gz)


def _finish_weight_grad(part: torch.Tensor, weight, scale, shift, wrap: bool):
    """(grad_weight, grad_scale, grad_shift) from the (G, K*K + 2, C) partial sums of a weight pass, added in a
    fixed order; grad_scale / grad_shift are empty where scale / shift is None."""
    groups, C = part.shape[0], part.shape[2]
    K, dev = weight.shape[-1], part.device
    grad_w = torch.empty((C, 1, K, K), device=dev, dtype=weight.dtype)
    grad_scale = torch.empty((C,) if scale is not None else (0,), device=dev,
                             dtype=scale.dtype if scale is not None else torch.float32)
    grad_shift = torch.empty((C,) if shift is not None else (0,), device=dev,
                             dtype=shift.dtype if shift is not None else torch.float32)
    block_c = min(_next_pow2(C), 128)
    _launch(
        _dwconv_wgrad_finish_kernel, (K * K + 2, _cdiv(C, block_c)), wrap, 4, dev,
        part, grad_w, grad_scale if scale is not None else part, grad_shift if shift is not None else part,
        groups, C=C, KK=K * K, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
        BLOCK_G=_FINISH_BLOCK_G, BLOCK_C=block_c,
    )  # fmt: skip
    return grad_w, grad_scale, grad_shift


def launch_bwd_fused(grad_y, x, weight, shift, wrap: bool = False, config=None,
                     programs: int = _WGRAD_TARGET_PROGRAMS, schedule: str = "tiles"):
    """(grad_x, grad_weight, grad_shift) in one pass (kernels/depthwise_backward.py), for channels_last x, a 3x3
    weight, stride 1 and an epilogue that leaves the gradient unchanged (shift alone, or none: grad_y is the
    gradient w.r.t. the conv output); grad_shift is empty when shift is None. schedule: "tiles" (pixel tiles of
    the whole batch; config a (BLOCK_R, BLOCK_K, num_warps) tile, by default bwd_fused_config's) or "window"
    (whole rows down each image; config (ROWS, BLOCK_K, num_warps), by default window_config's)."""
    N, C, H, W = x.shape
    if not _is_channels_last(x) or weight.shape[-2:] != (3, 3) or grad_y.shape != x.shape:
        raise ValueError(f"launch_bwd_fused takes channels_last x, a 3x3 weight and stride 1 (grad_y of x's "
                         f"shape), got x strides {x.stride()}, a {tuple(weight.shape[-2:])} kernel and grad_y "
                         f"{tuple(grad_y.shape)} for x {tuple(x.shape)}")
    if schedule not in FUSED_SCHEDULES:
        raise ValueError(f"schedule must be one of {FUSED_SCHEDULES}, got {schedule!r}")
    x, grad_y = _dense(x, True), _dense(grad_y, True)
    cpu = not x.is_cuda
    if schedule == "window":  # loop steps of ROWS rows of one image
        cfg, one_pass = config or _bwd.window_config(C, H, W, x.dtype, cpu=cpu), _bwd.window_pass
        steps, groups, col_programs = _split(N * _cdiv(H, cfg.block_r), _cdiv(C, cfg.block_k), programs)
    else:  # loop steps of BLOCK_R pixels of the whole batch
        cfg, one_pass = config or bwd_fused_config(C, cpu=cpu), _bwd.fused_pass
        steps, groups, col_programs = wgrad_steps(True, N, C, H, W, 1, cfg, programs)
    dx, part = one_pass(grad_y, x, weight, shift, cfg, steps, groups, col_programs, wrap=wrap)
    grad_w, _, grad_shift = _finish_weight_grad(part, weight, None, shift, wrap)
    return dx, grad_w, grad_shift


# ---------------------------------------------------------------------------------------------------------
# The same launchers as triton_ops, for torch.compile and torch.func (custom ops are traceable and unwrap
# functorch's tensors). Their outputs are fresh tensors, as custom ops require.

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
    return launch_fwd(x, weight, scale, shift, stride, relu, wrap=True)


@triton_op("cifar_zoo::dwconv_bwd_input", mutates_args={})
def dwconv_bwd_input(
    grad_z: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, stride: int
) -> torch.Tensor:
    """Gradient w.r.t. x, given grad_z w.r.t. the conv output; x supplies shape, dtype and layout."""
    return launch_bwd_input(grad_z, weight, x, stride, wrap=True)


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
    return launch_bwd_weight(grad_y, x, weight, scale, shift, stride, relu, store_grad_z, wrap=True)


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
    return launch_bwd_fused(grad_y, x, weight, shift, wrap=True, schedule=schedule)


# ---------------------------------------------------------------------------------------------------------
# Compiling ahead. Triton compiles a kernel at its first launch, about a second per variant on an H100 host,
# and every (C, H, W, stride, dtype, layout, epilogue) is a variant: a MobileNet's 9 layer shapes cost ~30 s
# at the first step. `precompile` runs each layer once at a small batch (the batch is not specialised on) in
# parallel processes, which fills Triton's on-disk cache for the calling process.

class Layer(NamedTuple):
    """One depthwise layer configuration to compile for (defaults: 3x3, no epilogue, bfloat16, NHWC)."""

    C: int
    H: int
    W: int
    stride: int = 1
    K: int = 3
    dtype: str = "bfloat16"  # torch dtype name of x
    channels_last: bool = True
    scale: bool = False
    shift: bool = False
    relu: bool = False
    weight_dtype: str = "float32"


def _compile_layer(layer: Layer) -> None:
    """Forward and backward of one layer at batch 16 on the GPU (in a worker process)."""
    C, H, W, stride, K = layer.C, layer.H, layer.W, layer.stride, layer.K
    fmt = torch.channels_last if layer.channels_last else torch.contiguous_format
    x = torch.randn(16, C, H, W, device="cuda", dtype=getattr(torch, layer.dtype)).to(memory_format=fmt)
    w = torch.randn(C, 1, K, K, device="cuda", dtype=getattr(torch, layer.weight_dtype))
    sc = torch.ones(C, device="cuda") if layer.scale else None
    sh = torch.zeros(C, device="cuda") if layer.shift else None
    y = launch_fwd(x, w, sc, sh, stride, layer.relu)
    backward_pass(y, x, w, sc, sh, stride, layer.relu, (True, True, layer.scale, layer.shift), eager=True)
    variants = {backward_variant(layer.channels_last, x.dtype, n, C, H, W, stride, K, layer.relu or layer.scale)
                for n in (16, _MAX_INDEX)}
    if len(variants) > 1:  # the batch decides between one pass and two (in 16 bits): compile the two passes too
        for needs in ((True, False, False, False), (False, True, False, layer.shift)):
            backward_pass(y, x, w, sc, sh, stride, layer.relu, needs, eager=True)
    torch.cuda.synchronize()


def _in_processes(fn, jobs: list, workers: int | None = None) -> None:
    """fn over jobs in spawned worker processes (each with its own CUDA context)."""
    import concurrent.futures
    import multiprocessing
    import os

    jobs = list(dict.fromkeys(jobs))  # unique, in order
    if not jobs:
        return
    workers = workers or max(1, min(16, (os.cpu_count() or 2) - 1, len(jobs)))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def precompile(layers: list[Layer], workers: int | None = None) -> None:
    """Compile the CUDA kernels of every layer ahead, in parallel processes (see the comment above)."""
    _in_processes(_compile_layer, [Layer(*layer) for layer in layers], workers)


# ---------------------------------------------------------------------------------------------------------
# Autograd binding.

_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _eager(*tensors) -> bool:
    """True when the launchers may run directly: no compilation or tracing, no functorch wrappers."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return all(t is None or (type(t) in _PLAIN_TENSOR_TYPES and not wrapped(t)) for t in tensors)


class _DepthwiseConv2dFn(torch.autograd.Function):
    """Triton forward and backward; setup_context is separate so that torch.func transforms work."""

    @staticmethod
    def forward(x, weight, scale, shift, stride, relu):
        if _eager(x, weight, scale, shift):
            return launch_fwd(x, weight, scale, shift, stride, relu)
        return dwconv_fwd(x, weight, scale, shift, stride, relu)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, scale, shift, stride, relu = inputs
        ctx.save_for_backward(x, weight, scale, shift)
        ctx.stride, ctx.relu = stride, relu

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, scale, shift = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        eager = _eager(grad_y, x, weight, scale, shift)
        # no_grad: the ops have no derivative (no double backward), and under torch.func.grad the saved
        # tensors still track the outer level, which would send the ops through their autograd wrapper.
        with torch.no_grad():
            grads = backward_pass(grad_y, x, weight, scale, shift, ctx.stride, ctx.relu, needs, eager)
        return (*grads, None, None)


def backward_pass(grad_y, x, weight, scale, shift, stride: int, relu: bool, needs, eager: bool):
    """(grad_x, grad_weight, grad_scale, grad_shift) of y = relu(dwconv(x) * scale + shift), None where
    needs (four bools, for x, weight, scale, shift) is False: the launchers (eager) or the triton_ops, in one
    pass where backward_variant says so, else the weight pass (whose grad_z, where a relu or a scale changes
    the gradient, feeds the grad-input pass) and then the grad-input pass."""
    need_x, need_w, need_scale, need_shift = needs
    # The gradient w.r.t. the conv output differs from grad_y only through relu's mask and the scale.
    changes_grad = relu or scale is not None
    N, C, H, W = x.shape
    variant = "split"
    if need_x and need_w:
        variant = backward_variant(_is_channels_last(x), x.dtype, N, C, H, W, stride, weight.shape[-1], changes_grad)
    if variant != "split":
        grad_x, grad_w, grad_shift = (launch_bwd_fused if eager else dwconv_bwd_fused)(
            grad_y, x, weight, shift, schedule=FUSED_SCHEDULE[variant])
        return grad_x, grad_w, None, grad_shift if need_shift else None
    need_weight_pass = need_w or need_scale or need_shift or (need_x and changes_grad)
    store_gz = need_x and changes_grad
    grad_x = grad_w = grad_scale = grad_shift = None
    grad_z = grad_y
    if need_weight_pass:
        args = (grad_y, x, weight, scale, shift, stride, relu, store_gz)
        grad_w, grad_scale, grad_shift, gz = (launch_bwd_weight if eager else dwconv_bwd_weight)(*args)
        if store_gz:
            grad_z = gz
    if need_x:
        grad_x = (launch_bwd_input if eager else dwconv_bwd_input)(grad_z, weight, x, stride)
    return (
        grad_x,
        grad_w if need_w else None,
        grad_scale if need_scale else None,
        grad_shift if need_shift else None,
    )


def _check_triton_args(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dtype not in TRITON_DTYPES:
        raise ValueError(f"the Triton path takes x of dtype {TRITON_DTYPES}, got {x.dtype}")
    if weight.shape[-1] not in TRITON_KERNEL_SIZES:
        raise ValueError(f"the Triton path takes kernel sizes {TRITON_KERNEL_SIZES}, got {weight.shape[-1]}")
    if x.numel() > _MAX_INDEX:
        raise ValueError(f"x has {x.numel()} elements; the kernels index in int32 (at most {_MAX_INDEX})")
    if not (x.is_cuda or x.device.type == "cpu"):
        raise ValueError(f"the Triton path runs on CUDA (or the CPU interpreter), not {x.device}")


def _triton_supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.is_cuda and x.dtype in TRITON_DTYPES and weight.shape[-1] in TRITON_KERNEL_SIZES
            and x.numel() <= _MAX_INDEX)  # fmt: skip


def triton_preferred(channels_last: bool, dtype: torch.dtype, H: int, W: int, stride: int, fused: bool) -> bool:
    """impl="auto" on CUDA: Triton, except where PyTorch (cuDNN) measured faster on the H100.

    From bench/results/depthwise-h100.md (forward+backward, CUDA-graph times, batch 256 and 512; at the
    benchmark's old shape list, which missed four of the nets' layers, README "Triton kernels"): in NCHW the
    kernels beat PyTorch's NCHW path at every layer (1.3-20x); with a fused epilogue (scale, shift, relu)
    PyTorch needs extra elementwise passes and the kernels won 1.8-2.3x (bfloat16, the layers where cuDNN
    wins unfused). Unfused channels_last: in 16-bit, cuDNN was faster at stride 1 with outputs of 8x8 pixels
    or more (the kernels reached 0.71-0.95 of its speed), the kernels at stride 2 (1.1-2.3x) and at 4x4 and
    2x2 (1.1-3.9x); in float32, cuDNN was faster everywhere except at 2x2 outputs (1.3-1.7x).
    With the rows schedule and at the nets' own layers (H200, bench/results/depthwise-h200.md) the kernels
    were faster than cuDNN at more shapes than this rule gives them (bf16 channels_last: 1.01-1.60x at all but
    one of 30 cases), yet MobileNetV1's whole step with the kernels at every 16-bit layer ran as fast as under
    this rule (1.00x, bench/results/h200-mobilenetv1-rule.md), so the rule stays; with the one-pass backward
    too, 1.01x / 1.00x (cudnn.benchmark off / on, bench/results/h200-mobilenetv1-one-pass.md).
    """
    if fused or not channels_last:
        return True
    OH, OW = _output_hw(H, W, stride)
    if dtype == torch.float32:
        return OH * OW <= 4
    return stride == 2 or OH * OW <= 16


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
    _check_args(x, weight, stride, scale, shift, impl)
    if impl == "auto":
        fused = scale is not None or shift is not None or relu
        use_triton = _triton_supports(x, weight) and triton_preferred(
            _is_channels_last(x), x.dtype, x.shape[2], x.shape[3], stride, fused)
        impl = "triton" if use_triton else "reference"
    if impl == "reference":
        return reference_depthwise_conv2d(x, weight, stride, scale, shift, relu)
    _check_triton_args(x, weight)
    return _DepthwiseConv2dFn.apply(x, weight, scale, shift, stride, bool(relu))


# The rows schedule lives in its own file and imports this module's helpers, so it is imported last (either
# module may be imported first: the package attribute falls back to sys.modules while one is initialising).
from kernels import depthwise_backward as _bwd  # noqa: E402
from kernels import depthwise_rows as _rows  # noqa: E402
