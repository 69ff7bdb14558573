"""The tile schedule: the depthwise forward and grad-input pass for any layout, stride and kernel size.

A program computes one BLOCK_R x BLOCK_K tile of the kernel's output, the contiguous dimension being the
vectorised one:

    channels_last: rows = pixels (n, oh, ow) over the whole batch, cols = channels      (C contiguous)
    NCHW:          rows = planes (n, c),                            cols = pixels (oh, ow) (W contiguous)

    forward:     acc = sum_{kh,kw} x[n, c, oh*s - p + kh, ow*s - p + kw] * w[c, kh, kw]     (0 in the padding)
                 y = relu(acc * scale[c] + shift[c])                                        (float32, then x's dtype)
    grad-input:  dx[n, c, ih, iw] = sum_{kh,kw} gz[n, c, (ih+p-kh)/s, (iw+p-kw)/s] * w[c, kh, kw]
                 over the taps where the division is exact and in range (a transposed convolution);
                 gz is the gradient w.r.t. the conv output z, before the epilogue.

Memory traffic: the least any forward can move is one read of x and one write of y. A channels_last tile holds
a few dozen pixels of one or two image rows, so the rows above and below come from other programs through the
L2: each input element is loaded by about K programs and K*K times in all. The rows schedule
(kernels.depthwise.rows) loads each input row once per program instead; the launchers take the tiles where it
cannot run or measured slower (rules.pointwise_variant), with rules.pointwise_config's tiles
(`python -m bench depthwise tune=tiles`).
"""

import torch
import triton
import triton.language as tl

from kernels.depthwise.contract import output_hw
from kernels.depthwise.helpers import LaunchConfig, affine_relu, cdiv, empty_in_layout, launch


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
    acc = affine_relu(acc, sc, sh, HAS_SCALE, HAS_SHIFT, RELU)
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


def fwd_tiles(x: torch.Tensor, weight: torch.Tensor, scale, shift, stride: int, relu: bool, channels_last: bool,
              config: LaunchConfig, wrap: bool = False) -> torch.Tensor:
    """y = relu(dwconv(x) * scale + shift) on `config`'s tiles: (N, C, OH, OW) in x's dtype and layout. x is
    dense in the layout (kernels.depthwise.launchers.launch_fwd checks, densifies and picks the tile)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    OH, OW = output_hw(H, W, stride)
    cl = channels_last
    y = empty_in_layout((N, C, OH, OW), x, cl)
    rows, cols = (N * OH * OW, C) if cl else (N * C, OH * OW)
    grid = (cdiv(rows, config.block_r), cdiv(cols, config.block_k))
    launch(
        _dwconv_fwd_kernel, grid, wrap, config.num_warps, x.device,
        x, weight.contiguous(), scale if scale is not None else x, shift if shift is not None else x, y, N,
        C=C, H=H, W=W, STRIDE=stride, K=K, CHANNELS_LAST=cl,
        HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, RELU=relu,
        BLOCK_R=config.block_r, BLOCK_K=config.block_k,
    )  # fmt: skip
    return y


def bwd_input_tiles(grad_z: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, stride: int, channels_last: bool,
                    config: LaunchConfig, wrap: bool = False) -> torch.Tensor:
    """grad_x from grad_z (the gradient w.r.t. the conv output, dense in the layout) on `config`'s tiles; x
    gives the shape, dtype and layout (kernels.depthwise.launchers.launch_bwd_input picks the tile)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    cl = channels_last
    dx = empty_in_layout((N, C, H, W), x, cl)
    rows, cols = (N * H * W, C) if cl else (N * C, H * W)
    grid = (cdiv(rows, config.block_r), cdiv(cols, config.block_k))
    launch(
        _dwconv_bwd_input_kernel, grid, wrap, config.num_warps, x.device,
        grad_z, weight.contiguous(), dx, N,
        C=C, H=H, W=W, STRIDE=stride, K=K, CHANNELS_LAST=cl, BLOCK_R=config.block_r, BLOCK_K=config.block_k,
    )  # fmt: skip
    return dx
