"""The depthwise 3x3 backward in one pass: grad_x and the weight gradient together, for channels_last, stride 1 and
an epilogue that leaves the gradient unchanged (none, or a shift alone), as the nets call it in training.

Apart, the weight pass reads grad_y and x, and the grad-input pass reads grad_y again and writes grad_x. At
stride 1, x, grad_y and grad_x have one shape, and the nine pixel offsets of the weight gradient's taps are those
of the grad-input pass's taps:

    gw[c, kh, kw] = sum_p g[p] * x[p + (kh - 1, kw - 1)]
    dx[p]         = sum_{kh, kw} g[p + (1 - kh, 1 - kw)] * w[c, kh, kw]

so grad_y is read from memory once: the least any backward moves, read grad_y and x, write grad_x. Two schedules
write the same (G, 9 + 2, C) partial sums as the weight passes, for kernels.depthwise.weight's finishing kernel:

"tiles" (fused_pass): one program per (BLOCK_R pixels of the whole batch, BLOCK_K channels) tile loads x and g at
    each of the nine offsets with one address and one mask, adds g[p] * x[p + o] to the tap's accumulator and
    g[p + o] * w[c, 1 - o] to dx: eighteen loads a pixel sharing nine address computations.
"window" (window_pass): a program owns whole rows (all W pixels x BLOCK_K channels) of ROWS consecutive rows of
    one image and walks down them, as the rows schedule's forward does, keeping grad_y's three rows under the
    window in registers, each as three tiles shifted by one pixel. The weight gradient is summed from x's side,
        gw[c, kh, kw] = sum_q x[q] * g[q + (1 - kh, 1 - kw)]    (q = p + (kh - 1, kw - 1) in the tiles' sum)
    so the nine g tiles that give dx at row h (the flipped kernel) also give the nine taps' products with x at
    row h: per row one new g row (three shifted loads, two of them L1 hits) and one x row, four loads a pixel.

rules.backward_variant takes each where it measured faster than the two passes, with rules.bwd_fused_config's
and rules.window_config's tiles: `python -m bench depthwise tune=backward`.
"""

import torch
import triton
import triton.language as tl

from kernels.depthwise.helpers import (
    LaunchConfig,
    empty_in_layout,
    flippable_tap_weight,
    launch,
    load_row_tiles,
    next_pow2,
    store_parts3x3,
    tap_weight,
    window_conv,
)


@triton.jit
def _zeros10(R: tl.constexpr, K: tl.constexpr):
    """Ten (R, K) float32 zero tiles: the nine taps' accumulators and the shift's."""
    z = tl.zeros((R, K), dtype=tl.float32)
    return z, z, z, z, z, z, z, z, z, z


@triton.jit
def _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, DH: tl.constexpr, DW: tl.constexpr,
           C: tl.constexpr, H: tl.constexpr, W: tl.constexpr):
    """x and g at pixel (oh + DH, ow + DW) of each row's image: two float32 tiles, 0 outside the image."""
    ih = oh + DH
    iw = ow + DW
    ok = valid & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    off = ((n * H + ih) * W + iw) * C + c
    return (tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32),
            tl.load(g_ptr + off, mask=ok, other=0.0).to(tl.float32))


