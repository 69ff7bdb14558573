"""Attention kernels for S > 128 tokens (e.g. 257 = 16x16 patches + a class token): flash-attention-2 tiling.

Keys and queries are cut into full tiles (BLOCK_N keys, BLOCK_M queries) plus 16-row masked tail tiles, so a
sequence of 257 wastes 15 padded rows instead of most of a 64 tile. In log2 units, scale = 1/sqrt(D):

    forward, one program per BLOCK_M queries q of one (b, h); online softmax over the key tiles (k, v):
        m = -inf;  l = 0;  acc = 0
        for each key tile:  s = q k^T * scale;  m' = max(m, rowmax(s));  alpha = exp2(m - m')
                            p = exp2(s - m');  l = l * alpha + rowsum(p);  acc = acc * alpha + p v;  m = m'
        out = acc / l;  lse = (m + log2 l) * ln 2
    backward, two passes so that no program adds into another's gradient (no atomics):
        dq kernel, one program per BLOCK_M queries, over the key tiles:
            delta = rowsum(dO * O);  p = exp2(q k^T * scale - lse);  dp = dO v^T
            ds = p * (dp - delta);  dQ += ds k;  written once, dQ * scale
        dkdv kernel, one program per key tile, over query chunks of BLOCK_M rows, then 16:
            p, dp, delta as above (delta recomputed from O and dO, not passed from the dq launch)
            dV += p^T dO;  dK += ds^T q;  written once, dK * scale
            (one launch for the full BLOCK_N key tiles, one for the 16-key tail tiles)

Memory traffic aimed at: each forward program reads its query block once, writes its O and lse once, and
reads K and V once (so K and V are read cdiv(S, BLOCK_M) times per head); the dq pass does the same with dO
and O added; the dkdv pass reads Q, O, dO and lse once per key tile. A head at S = 257, D = 64 in 16 bits is
3 x 257 x 64 x 2 B = 99 KB of qkv, so those re-reads come mostly from L2. Beyond the 11N-element minimum of
bench/attention.py (N = B*S*H*D), the backward reads O (N more) for delta.

Picked for S > configs.ONE_BLOCK_MAX_S (and by Config(tiled=True) in the sweep); launch configurations in
configs.py. Measured against every SDPA backend by `python -m bench attention`.
"""

import triton
import triton.language as tl

