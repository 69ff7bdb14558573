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

A weight pass on this schedule (nine accumulators per program, gz * x summed down the rows) ran 0.99x the taps
kernel in bf16 and 0.89x in fp32 (bench/results/wgrad-h200-with-rows.md, 2026-12-01) and was removed after that run.
"""

import torch
import triton
import triton.language as tl

from kernels.depthwise import LaunchConfig, _affine_relu, _cdiv, _empty, _launch, _next_pow2, _output_hw

__all__ = ["launch_rows", "rows_config"]


# The fastest (ROWS, BLOCK_K, num_warps) per (C, H, stride) of the nets' layers where it beat the rule in
# rows_config by 3% or more, geometric mean over batch 256 and 512, forward and stride-1 grad-input alike (H200):
# for 16-bit inputs from bfloat16 runs (results/h200-2026-12-01k.log; then the 128- and 256-channel tiles at
# 128x32, 256x32, 256x16 and 728x16, 1.12-1.19x over the k run's, results/h200-2026-12-01n.log); for float32
# from the n run's float32 rows (the k run's tiles where none beat them by 3%). They part where 16-bit tiles
# grew: float32's registers run out first (256 channels at 32x32: 444 against 367 µs at BLOCK_K 128 and 64).
_MEASURED = {(32, 32, 1): (8, 32, 4), (64, 32, 1): (8, 32, 4), (128, 32, 1): (4, 128, 4), (256, 32, 1): (4, 128, 4),
             (128, 16, 1): (4, 32, 4), (256, 16, 1): (4, 256, 4), (728, 16, 1): (4, 256, 4), (256, 8, 1): (8, 128, 4),
             (728, 8, 1): (8, 128, 4), (256, 8, 2): (2, 256, 4)}  # fmt: skip
_MEASURED_FP32 = {(32, 32, 1): (8, 32, 4), (64, 32, 1): (8, 32, 4), (64, 32, 2): (4, 32, 4), (128, 32, 1): (4, 64, 8),
                  (256, 32, 1): (4, 64, 8), (128, 16, 1): (4, 64, 4), (128, 16, 2): (2, 128, 4),
                  (256, 16, 1): (4, 128, 4), (728, 16, 1): (2, 128, 4), (256, 8, 1): (8, 128, 4),
                  (728, 8, 1): (8, 128, 4), (256, 8, 2): (2, 128, 4)}  # fmt: skip


def rows_config(C: int, H: int, W: int, stride: int, dtype: torch.dtype = torch.bfloat16,
                cpu: bool = False) -> LaunchConfig:
    """(ROWS, BLOCK_K, num_warps) for x of `dtype`: _MEASURED (16-bit) or _MEASURED_FP32 at the nets' layers;
    elsewhere 4 output rows a program and BLOCK_K channels so that a row tile holds about 1024 elements (ten
    of them live at once: nine shifted inputs and the accumulator)."""
    if cpu:  # the interpreter: few programs
        return LaunchConfig(8, 64, 1)
    table = _MEASURED_FP32 if dtype == torch.float32 else _MEASURED
    if H == W and (C, H, stride) in table:
        return LaunchConfig(*table[C, H, stride])
    OW = _output_hw(H, W, stride)[1]
    return LaunchConfig(4, max(32, min(256, _next_pow2(C), 1024 // _next_pow2(OW))), 4)


@triton.jit
def _row(x_ptr, row, ok, col0, col1, col2, ok0, ok1, ok2, H: tl.constexpr, W: tl.constexpr, C: tl.constexpr,
         UPCAST: tl.constexpr):
    """Input row `row` of the program's image under the three kernel columns: three (BLOCK_W, BLOCK_K) tiles in
    x's dtype (float32 if UPCAST), 0 outside the image (row < 0 or >= H, or a padded column)."""
    ok = ok & (row >= 0) & (row < H)
    base = x_ptr + row * (W * C)
    t0 = tl.load(base + col0, mask=ok & ok0, other=0.0)
    t1 = tl.load(base + col1, mask=ok & ok1, other=0.0)
    t2 = tl.load(base + col2, mask=ok & ok2, other=0.0)
    if UPCAST:  # (one return statement: Triton's code generator takes no early return here)
        t0, t1, t2 = t0.to(tl.float32), t1.to(tl.float32), t2.to(tl.float32)
    return t0, t1, t2


@triton.jit
def _w(w_ptr, c, c_ok, T: tl.constexpr, FLIP: tl.constexpr):
    """weight[c, tap T] (or tap 8 - T when FLIP) of a (C, 9) weight, float32, as a (1, BLOCK_K) row."""
    return tl.load(w_ptr + c * 9 + (8 - T if FLIP else T), mask=c_ok, other=0.0).to(tl.float32)


@triton.jit
def _dot3(a0, a1, a2, w0, w1, w2):
    return a0.to(tl.float32) * w0 + a1.to(tl.float32) * w1 + a2.to(tl.float32) * w2


@triton.jit
def _window_conv(a0, a1, a2, b0, b1, b2, d0, d1, d2, w0, w1, w2, w3, w4, w5, w6, w7, w8):
    """The 3x3 convolution at each pixel of an output row from its window's three rows, in float32."""
    return _dot3(a0, a1, a2, w0, w1, w2) + _dot3(b0, b1, b2, w3, w4, w5) + _dot3(d0, d1, d2, w6, w7, w8)