@triton.jit(do_not_specialize=["N", "STEPS"])
def _dwconv_bwd_fused_kernel(
    # pointers: x, grad_y in; weight (C, 9); dx out (x's dtype); part (G, 9 + 2, C) float32 partial sums
    x_ptr, g_ptr, w_ptr, dx_ptr, part_ptr,
    # sizes; STEPS: loop steps per program, each BLOCK_R pixels of the whole batch
    N, STEPS,
    # compile-time: geometry, epilogue (a shift: its gradient is the sum of g), tile
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, HAS_SHIFT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    ar = tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
    c1 = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,): channels, fixed per program
    c = c1[None, :]  # (1, BLOCK_K)
    c_ok = c < C
    w00 = tap_weight(w_ptr, c, c_ok, 0)  # (1, BLOCK_K) each: the weight per tap (kh, kw)
    w01 = tap_weight(w_ptr, c, c_ok, 1)
    w02 = tap_weight(w_ptr, c, c_ok, 2)
    w10 = tap_weight(w_ptr, c, c_ok, 3)
    w11 = tap_weight(w_ptr, c, c_ok, 4)
    w12 = tap_weight(w_ptr, c, c_ok, 5)
    w20 = tap_weight(w_ptr, c, c_ok, 6)
    w21 = tap_weight(w_ptr, c, c_ok, 7)
    w22 = tap_weight(w_ptr, c, c_ok, 8)
    # (BLOCK_R, BLOCK_K) each: the sum of g * x under tap (kh, kw), and of g (dshift)
    acc00, acc01, acc02, acc10, acc11, acc12, acc20, acc21, acc22, acc_shift = _zeros10(BLOCK_R, BLOCK_K)
    for i in range(STEPS):
        r = (tl.program_id(0) * STEPS + i) * BLOCK_R + ar  # pixels of the whole batch
        ow = r % W
        oh = (r // W) % H
        n = r // (W * H)
        valid = (r < N * (H * W)) & c_ok
        off = r * C + c
        g = tl.load(g_ptr + off, mask=valid, other=0.0).to(tl.float32)
        xc = tl.load(x_ptr + off, mask=valid, other=0.0).to(tl.float32)
        acc11 += g * xc
        dx = g * w11
        # offset (dh, dw): x there is tap (1 + dh, 1 + dw) of the weight gradient; g there meets w[1 - dh, 1 - dw]
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, -1, -1, C, H, W)
        acc00 += g * xo
        dx += go * w22
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, -1, 0, C, H, W)
        acc01 += g * xo
        dx += go * w21
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, -1, 1, C, H, W)
        acc02 += g * xo
        dx += go * w20
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, 0, -1, C, H, W)
        acc10 += g * xo
        dx += go * w12
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, 0, 1, C, H, W)
        acc12 += g * xo
        dx += go * w10
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, 1, -1, C, H, W)
        acc20 += g * xo
        dx += go * w02
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, 1, 0, C, H, W)
        acc21 += g * xo
        dx += go * w01
        xo, go = _xg_at(x_ptr, g_ptr, n, oh, ow, c, valid, 1, 1, C, H, W)
        acc22 += g * xo
        dx += go * w00
        if HAS_SHIFT:
            acc_shift += g
        tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=valid)
    store_parts3x3(part_ptr, acc00, acc01, acc02, acc10, acc11, acc12, acc20, acc21, acc22, acc_shift, acc_shift,
                   c1, C, False, HAS_SHIFT)


@triton.jit(do_not_specialize=["N", "STEPS"])
def _dwconv_bwd_window_kernel(
    # pointers: x, grad_y in; weight (C, 9); dx out (x's dtype); part (G, 9 + 2, C) float32 partial sums
    x_ptr, g_ptr, w_ptr, dx_ptr, part_ptr,
    # sizes; STEPS: chunks per program, each ROWS rows of one image
    N, STEPS,
    # compile-time: geometry, epilogue (a shift), tile (ROWS rows of BLOCK_W x BLOCK_K)
    C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, HAS_SHIFT: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr,
):
    CHUNKS: tl.constexpr = (H + ROWS - 1) // ROWS  # chunks along an image's rows
    ow = tl.arange(0, BLOCK_W)[:, None]  # (BLOCK_W, 1)
    c1 = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    c = c1[None, :]  # (1, BLOCK_K)
    c_ok = c < C
    in_row = (ow < W) & c_ok
    col0, col1, col2 = (ow - 1) * C + c, ow * C + c, (ow + 1) * C + c  # columns w - 1, w, w + 1
    ok0, ok1, ok2 = ow >= 1, ow < W, ow + 1 < W
    f0 = flippable_tap_weight(w_ptr, c, c_ok, 0, True)  # the flipped kernel: dx is the forward of g
    f1 = flippable_tap_weight(w_ptr, c, c_ok, 1, True)
    f2 = flippable_tap_weight(w_ptr, c, c_ok, 2, True)
    f3 = flippable_tap_weight(w_ptr, c, c_ok, 3, True)
    f4 = flippable_tap_weight(w_ptr, c, c_ok, 4, True)
    f5 = flippable_tap_weight(w_ptr, c, c_ok, 5, True)
    f6 = flippable_tap_weight(w_ptr, c, c_ok, 6, True)
    f7 = flippable_tap_weight(w_ptr, c, c_ok, 7, True)
    f8 = flippable_tap_weight(w_ptr, c, c_ok, 8, True)
    acc00, acc01, acc02, acc10, acc11, acc12, acc20, acc21, acc22, acc_shift = _zeros10(BLOCK_W, BLOCK_K)
    for i in range(STEPS):
        q = tl.program_id(0) * STEPS + i  # chunk: image q // CHUNKS, rows from (q % CHUNKS) * ROWS
        h0 = (q % CHUNKS) * ROWS
        ok = in_row & (q < N * CHUNKS)
        img = (q // CHUNKS) * (H * W * C)
        g_img = g_ptr + img
        # g rows h - 1 (a) and h (b) under the window; d, row h + 1, is loaded in the loop
        a0, a1, a2 = load_row_tiles(g_img, h0 - 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, True)
        b0, b1, b2 = load_row_tiles(g_img, h0, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, True)
        for j in range(ROWS):
            h = h0 + j
            d0, d1, d2 = load_row_tiles(g_img, h + 1, ok, col0, col1, col2, ok0, ok1, ok2, H, W, C, True)
            row_ok = ok & (h < H)
            off = img + h * (W * C) + col1
            xc = tl.load(x_ptr + off, mask=row_ok, other=0.0).to(tl.float32)
            dx = window_conv(a0, a1, a2, b0, b1, b2, d0, d1, d2, f0, f1, f2, f3, f4, f5, f6, f7, f8)
            tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=row_ok)
            # tap (kh, kw) meets g at row h + 1 - kh, column w + 1 - kw: the tile dx weighs with w[kh, kw]
            acc00 += xc * d2
            acc01 += xc * d1
            acc02 += xc * d0
            acc10 += xc * b2
            acc11 += xc * b1
            acc12 += xc * b0
            acc20 += xc * a2
            acc21 += xc * a1
            acc22 += xc * a0
            if HAS_SHIFT:
                acc_shift += b1  # g at row h (0 past the last row)
            a0, a1, a2 = b0, b1, b2
            b0, b1, b2 = d0, d1, d2
    store_parts3x3(part_ptr, acc00, acc01, acc02, acc10, acc11, acc12, acc20, acc21, acc22, acc_shift, acc_shift,
                   c1, C, False, HAS_SHIFT)


