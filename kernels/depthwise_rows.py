"""The "rows" schedule for the channels_last depthwise 3x3 forward (and the stride-1 grad-input pass,
which is the same convolution of grad_z with the kernel flipped), measured against kernels.depthwise's tiles.

Why: at the nets' large layers the tiled forward reaches about 40% of the device copy bandwidth
(bench/results/depthwise-h200.md). A tile there holds 16-64 pixels of one or two image rows, so the rows above and
below come from other programs through the L2: each input pixel is loaded by about three programs and nine times
in all. Here a program owns whole output rows of one image (all OW pixels x BLOCK_K channels) and walks down
ROWS of them, keeping the three input rows under its window in registers, each as three tiles shifted by one
pixel: per output row it loads one new input row (three shifted loads, the two extra hitting the L1) at stride 1
and two at stride 2, so ROWS output rows read ROWS + 2 input rows (2 ROWS + 1 at stride 2).

    y[n, oh, ow, c] = relu(scale[c] * sum_{kh, kw} x[n, oh*s - 1 + kh, ow*s - 1 + kw, c] * w[c, kh, kw] + shift[c])

FLIP reads w[c, 2 - kh, 2 - kw]: with stride 1 and no epilogue that is grad_x from grad_z (a transposed stride-1
convolution). kernels.depthwise's launchers run it where it measured faster (pointwise_variant). The tests
compare it with kernels.depthwise.reference_depthwise_conv2d (tests/test_depthwise_rows.py, and through the
launchers tests/test_depthwise.py); results/depthwise-rows.py times it against the tiles.
"""

import torch
import triton
import triton.language as tl

from kernels.depthwise import LaunchConfig, _cdiv, _launch, _next_pow2, _output_hw

__all__ = ["launch_rows", "rows_config"]


# The fastest (ROWS, BLOCK_K, num_warps) per (C, H, stride) of the nets' layers where it beat the rule in
# rows_config by 3% or more, bfloat16, geometric mean over batch 256 and 512, forward and stride-1 grad-input
# alike (H200, results/h200-2026-12-01k.log). Float32 runs the same tiles (not tuned apart).
_MEASURED = {(32, 32, 1): (8, 32, 4), (64, 32, 1): (8, 32, 4), (128, 32, 1): (4, 64, 4), (256, 32, 1): (4, 64, 4),
             (128, 16, 1): (4, 32, 4), (256, 16, 1): (4, 128, 4), (728, 16, 1): (4, 128, 4), (256, 8, 1): (8, 128, 4),
             (728, 8, 1): (8, 128, 4), (256, 8, 2): (2, 256, 4)}  # fmt: skip