from kernels.attention.tiles import load_row_stat, load_tile, mma, store_row_stat, store_tile


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, k_ptr, v_ptr, start_n, S, s_kv_s, s_kv_d,
              HEAD_DIM: tl.constexpr, COLS: tl.constexpr, MASKED: tl.constexpr,
              SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    """One online-softmax step over keys [start_n, start_n + COLS)."""
    cols = start_n + tl.arange(0, COLS)
    k = load_tile(k_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    v = load_tile(v_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    s = mma(q, tl.trans(k), DOT_F32) * (SM_SCALE * 1.4426950408889634)  # (BLOCK_M, COLS), log2 units
    if MASKED:
        s = tl.where((cols < S)[None, :], s, -float("inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every tile holds a valid key
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, DOT_F32)
    return acc, m_new, l_i


@triton.jit
def attn_fwd_tiled_kernel(
    # pointers: qkv (B, S, 3, H, D) in; out (B, S, H, D) and lse (B, H, S) float32 out
    QKV, Out, LSE,
    # sizes
    H, S,
    # strides (elements)
    s_qkv_b, s_qkv_s, s_qkv_3, s_qkv_h, s_qkv_d,
    s_o_b, s_o_s, s_o_h, s_o_d,
    # compile-time constants: BLOCK_M queries per program, key tiles of BLOCK_N then 16
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    q_ptr = QKV + b * s_qkv_b + h * s_qkv_h
    k_ptr = q_ptr + s_qkv_3
    v_ptr = q_ptr + 2 * s_qkv_3

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = load_tile(q_ptr, rows, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
    m_i = tl.full([BLOCK_M], -float("inf"), dtype=tl.float32)  # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # unnormalised output
    full = S // BLOCK_N * BLOCK_N
    for start_n in range(0, full, BLOCK_N):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_ptr, v_ptr, start_n, S, s_qkv_s, s_qkv_d,
                                  HEAD_DIM, BLOCK_N, False, SM_SCALE, DOT_F32)
    for start_n in range(full, S, 16):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_ptr, v_ptr, start_n, S, s_qkv_s, s_qkv_d,
                                  HEAD_DIM, 16, True, SM_SCALE, DOT_F32)
    store_tile(Out + b * s_o_b + h * s_o_h, rows, S, s_o_s, s_o_d, acc / l_i[:, None], HEAD_DIM, True)
    store_row_stat(LSE + pid_bh * S, rows, S, (m_i + tl.log2(l_i)) * 0.6931471805599453, True)


@triton.jit
def _dq_tile(dq, q, do, lse, delta, k_ptr, v_ptr, start_n, S, s_kv_s, s_kv_d,
             HEAD_DIM: tl.constexpr, COLS: tl.constexpr, MASKED: tl.constexpr,
             SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    cols = start_n + tl.arange(0, COLS)
    k = load_tile(k_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    v = load_tile(v_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    p = tl.exp2(mma(q, tl.trans(k), DOT_F32) * (SM_SCALE * 1.4426950408889634) - lse[:, None])
    if MASKED:
        p = tl.where((cols < S)[None, :], p, 0.0)
    dp = mma(do, tl.trans(v), DOT_F32)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    return dq + mma(ds, k, DOT_F32)


@triton.jit
def attn_bwd_dq_kernel(
    # pointers: qkv, out, dout, lse in; the dQ part of dqkv out
    QKV, Out, DO, LSE, DQKV,
    # sizes
    H, S,
    # strides (elements)
    s_qkv_b, s_qkv_s, s_qkv_3, s_qkv_h, s_qkv_d,
    s_o_b, s_o_s, s_o_h, s_o_d,
    s_do_b, s_do_s, s_do_h, s_do_d,
    s_dq_b, s_dq_s, s_dq_3, s_dq_h, s_dq_d,
    # compile-time constants
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    q_ptr = QKV + b * s_qkv_b + h * s_qkv_h
    k_ptr = q_ptr + s_qkv_3
    v_ptr = q_ptr + 2 * s_qkv_3

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = load_tile(q_ptr, rows, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
    do = load_tile(DO + b * s_do_b + h * s_do_h, rows, S, s_do_s, s_do_d, HEAD_DIM, True).to(q.dtype)
    o = load_tile(Out + b * s_o_b + h * s_o_h, rows, S, s_o_s, s_o_d, HEAD_DIM, True)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)  # (BLOCK_M,)
    lse = load_row_stat(LSE + pid_bh * S, rows, S, True) * 1.4426950408889634

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full = S // BLOCK_N * BLOCK_N
    for start_n in range(0, full, BLOCK_N):
        dq = _dq_tile(dq, q, do, lse, delta, k_ptr, v_ptr, start_n, S, s_qkv_s, s_qkv_d,
                      HEAD_DIM, BLOCK_N, False, SM_SCALE, DOT_F32)
    for start_n in range(full, S, 16):
        dq = _dq_tile(dq, q, do, lse, delta, k_ptr, v_ptr, start_n, S, s_qkv_s, s_qkv_d,
                      HEAD_DIM, 16, True, SM_SCALE, DOT_F32)
    store_tile(DQKV + b * s_dq_b + h * s_dq_h, rows, S, s_dq_s, s_dq_d, dq * SM_SCALE, HEAD_DIM, True)


@triton.jit
def _dkdv_rows(dk, dv, k, v, col_ok, q_ptr, o_ptr, do_ptr, lse_ptr, start_m, S,
               s_q_s, s_q_d, s_o_s, s_o_d, s_do_s, s_do_d,
               HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, MASK_ROWS: tl.constexpr,
               SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    rows = start_m + tl.arange(0, ROWS)
    q = load_tile(q_ptr, rows, S, s_q_s, s_q_d, HEAD_DIM, MASK_ROWS)
    do = load_tile(do_ptr, rows, S, s_do_s, s_do_d, HEAD_DIM, MASK_ROWS).to(q.dtype)
    o = load_tile(o_ptr, rows, S, s_o_s, s_o_d, HEAD_DIM, MASK_ROWS)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)  # recomputed here: no buffer between kernels
    lse = load_row_stat(lse_ptr, rows, S, MASK_ROWS) * 1.4426950408889634
    qk_scale = SM_SCALE * 1.4426950408889634
    p = tl.exp2(mma(q, tl.trans(k), DOT_F32) * qk_scale - lse[:, None])  # (ROWS, COLS)
    p = tl.where(col_ok[None, :], p, 0.0)
    dp = mma(do, tl.trans(v), DOT_F32)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dv += mma(tl.trans(p.to(q.dtype)), do, DOT_F32)
    dk += mma(tl.trans(ds), q, DOT_F32)
    return dk, dv


@triton.jit
def attn_bwd_dkdv_kernel(
    # pointers: qkv, out, dout, lse in; the dK, dV parts of dqkv out
    QKV, Out, DO, LSE, DQKV,
    # sizes: this launch covers keys from key_start on, in tiles of COLS
    H, S, key_start,
    # strides (elements)
    s_qkv_b, s_qkv_s, s_qkv_3, s_qkv_h, s_qkv_d,
    s_o_b, s_o_s, s_o_h, s_o_d,
    s_do_b, s_do_s, s_do_h, s_do_d,
    s_dq_b, s_dq_s, s_dq_3, s_dq_h, s_dq_d,
    # compile-time constants: key tile COLS (masked or not), query chunks of BLOCK_M then 16
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, COLS: tl.constexpr, MASK_COLS: tl.constexpr,
    SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    q_ptr = QKV + b * s_qkv_b + h * s_qkv_h
    o_ptr = Out + b * s_o_b + h * s_o_h
    do_ptr = DO + b * s_do_b + h * s_do_h
    lse_ptr = LSE + pid_bh * S
    dk_ptr = DQKV + b * s_dq_b + h * s_dq_h + s_dq_3
    dv_ptr = dk_ptr + s_dq_3

    cols = key_start + pid_n * COLS + tl.arange(0, COLS)
    col_ok = cols < S
    k = load_tile(q_ptr + s_qkv_3, cols, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_COLS)
    v = load_tile(q_ptr + 2 * s_qkv_3, cols, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_COLS)
    dk = tl.zeros([COLS, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([COLS, HEAD_DIM], dtype=tl.float32)
    full = S // BLOCK_M * BLOCK_M
    for start_m in range(0, full, BLOCK_M):
        dk, dv = _dkdv_rows(dk, dv, k, v, col_ok, q_ptr, o_ptr, do_ptr, lse_ptr, start_m, S,
                            s_qkv_s, s_qkv_d, s_o_s, s_o_d, s_do_s, s_do_d,
                            HEAD_DIM, BLOCK_M, False, SM_SCALE, DOT_F32)
    for start_m in range(full, S, 16):
        dk, dv = _dkdv_rows(dk, dv, k, v, col_ok, q_ptr, o_ptr, do_ptr, lse_ptr, start_m, S,
                            s_qkv_s, s_qkv_d, s_o_s, s_o_d, s_do_s, s_do_d,
                            HEAD_DIM, 16, True, SM_SCALE, DOT_F32)
    store_tile(dk_ptr, cols, S, s_dq_s, s_dq_d, dk * SM_SCALE, HEAD_DIM, MASK_COLS)
    store_tile(dv_ptr, cols, S, s_dq_s, s_dq_d, dv, HEAD_DIM, MASK_COLS)

