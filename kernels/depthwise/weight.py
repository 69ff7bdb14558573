"""The weight pass of the depthwise backward: the weight gradient (and dscale, dshift, and grad_z where the
epilogue changes the gradient), in two kernels, "gather" and "taps", and the finishing sum they share.

With y = relu(z * scale + shift), z the convolution output, g = dL/dy:

    g' = g * [y > 0]                     (relu's mask; z recomputed from x and w only if relu or scale needs it)
    gz = g' * scale[c]                   (dL/dz; stored for the grad-input pass when it differs from g)
    gw[c, kh, kw] += gz * x[n, c, oh*s - p + kh, ow*s - p + kw];  dscale += g' * z;  dshift += g'

"gather" (every layout and kernel size): the k*k taps form a third tile axis, padded to KKP = 16 (k = 3) or 32
(k = 5), so one (BLOCK_R, KKP, BLOCK_K) load gathers x under every tap of a tile of output pixels. "taps"
(channels_last 3x3): nine shifted (BLOCK_R, BLOCK_K) x tiles, as in the forward, and nine accumulators, reduced
over rows once at the end: no padded tap lanes. Each program loops over STEPS tiles (of pixels of the whole batch
in channels_last, of (image, pixel block) in NCHW) and writes one float32 partial sum per (program, tap,
channel); the finishing kernel adds the programs' sums in a fixed order: deterministic, no atomics.

Memory traffic: one read of x and of grad_y (and a write of grad_z with the epilogue); the partial sums are
programs x (K*K + 2) x C floats, small beside them. In 16 bits the taps pass moves bytes at about half its
float32 rate: its registers and instructions bound it, not its bytes. Which kernel and tile:
rules.wgrad_variant, rules.wgrad_taps_config, rules.wgrad_config (`python -m bench depthwise tune=wgrad`,
`tune=tiles`).
"""

import torch
import triton
import triton.language as tl

from kernels.depthwise.contract import output_hw
from kernels.depthwise.helpers import LaunchConfig, cdiv, empty_in_layout, launch, next_pow2, store_parts3x3, tap_weight

_FINISH_BLOCK_G = 32  # partial sums added per step by the finishing kernel


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
    # Per step one (BLOCK_R, BLOCK_K) tile of grad_y and nine shifted x tiles, one float32 accumulator per tap
    # (written out: a jit function cannot index a list of tensors in a loop), reduced over rows once, at the
    # end. part is (G, 9 + 2, C), as the gather kernel's, for the same finishing kernel.
    OH: tl.constexpr = (H - 1) // STRIDE + 1
    OW: tl.constexpr = (W - 1) // STRIDE + 1
    ar = tl.arange(0, BLOCK_R)[:, None]  # (BLOCK_R, 1)
    c1 = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,): channels, fixed per program
    c = c1[None, :]  # (1, BLOCK_K)
    c_ok = c < C
    if NEED_Z:  # (1, BLOCK_K) each: the weight per tap (kh, kw)
        w00 = tap_weight(w_ptr, c, c_ok, 0)
        w01 = tap_weight(w_ptr, c, c_ok, 1)
        w02 = tap_weight(w_ptr, c, c_ok, 2)
        w10 = tap_weight(w_ptr, c, c_ok, 3)
        w11 = tap_weight(w_ptr, c, c_ok, 4)
        w12 = tap_weight(w_ptr, c, c_ok, 5)
        w20 = tap_weight(w_ptr, c, c_ok, 6)
        w21 = tap_weight(w_ptr, c, c_ok, 7)
        w22 = tap_weight(w_ptr, c, c_ok, 8)
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
    store_parts3x3(part_ptr, acc00, acc01, acc02, acc10, acc11, acc12, acc20, acc21, acc22, acc_scale, acc_shift,
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


def weight_pass(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale, shift, stride: int, relu: bool,
                store_grad_z: bool, variant: str, channels_last: bool, config: LaunchConfig, steps: int,
                groups: int, col_programs: int, wrap: bool = False):
    """(part, grad_z): the (groups, K*K + 2, C) float32 partial sums of the weight (and scale, shift) gradient,
    and grad_z (x's dtype and layout; empty unless store_grad_z). x and grad_y are dense in the layout; variant
    "gather" or "taps" (channels_last 3x3); config, steps, groups and col_programs as
    kernels.depthwise.launchers.wgrad_steps gives them (launch_bwd_weight checks and picks them)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    OH, OW = output_hw(H, W, stride)
    cl = channels_last
    need_z = relu or scale is not None  # the pass recomputes z for relu's mask or for dscale
    gz = empty_in_layout((N, C, OH, OW), x, cl) if store_grad_z else x.new_empty((0, 0, 0, 0))
    part = torch.empty((groups, K * K + 2, C), device=x.device, dtype=torch.float32)
    pointers = (x, grad_y, weight.contiguous(), scale if scale is not None else x,
                shift if shift is not None else x, gz if store_grad_z else x, part)
    epilogue = dict(HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, RELU=relu,
                    NEED_Z=need_z, STORE_GZ=store_grad_z)
    if variant == "taps":
        kernel, tile = _dwconv_bwd_weight_taps_kernel, dict(BLOCK_R=config.block_r)
    else:
        kernel, tile = _dwconv_bwd_weight_kernel, dict(K=K, KKP=next_pow2(K * K), CHANNELS_LAST=cl,
                                                       BLOCK_R=config.block_r)
    launch(
        kernel, (groups, col_programs), wrap, config.num_warps, x.device, *pointers, N, steps,
        C=C, H=H, W=W, STRIDE=stride, **tile, **epilogue, BLOCK_K=config.block_k,
    )  # fmt: skip
    return part, gz


def finish_weight_grad(part: torch.Tensor, weight, scale, shift, wrap: bool = False):
    """(grad_weight, grad_scale, grad_shift) from the (G, K*K + 2, C) partial sums of a weight pass (or of the one
    pass), added in a fixed order; grad_scale / grad_shift are empty where scale / shift is None."""
    groups, C = part.shape[0], part.shape[2]
    K, dev = weight.shape[-1], part.device
    grad_w = torch.empty((C, 1, K, K), device=dev, dtype=weight.dtype)
    grad_scale = torch.empty((C,) if scale is not None else (0,), device=dev,
                             dtype=scale.dtype if scale is not None else torch.float32)
    grad_shift = torch.empty((C,) if shift is not None else (0,), device=dev,
                             dtype=shift.dtype if shift is not None else torch.float32)
    block_c = min(next_pow2(C), 128)
    launch(
        _dwconv_wgrad_finish_kernel, (K * K + 2, cdiv(C, block_c)), wrap, 4, dev,
        part, grad_w, grad_scale if scale is not None else part, grad_shift if shift is not None else part,
        groups, C=C, KK=K * K, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
        BLOCK_G=_FINISH_BLOCK_G, BLOCK_C=block_c,
    )  # fmt: skip
    return grad_w, grad_scale, grad_shift