def rows_config(C: int, H: int, W: int, stride: int, cpu: bool = False) -> LaunchConfig:
    """(ROWS, BLOCK_K, num_warps): _MEASURED at the nets' layers; elsewhere 4 output rows a program and BLOCK_K
    channels so that a row tile holds about 1024 elements (ten of them live at once: nine shifted inputs and
    the accumulator)."""
    if cpu:  # the interpreter: few programs
        return LaunchConfig(8, 64, 1)
    if H == W and (C, H, stride) in _MEASURED:
        return LaunchConfig(*_MEASURED[C, H, stride])
    OW = _output_hw(H, W, stride)[1]
    return LaunchConfig(4, max(32, min(256, _next_pow2(C), 1024 // _next_pow2(OW))), 4)


@triton.jit
def _row(x_ptr, row, ok, col0, col1, col2, ok0, ok1, ok2, H: tl.constexpr, W: tl.constexpr, C: tl.constexpr):
    """Input row `row` of the program's image under the three kernel columns: three (BLOCK_W, BLOCK_K) tiles in
    x's dtype, 0 outside the image (row < 0 or >= H, or a padded column)."""
    ok = ok & (row >= 0) & (row < H)
    base = x_ptr + row * (W * C)
    return (tl.load(base + col0, mask=ok & ok0, other=0.0), tl.load(base + col1, mask=ok & ok1, other=0.0),
            tl.load(base + col2, mask=ok & ok2, other=0.0))  # fmt: skip


@triton.jit
def _w(w_ptr, c, c_ok, T: tl.constexpr, FLIP: tl.constexpr):
    """weight[c, tap T] (or tap 8 - T when FLIP) of a (C, 9) weight, float32, as a (1, BLOCK_K) row."""
    return tl.load(w_ptr + c * 9 + (8 - T if FLIP else T), mask=c_ok, other=0.0).to(tl.float32)


@triton.jit
def _dot3(a0, a1, a2, w0, w1, w2):
    return a0.to(tl.float32) * w0 + a1.to(tl.float32) * w1 + a2.to(tl.float32) * w2


@triton.jit(do_not_specialize=["N"])
def _dwconv_rows_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, y_ptr, N,
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr, FLIP: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr,
):
    OH: tl.constexpr = (H - 1) // STRIDE + 1
    OW: tl.constexpr = (W - 1) // STRIDE + 1
    CHUNKS: tl.constexpr = (OH + ROWS - 1) // ROWS  # programs along an image's output rows
    n = tl.program_id(0) // CHUNKS
    oh0 = (tl.program_id(0) % CHUNKS) * ROWS
    ow = tl.arange(0, BLOCK_W)[:, None]  # (BLOCK_W, 1)
    c = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]  # (1, BLOCK_K)
    c_ok = c < C
    ok = (ow < OW) & c_ok
    iw = ow * STRIDE - 1  # the window's first column
    ok0, ok1, ok2 = iw >= 0, iw + 1 < W, iw + 2 < W
    col0, col1, col2 = iw * C + c, (iw + 1) * C + c, (iw + 2) * C + c
    x_img = x_ptr + n * (H * W * C)
    y_img = y_ptr + n * (OH * OW * C)
    w0, w1, w2 = _w(w_ptr, c, c_ok, 0, FLIP), _w(w_ptr, c, c_ok, 1, FLIP), _w(w_ptr, c, c_ok, 2, FLIP)
    w3, w4, w5 = _w(w_ptr, c, c_ok, 3, FLIP), _w(w_ptr, c, c_ok, 4, FLIP), _w(w_ptr, c, c_ok, 5, FLIP)
    w6, w7, w8 = _w(w_ptr, c, c_ok, 6, FLIP), _w(w_ptr, c, c_ok, 7, FLIP), _w(w_ptr, c, c_ok, 8, FLIP)
    sc, sh = 1.0, 0.0
    if HAS_SCALE:
        sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    top = oh0 * STRIDE - 1  # the input row under the window's first row, at output row oh0
    a0, a1, a2 = _row(x_img, top, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C)
    b0, b1, b2 = _row(x_img, top + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C)
    for i in range(ROWS):
        oh = oh0 + i
        d0, d1, d2 = _row(x_img, oh * STRIDE + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C)
        acc = _dot3(a0, a1, a2, w0, w1, w2) + _dot3(b0, b1, b2, w3, w4, w5) + _dot3(d0, d1, d2, w6, w7, w8)
        if HAS_SCALE:
            acc = acc * sc
        if HAS_SHIFT:
            acc = acc + sh
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(y_img + (oh * OW + ow) * C + c, acc.to(y_ptr.dtype.element_ty), mask=ok & (oh < OH))
        if STRIDE == 1:  # the window moves down one input row
            a0, a1, a2 = b0, b1, b2
            b0, b1, b2 = d0, d1, d2
        else:  # two rows: the last row becomes the first, the middle one is new
            a0, a1, a2 = d0, d1, d2
            b0, b1, b2 = _row(x_img, oh * STRIDE + 2, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C)


def launch_rows(x: torch.Tensor, weight: torch.Tensor, scale, shift, stride: int, relu: bool,
                flip: bool = False, wrap: bool = False, config: LaunchConfig | None = None) -> torch.Tensor:
    """The rows schedule of kernels.depthwise.launch_fwd, for a channels_last x and a 3x3 weight (C, 1, 3, 3);
    flip=True (stride 1, no epilogue) gives grad_x from grad_z passed as x."""
    N, C, H, W = x.shape
    if weight.shape[-2:] != (3, 3) or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"launch_rows takes a channels_last x and a 3x3 weight, got x strides {x.stride()} "
                         f"and a {tuple(weight.shape[-2:])} kernel")
    if flip and (stride != 1 or scale is not None or shift is not None or relu):
        raise ValueError("flip=True is the stride-1 grad-input pass: stride 1 and no scale, shift or relu")
    OH, OW = _output_hw(H, W, stride)
    y = torch.empty((N, C, OH, OW), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    cfg = config or rows_config(C, H, W, stride, cpu=not x.is_cuda)
    grid = (N * _cdiv(OH, cfg.block_r), _cdiv(C, cfg.block_k))
    _launch(
        _dwconv_rows_kernel, grid, wrap, cfg.num_warps, x.device,
        x, weight.contiguous(), scale if scale is not None else x, shift if shift is not None else x, y, N,
        C=C, H=H, W=W, STRIDE=stride, FLIP=flip, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
        RELU=relu, ROWS=cfg.block_r, BLOCK_W=_next_pow2(OW), BLOCK_K=cfg.block_k,
    )  # fmt: skip
    return y
