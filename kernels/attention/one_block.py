"""Attention kernels for S <= 128 tokens (the CIFAR ViTs: 65 = 64 patches + a class token): one program per (b, h).

Each program loads its head's keys and values once, as a main tile of the largest power of two <= S plus one
masked tail tile (65 -> 64 + 16: configs.key_tiles), and walks the queries in chunks of BLOCK_M rows, then
16-row tail chunks. Every chunk sees whole softmax rows, so no online rescaling is needed (log2 units,
scale = 1/sqrt(D)):

    forward, per query chunk q:   s = q [k; kt]^T * scale;  m = rowmax(s);  p = exp2(s - m);  l = rowsum(p)
                                  out = p [v; vt] / l;  lse = (m + log2 l) * ln 2
    backward, per query chunk:    p = exp2(q [k; kt]^T * scale - lse);  dp = dO [v; vt]^T
                                  delta = rowsum(p * dp)    (= rowsum(dO * O): the chunk sees every key)
                                  ds = p * (dp - delta);  dQ = ds [k; kt] * scale   (final: written once)
                                  dV += p^T dO;  dK += ds^T q   (on chip; written once at the end, dK * scale)

Memory traffic aimed at: the minimum any implementation must move (N = B*S*H*D elements). The forward reads
Q, K, V once and writes O once (4N) plus the float32 lse (B*H*S); the backward reads Q, K, V, dO and lse once
and writes dQ, dK, dV once (7N) straight into the (B, S, 3, H, D) gradient of qkv. It never reads O (delta
comes from p * dp) and needs no atomics (a program owns every key of its head).

Picked for S <= configs.ONE_BLOCK_MAX_S (configs.use_one_block); launch configurations in configs.py.
Measured against every SDPA backend by `python -m bench attention`.
"""

import triton
import triton.language as tl

from kernels.attention.tiles import load_row_stat, load_tile, mma, store_row_stat, store_tile