@triton.jit
def _slide(b0, b1, b2, d0, d1, d2, x_img, next_row, ok, col0, col1, col2, ok0, ok1, ok2,
           H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, STRIDE: tl.constexpr, UPCAST: tl.constexpr):
    """The window's first two rows at the next output row: at stride 1 one row down (the middle and last rows
    move up); at stride 2 two rows down (the last row becomes the first, and input row next_row is loaded)."""
    if STRIDE == 1:
        a0, a1, a2 = b0, b1, b2
        b0, b1, b2 = d0, d1, d2
    else:
        a0, a1, a2 = d0, d1, d2
        b0, b1, b2 = _row(x_img, next_row, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
    return a0, a1, a2, b0, b1, b2


@triton.jit(do_not_specialize=["N"])
def _dwconv_rows_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, y_ptr, N,
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, STRIDE: tl.constexpr, FLIP: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr, UPCAST: tl.constexpr,
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
    iw = ow * STRIDE - 1  # each output column's first input column
    col0, col1, col2 = iw * C + c, (iw + 1) * C + c, (iw + 2) * C + c  # the three kernel columns' offsets
    ok0, ok1, ok2 = iw >= 0, iw + 1 < W, iw + 2 < W  # and masks
    w0, w1, w2 = _w(w_ptr, c, c_ok, 0, FLIP), _w(w_ptr, c, c_ok, 1, FLIP), _w(w_ptr, c, c_ok, 2, FLIP)
    w3, w4, w5 = _w(w_ptr, c, c_ok, 3, FLIP), _w(w_ptr, c, c_ok, 4, FLIP), _w(w_ptr, c, c_ok, 5, FLIP)
    w6, w7, w8 = _w(w_ptr, c, c_ok, 6, FLIP), _w(w_ptr, c, c_ok, 7, FLIP), _w(w_ptr, c, c_ok, 8, FLIP)
    sc, sh = 1.0, 0.0  # the identity where the epilogue has no scale or shift
    if HAS_SCALE:
        sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    x_img = x_ptr + n * (H * W * C)
    y_img = y_ptr + n * (OH * OW * C)
    top = oh0 * STRIDE - 1  # the input row under the window's first row, at output row oh0
    a0, a1, a2 = _row(x_img, top, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
    b0, b1, b2 = _row(x_img, top + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
    for i in range(ROWS):
        oh = oh0 + i
        d0, d1, d2 = _row(x_img, oh * STRIDE + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
        acc = _window_conv(a0, a1, a2, b0, b1, b2, d0, d1, d2, w0, w1, w2, w3, w4, w5, w6, w7, w8)
        acc = _affine_relu(acc, sc, sh, HAS_SCALE, HAS_SHIFT, RELU)
        tl.store(y_img + (oh * OW + ow) * C + c, acc.to(y_ptr.dtype.element_ty), mask=ok & (oh < OH))
        a0, a1, a2, b0, b1, b2 = _slide(b0, b1, b2, d0, d1, d2, x_img, oh * STRIDE + 2, ok, col0, col1, col2,
                                        ok0, ok1, ok2, H, W, C, STRIDE, UPCAST)


def launch_rows(x: torch.Tensor, weight: torch.Tensor, scale, shift, stride: int, relu: bool,
                flip: bool = False, wrap: bool = False, config: LaunchConfig | None = None,
                upcast: bool = False) -> torch.Tensor:
    """The rows schedule of kernels.depthwise.launch_fwd, for a channels_last x and a 3x3 weight (C, 1, 3, 3);
    flip=True (stride 1, no epilogue) gives grad_x from grad_z passed as x. upcast=True converts each input
    tile to float32 once, as it is loaded, rather than at each of its three uses (16-bit x: fewer conversions,
    more registers). Measured in bf16 on the H200 (results/depthwise-rows.py, bench/results/depthwise-rows-h200.json):
    0.96x in geometric mean forward, 0.93x grad-input; faster at the stride-2 layers (1.01-1.14x) and the 4x4
    layers of 1024 and 1536 channels (1.06-1.15x), slower at most stride-1 layers of 8x8 and up (0.74-1.03x).
    Off by default; no launcher picks it per layer yet, the gains being a few µs at the smallest layers."""
    N, C, H, W = x.shape
    if weight.shape[-2:] != (3, 3) or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"launch_rows takes a channels_last x and a 3x3 weight, got x strides {x.stride()} "
                         f"and a {tuple(weight.shape[-2:])} kernel")
    if flip and (stride != 1 or scale is not None or shift is not None or relu):
        raise ValueError("flip=True is the stride-1 grad-input pass: stride 1 and no scale, shift or relu")
    OH, OW = _output_hw(H, W, stride)
    y = _empty((N, C, OH, OW), x, channels_last=True)  # by strides: see _empty
    cfg = config or rows_config(C, H, W, stride, x.dtype, cpu=not x.is_cuda)
    grid = (N * _cdiv(OH, cfg.block_r), _cdiv(C, cfg.block_k))
    _launch(
        _dwconv_rows_kernel, grid, wrap, cfg.num_warps, x.device,
        x, weight.contiguous(), scale if scale is not None else x, shift if shift is not None else x, y, N,
        C=C, H=H, W=W, STRIDE=stride, FLIP=flip, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
        RELU=relu, UPCAST=upcast, ROWS=cfg.block_r, BLOCK_W=_next_pow2(OW), BLOCK_K=cfg.block_k,
    )  # fmt: skip
    return y
