"""The rows schedule: the channels_last depthwise 3x3 forward, and the stride-1 grad-input pass (the same
convolution of grad_z with the kernel flipped).

    y[n, oh, ow, c] = relu(scale[c] * sum_{kh, kw} x[n, oh*s - 1 + kh, ow*s - 1 + kw, c] * w[c, kh, kw] + shift[c])

A program owns whole output rows of one image (all OW pixels x BLOCK_K channels) and walks down ROWS of them,
keeping the three input rows under its window in registers, each as three tiles shifted by one pixel:

    for oh in the program's ROWS output rows:
        load input row oh*s + 1 (three shifted tiles; the two extra loads hit the L1)
        y[oh] = the window's three rows . w       (then the epilogue)
        slide the window down by s rows           (at stride 2, load one more row)

Memory traffic: ROWS output rows read ROWS + 2 input rows (2 ROWS + 1 at stride 2), against the tile schedule
(kernels.depthwise.tiles), whose programs each load their tile's neighbour rows again through the L2. FLIP reads
w[c, 2 - kh, 2 - kw]: with stride 1 and no epilogue that is grad_x from grad_z.

The launchers take it where it measured faster than the tiles (rules.pointwise_variant), with
rules.rows_config's tiles: `python -m bench depthwise tune=rows`.
"""

import torch
import triton
import triton.language as tl

from kernels.depthwise.contract import output_hw
from kernels.depthwise.helpers import (
    LaunchConfig,
    affine_relu,
    cdiv,
    empty_in_layout,
    flippable_tap_weight,
    launch,
    load_row_tiles,
    next_pow2,
    window_conv,
)
from kernels.depthwise.rules import rows_config


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
        b0, b1, b2 = load_row_tiles(x_img, next_row, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
    return a0, a1, a2, b0, b1, b2


@triton.jit(do_not_specialize=["N"])
def _dwconv_rows_kernel(
    # pointers
    x_ptr, w_ptr, scale_ptr, shift_ptr, y_ptr,
    # sizes: the batch is the only run-time size
    N,
    # compile-time: geometry, flip, epilogue, upcast at the load, tile (ROWS output rows of BLOCK_W x BLOCK_K)
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
    w0 = flippable_tap_weight(w_ptr, c, c_ok, 0, FLIP)
    w1 = flippable_tap_weight(w_ptr, c, c_ok, 1, FLIP)
    w2 = flippable_tap_weight(w_ptr, c, c_ok, 2, FLIP)
    w3 = flippable_tap_weight(w_ptr, c, c_ok, 3, FLIP)
    w4 = flippable_tap_weight(w_ptr, c, c_ok, 4, FLIP)
    w5 = flippable_tap_weight(w_ptr, c, c_ok, 5, FLIP)
    w6 = flippable_tap_weight(w_ptr, c, c_ok, 6, FLIP)
    w7 = flippable_tap_weight(w_ptr, c, c_ok, 7, FLIP)
    w8 = flippable_tap_weight(w_ptr, c, c_ok, 8, FLIP)
    sc, sh = 1.0, 0.0  # the identity where the epilogue has no scale or shift
    if HAS_SCALE:
        sc = tl.load(scale_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    x_img = x_ptr + n * (H * W * C)
    y_img = y_ptr + n * (OH * OW * C)
    top = oh0 * STRIDE - 1  # the input row under the window's first row, at output row oh0
    a0, a1, a2 = load_row_tiles(x_img, top, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
    b0, b1, b2 = load_row_tiles(x_img, top + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
    for i in range(ROWS):
        oh = oh0 + i
        d0, d1, d2 = load_row_tiles(x_img, oh * STRIDE + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, UPCAST)
        acc = window_conv(a0, a1, a2, b0, b1, b2, d0, d1, d2, w0, w1, w2, w3, w4, w5, w6, w7, w8)
        acc = affine_relu(acc, sc, sh, HAS_SCALE, HAS_SHIFT, RELU)
        tl.store(y_img + (oh * OW + ow) * C + c, acc.to(y_ptr.dtype.element_ty), mask=ok & (oh < OH))
        a0, a1, a2, b0, b1, b2 = _slide(b0, b1, b2, d0, d1, d2, x_img, oh * STRIDE + 2, ok, col0, col1, col2,
                                        ok0, ok1, ok2, H, W, C, STRIDE, UPCAST)


def launch_rows(x: torch.Tensor, weight: torch.Tensor, scale, shift, stride: int, relu: bool,
                flip: bool = False, wrap: bool = False, config: LaunchConfig | None = None,
                upcast: bool = False) -> torch.Tensor:
    """The rows schedule of the forward, for a channels_last x and a 3x3 weight (C, 1, 3, 3): y in x's dtype,
    channels_last; config (ROWS, BLOCK_K, num_warps), by default rules.rows_config's. flip=True (stride 1, no
    epilogue) gives grad_x from grad_z passed as x. upcast=True converts each input tile to float32 once, as it
    is loaded, rather than at each of its three uses (16-bit x: fewer conversions, more registers); it measured
    slower at most layers and no launcher takes it (`python -m bench depthwise tune=rows` times both)."""
    N, C, H, W = x.shape
    if weight.shape[-2:] != (3, 3) or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"launch_rows takes a channels_last x and a 3x3 weight, got x strides {x.stride()} "
                         f"and a {tuple(weight.shape[-2:])} kernel")
    if flip and (stride != 1 or scale is not None or shift is not None or relu):
        raise ValueError("flip=True is the stride-1 grad-input pass: stride 1 and no scale, shift or relu")
    OH, OW = output_hw(H, W, stride)
    y = empty_in_layout((N, C, OH, OW), x, channels_last=True)
    cfg = config or rows_config(C, H, W, stride, x.dtype, cpu=not x.is_cuda)
    grid = (N * cdiv(OH, cfg.block_r), cdiv(C, cfg.block_k))
    launch(
        _dwconv_rows_kernel, grid, wrap, cfg.num_warps, x.device,
        x, weight.contiguous(), scale if scale is not None else x, shift if shift is not None else x, y, N,
        C=C, H=H, W=W, STRIDE=stride, FLIP=flip, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
        RELU=relu, UPCAST=upcast, ROWS=cfg.block_r, BLOCK_W=next_pow2(OW), BLOCK_K=cfg.block_k,
    )  # fmt: skip
    return y