@triton.jit
def _fwd_rows(
    q_ptr, o_ptr, lse_ptr, start_m, S, k, v, kt, vt,
    s_q_s, s_q_d, s_o_s, s_o_d,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, MASK_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_MAIN: tl.constexpr, BLOCK_T: tl.constexpr, HAS_TAIL: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    """Attention for query rows [start_m, start_m + ROWS) against all keys (main tile k, v; tail kt, vt)."""
    rows = start_m + tl.arange(0, ROWS)
    q = load_tile(q_ptr, rows, S, s_q_s, s_q_d, HEAD_DIM, MASK_ROWS)
    s = mma(q, tl.trans(k), DOT_F32) * (SM_SCALE * 1.4426950408889634)  # (ROWS, BLOCK_N)
    if MASK_MAIN:
        s = tl.where((tl.arange(0, BLOCK_N) < S)[None, :], s, -float("inf"))
    m = tl.max(s, axis=1)
    if HAS_TAIL:
        st = mma(q, tl.trans(kt), DOT_F32) * (SM_SCALE * 1.4426950408889634)  # (ROWS, BLOCK_T)
        st = tl.where((BLOCK_N + tl.arange(0, BLOCK_T) < S)[None, :], st, -float("inf"))
        m = tl.maximum(m, tl.max(st, axis=1))
    p = tl.exp2(s - m[:, None])
    denom = tl.sum(p, axis=1)
    acc = mma(p.to(v.dtype), v, DOT_F32)  # (ROWS, HEAD_DIM) float32
    if HAS_TAIL:
        pt = tl.exp2(st - m[:, None])
        denom += tl.sum(pt, axis=1)
        acc += mma(pt.to(v.dtype), vt, DOT_F32)
    store_tile(o_ptr, rows, S, s_o_s, s_o_d, acc / denom[:, None], HEAD_DIM, MASK_ROWS)
    lse = (m + tl.log2(denom)) * 0.6931471805599453  # natural-log logsumexp of the scaled scores
    store_row_stat(lse_ptr, rows, S, lse, MASK_ROWS)


@triton.jit
def attn_fwd_one_block_kernel(
    # pointers: qkv (B, S, 3, H, D) in; out (B, S, H, D) and lse (B, H, S) float32 out
    QKV, Out, LSE,
    # sizes
    H, S,
    # strides (elements)
    s_qkv_b, s_qkv_s, s_qkv_3, s_qkv_h, s_qkv_d,
    s_o_b, s_o_s, s_o_h, s_o_d,
    # compile-time constants: head dim, query chunk, key tiles (main BLOCK_N, optional tail BLOCK_T), scale
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_MAIN: tl.constexpr, BLOCK_T: tl.constexpr, HAS_TAIL: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    q_ptr = QKV + b * s_qkv_b + h * s_qkv_h
    k_ptr = q_ptr + s_qkv_3
    v_ptr = q_ptr + 2 * s_qkv_3
    o_ptr = Out + b * s_o_b + h * s_o_h
    lse_ptr = LSE + pid_bh * S

    main = tl.arange(0, BLOCK_N)
    k = load_tile(k_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    v = load_tile(v_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    if HAS_TAIL:
        tail = BLOCK_N + tl.arange(0, BLOCK_T)
        kt = load_tile(k_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
        vt = load_tile(v_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
    else:
        kt = k
        vt = v

    full = S // BLOCK_M * BLOCK_M  # queries in whole BLOCK_M chunks, then 16-row tail chunks
    for start_m in range(0, full, BLOCK_M):
        _fwd_rows(q_ptr, o_ptr, lse_ptr, start_m, S, k, v, kt, vt, s_qkv_s, s_qkv_d, s_o_s, s_o_d,
                  HEAD_DIM, BLOCK_M, False, BLOCK_N, MASK_MAIN, BLOCK_T, HAS_TAIL, SM_SCALE, DOT_F32)
    for start_m in range(full, S, 16):
        _fwd_rows(q_ptr, o_ptr, lse_ptr, start_m, S, k, v, kt, vt, s_qkv_s, s_qkv_d, s_o_s, s_o_d,
                  HEAD_DIM, 16, True, BLOCK_N, MASK_MAIN, BLOCK_T, HAS_TAIL, SM_SCALE, DOT_F32)


@triton.jit
def _bwd_rows(
    q_ptr, do_ptr, dq_ptr, lse_ptr, start_m, S, k, v, kt, vt, dk, dv, dkt, dvt,
    s_q_s, s_q_d, s_do_s, s_do_d, s_dq_s, s_dq_d,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, MASK_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_MAIN: tl.constexpr, BLOCK_T: tl.constexpr, HAS_TAIL: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    """Backward for query rows [start_m, start_m + ROWS): writes their dQ, returns dK, dV (+ tail) updated."""
    rows = start_m + tl.arange(0, ROWS)
    q = load_tile(q_ptr, rows, S, s_q_s, s_q_d, HEAD_DIM, MASK_ROWS)
    do = load_tile(do_ptr, rows, S, s_do_s, s_do_d, HEAD_DIM, MASK_ROWS).to(q.dtype)
    lse = load_row_stat(lse_ptr, rows, S, MASK_ROWS) * 1.4426950408889634
    qk_scale = SM_SCALE * 1.4426950408889634
    p = tl.exp2(mma(q, tl.trans(k), DOT_F32) * qk_scale - lse[:, None])  # (ROWS, BLOCK_N)
    if MASK_MAIN:
        p = tl.where((tl.arange(0, BLOCK_N) < S)[None, :], p, 0.0)
    dp = mma(do, tl.trans(v), DOT_F32)
    delta = tl.sum(p * dp, axis=1)  # = rowsum(dO * O): these rows see every key here
    if HAS_TAIL:
        pt = tl.exp2(mma(q, tl.trans(kt), DOT_F32) * qk_scale - lse[:, None])
        pt = tl.where((BLOCK_N + tl.arange(0, BLOCK_T) < S)[None, :], pt, 0.0)
        dpt = mma(do, tl.trans(vt), DOT_F32)
        delta += tl.sum(pt * dpt, axis=1)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dv += mma(tl.trans(p.to(q.dtype)), do, DOT_F32)
    dk += mma(tl.trans(ds), q, DOT_F32)
    dq = mma(ds, k, DOT_F32)
    if HAS_TAIL:
        dst = (pt * (dpt - delta[:, None])).to(q.dtype)
        dvt += mma(tl.trans(pt.to(q.dtype)), do, DOT_F32)
        dkt += mma(tl.trans(dst), q, DOT_F32)
        dq += mma(dst, kt, DOT_F32)
    store_tile(dq_ptr, rows, S, s_dq_s, s_dq_d, dq * SM_SCALE, HEAD_DIM, MASK_ROWS)
    return dk, dv, dkt, dvt


@triton.jit
def attn_bwd_one_block_kernel(
    # pointers: qkv, dout in; lse (B, H, S) float32 in; dqkv (B, S, 3, H, D) out
    QKV, DO, LSE, DQKV,
    # sizes
    H, S,
    # strides (elements)
    s_qkv_b, s_qkv_s, s_qkv_3, s_qkv_h, s_qkv_d,
    s_do_b, s_do_s, s_do_h, s_do_d,
    s_dq_b, s_dq_s, s_dq_3, s_dq_h, s_dq_d,
    # compile-time constants, as in the forward
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_MAIN: tl.constexpr, BLOCK_T: tl.constexpr, HAS_TAIL: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    q_ptr = QKV + b * s_qkv_b + h * s_qkv_h
    k_ptr = q_ptr + s_qkv_3
    v_ptr = q_ptr + 2 * s_qkv_3
    do_ptr = DO + b * s_do_b + h * s_do_h
    dq_ptr = DQKV + b * s_dq_b + h * s_dq_h
    dk_ptr = dq_ptr + s_dq_3
    dv_ptr = dq_ptr + 2 * s_dq_3
    lse_ptr = LSE + pid_bh * S

    main = tl.arange(0, BLOCK_N)
    k = load_tile(k_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    v = load_tile(v_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    if HAS_TAIL:
        tail = BLOCK_N + tl.arange(0, BLOCK_T)
        kt = load_tile(k_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
        vt = load_tile(v_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
        dkt = tl.zeros([BLOCK_T, HEAD_DIM], dtype=tl.float32)
        dvt = tl.zeros([BLOCK_T, HEAD_DIM], dtype=tl.float32)
    else:  # placeholders, passed through unchanged
        kt = k
        vt = v
        dkt = dk
        dvt = dv

    full = S // BLOCK_M * BLOCK_M
    for start_m in range(0, full, BLOCK_M):
        dk, dv, dkt, dvt = _bwd_rows(
            q_ptr, do_ptr, dq_ptr, lse_ptr, start_m, S, k, v, kt, vt, dk, dv, dkt, dvt,
            s_qkv_s, s_qkv_d, s_do_s, s_do_d, s_dq_s, s_dq_d,
            HEAD_DIM, BLOCK_M, False, BLOCK_N, MASK_MAIN, BLOCK_T, HAS_TAIL, SM_SCALE, DOT_F32)
    for start_m in range(full, S, 16):
        dk, dv, dkt, dvt = _bwd_rows(
            q_ptr, do_ptr, dq_ptr, lse_ptr, start_m, S, k, v, kt, vt, dk, dv, dkt, dvt,
            s_qkv_s, s_qkv_d, s_do_s, s_do_d, s_dq_s, s_dq_d,
            HEAD_DIM, 16, True, BLOCK_N, MASK_MAIN, BLOCK_T, HAS_TAIL, SM_SCALE, DOT_F32)

    store_tile(dk_ptr, main, S, s_dq_s, s_dq_d, dk * SM_SCALE, HEAD_DIM, MASK_MAIN)
    store_tile(dv_ptr, main, S, s_dq_s, s_dq_d, dv, HEAD_DIM, MASK_MAIN)
    if HAS_TAIL:
        store_tile(dk_ptr, tail, S, s_dq_s, s_dq_d, dkt * SM_SCALE, HEAD_DIM, True)
        store_tile(dv_ptr, tail, S, s_dq_s, s_dq_d, dvt, HEAD_DIM, True)