def fused_pass(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, shift, config: LaunchConfig, steps: int,
               groups: int, col_programs: int, wrap: bool = False):
    """(grad_x, part) on the tiles: grad_x in x's dtype and layout, and the (groups, 9 + 2, C) float32 partial sums
    of the weight (and shift) gradient that kernels.depthwise.weight.finish_weight_grad adds up. x and grad_y are
    dense channels_last (N, C, H, W) of one shape (stride 1), weight (C, 1, 3, 3); config (BLOCK_R, BLOCK_K,
    num_warps), steps (BLOCK_R-pixel tiles per program), groups and col_programs as
    kernels.depthwise.launchers.launch_bwd_fused gives them after checking the arguments."""
    N, C, H, W = x.shape
    dx = empty_in_layout((N, C, H, W), x, channels_last=True)
    part = torch.empty((groups, 9 + 2, C), device=x.device, dtype=torch.float32)
    launch(
        _dwconv_bwd_fused_kernel, (groups, col_programs), wrap, config.num_warps, x.device,
        x, grad_y, weight.contiguous(), dx, part, N, steps,
        C=C, H=H, W=W, HAS_SHIFT=shift is not None, BLOCK_R=config.block_r, BLOCK_K=config.block_k,
    )  # fmt: skip
    return dx, part


def window_pass(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, shift, config: LaunchConfig,
                steps: int, groups: int, col_programs: int, wrap: bool = False):
    """fused_pass's (grad_x, part) on the window schedule; config (ROWS, BLOCK_K, num_warps); steps: ROWS-row
    chunks per program, over groups x col_programs programs (kernels.depthwise.launchers.launch_bwd_fused)."""
    N, C, H, W = x.shape
    dx = empty_in_layout((N, C, H, W), x, channels_last=True)
    part = torch.empty((groups, 9 + 2, C), device=x.device, dtype=torch.float32)
    launch(
        _dwconv_bwd_window_kernel, (groups, col_programs), wrap, config.num_warps, x.device,
        x, grad_y, weight.contiguous(), dx, part, N, steps,
        C=C, H=H, W=W, HAS_SHIFT=shift is not None, ROWS=config.block_r, BLOCK_W=next_pow2(W),
        BLOCK_K=config.block_k,
    )  # fmt: skip
    return dx, part
