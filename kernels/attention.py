"""Fused multi-head attention for short sequences (ViT on CIFAR: 64-257 tokens, head dims 32-64).

Contract: `attention(qkv)` takes qkv of shape (B, S, 3, H, D), exactly a Linear(dim, 3*H*D) output reshaped
(any strides: the kernels index through them, so views and slices need no copy), and returns
softmax(Q K^T / sqrt(D)) V as a contiguous (B, S, H*D) tensor, ready for the output projection. Non-causal,
no mask, no dropout. The Triton path takes float16 / bfloat16 on any S >= 1 and D a power of two in
[16, 128], accumulates in float32 and returns the input dtype; everything else (float32, float64, CPU tensors
unless the Triton interpreter is asked for explicitly) goes through `reference_attention`.

Algorithm, per (batch b, head h); q, k, v = qkv[b, :, 0|1|2, h, :], each (S, D), scale = 1/sqrt(D):

    forward:   s = q k^T * scale;  m = rowmax(s);  p = exp(s - m);  l = rowsum(p)
               out = (p v) / l;  lse = m + log(l)                 (lse: float32 (B, H, S), kept for backward)
    backward:  p = exp(q k^T * scale - lse);  dp = dO v^T;  delta = rowsum(dO * O) = rowsum(p * dp)
               ds = p * (dp - delta);  dV = p^T dO;  dK = ds^T q * scale;  dQ = ds k * scale
               dQ, dK, dV are written straight into a (B, S, 3, H, D) tensor: the gradient of qkv.
    dO may have any strides (an expanded stride-0 gradient from .sum() included).

Tiles are powers of two (>= 16 for tl.dot). Sequences such as 65 = 64 patches + a class token would waste
half of a 128 tile, so keys and queries are cut into full tiles plus small tail tiles: 65 -> 64 + 16.

Two regimes, chosen by S (`_ONE_BLOCK_MAX_S`):
- S <= 128 (the CIFAR ViTs): one program per (b, h) for the forward and for the backward. It loads the keys
  and values of its head once (a main tile of the largest power of two <= S, plus one masked tail tile) and
  walks the queries in chunks of BLOCK_M (+ 16-row tail chunks). Every chunk sees whole softmax rows, so
  the forward needs no online rescaling, the backward's dQ is final when computed (no atomics), and
  delta = rowsum(p * dp) (O is not read). dK, dV accumulate on chip and are written once.
- S > 128 (e.g. 257 = 16x16 patches + class token): flash-attention-2 tiling. The forward runs one program
  per BLOCK_M queries with an online softmax over key tiles; the backward runs a dQ kernel (per query block,
  over key tiles) and dK/dV kernels (per key tile, over query chunks: one launch for the full BLOCK_N tiles,
  one for the 16-key tail tiles). Each computes delta = rowsum(dO * O) for the rows it visits, so nothing
  passes between the launches.
Launch configurations (`_fwd_config`, `_bwd_config`) were picked with `python3 bench/attention.py --tune`.
"""

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton
from triton.runtime.interpreter import InterpretedFunction

__all__ = ["attention", "reference_attention", "sdpa_attention"]

IMPLS = ("auto", "triton", "reference", "sdpa")
TRITON_DTYPES = (torch.float16, torch.bfloat16)
_MIN_HEAD_DIM, _MAX_HEAD_DIM = 16, 128  # tl.dot needs >= 16 along every dimension; 128 bounds registers
_ONE_BLOCK_MAX_S = 128  # up to this many tokens a head's keys and values stay on chip
# Whether "auto" sends S > _ONE_BLOCK_MAX_S to the tiled kernels (True) or to PyTorch's SDPA (False). An
# earlier tiled backward gave run-to-run different gradients on the H100 (see _bwd_config);
# tests/test_attention_gpu.py checks the current one, and this switch is the answer if that check fails.
_AUTO_TILED = True
_TAIL = 16  # rows of a tail tile: the smallest tile tl.dot accepts


def _check_qkv(qkv: torch.Tensor) -> None:
    """Raise ValueError unless qkv looks like (B, S, 3, H, D)."""
    if not isinstance(qkv, torch.Tensor):
        raise ValueError(f"qkv must be a tensor, got {type(qkv).__name__}")
    if qkv.dim() != 5:
        raise ValueError(f"qkv must have shape (B, S, 3, H, D), got rank {qkv.dim()}: {tuple(qkv.shape)}")
    if qkv.shape[2] != 3:
        raise ValueError(f"qkv dim 2 must be 3 (q, k, v), got shape {tuple(qkv.shape)}")


def sdpa_attention(qkv: torch.Tensor) -> torch.Tensor:
    """The same through F.scaled_dot_product_attention: (B, S, 3, H, D) -> (B, H, S, D) views, SDPA, then
    transpose(1, 2).reshape(B, S, H*D) (a copy). The baseline the kernels are measured against."""
    _check_qkv(qkv)
    B, S, _, H, D = qkv.shape
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, D), strided views
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, H * D)


def reference_attention(qkv: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D)) V in plain PyTorch: the CPU path and the test oracle.

    qkv (B, S, 3, H, D) -> (B, S, H*D) in qkv's dtype; computed in float32 (float64 for float64 inputs).
    """
    _check_qkv(qkv)
    B, S, _, H, D = qkv.shape
    compute_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    q, k, v = qkv.to(compute_dtype).unbind(2)  # each (B, S, H, D)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)  # (B, H, S, S)
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)  # (B, S, H, D)
    return out.reshape(B, S, H * D).to(qkv.dtype)


# ---------------------------------------------------------------------------------------------------------
# Launch configurations, measured with `python3 bench/attention.py --tune` (H100, torch 2.11, triton 3.6).
# Triton's autotuner is not used: the choice stays deterministic, costs nothing at the first call, and is the
# same under torch.compile.


class _Config(NamedTuple):
    block_m: int  # query rows per chunk (S <= 128) or per program (tiled)
    block_n: int  # keys per tile in the tiled path; S <= 128 derives its key tiles from S (_key_tiles)
    num_warps: int
    num_stages: int
    tiled: bool = False  # force the flash-style path at S <= 128 (for comparisons in the sweep)


def _key_tiles(S: int) -> tuple[int, int]:
    """(main, tail) tile sides covering S keys at S <= 128: main = largest power of two <= S (at least 16),
    tail = 0 or a power of two >= 16 covering the S - main keys left (65 -> (64, 16), 64 -> (64, 0))."""
    main = max(_TAIL, 1 << (S.bit_length() - 1))
    rest = S - main
    return main, (max(_TAIL, triton.next_power_of_2(rest)) if rest > 0 else 0)


# H100 GPU time (CUDA graph replay), bf16, from the sweep: forward at B=256 S=65 H=8 D=64, 36 µs with
# (64, -, 4 warps, 2 stages) vs 58 µs with 32-row chunks and 83-91 µs with 8 warps; backward 75 µs with
# (64, -, 4, 1) vs 97 µs (32-row chunks), 134 µs for the tiled path, 133-226 µs with 8 warps. The same order
# held at S=65 D=32 and S=64 D=64. Query chunks never exceed the main key tile (S=17 -> 16-row chunks).
# S=257 (B=256 H=6 D=64): forward 121 µs with (64, 64, 4, 3); backward 480 µs with (64, 64, 4, 2). That
# backward (two pipeline stages, delta passed from the dQ launch to the dK/dV launches in a buffer) gave
# run-to-run different gradients on the H100 with triton 3.6 (cause not isolated; bitwise repeatable in the
# interpreter). Without either it is repeatable on the H100 (test_backward_is_deterministic), so the tiled
# backward runs unpipelined and each kernel recomputes delta from O and dO.


def _fwd_config(S: int, D: int) -> _Config:
    if S <= _ONE_BLOCK_MAX_S:
        return _Config(block_m=min(64, _key_tiles(S)[0]), block_n=0, num_warps=4, num_stages=2)
    return _Config(block_m=64, block_n=64, num_warps=4, num_stages=3)


def _bwd_config(S: int, D: int) -> _Config:
    if S <= _ONE_BLOCK_MAX_S:
        return _Config(block_m=min(64, _key_tiles(S)[0]), block_n=0, num_warps=4, num_stages=1)
    return _Config(block_m=64, block_n=64, num_warps=4, num_stages=1)


# ---------------------------------------------------------------------------------------------------------
# Kernels. Grids put B * H on one axis (pid_bh = b * H + h); offsets that scale with the batch are int64.
# A "MASKED" tile reads rows >= S as zeros (which keeps every padded score finite) and never writes them;
# padded key columns are also masked out of the softmax explicitly. Scores are kept in log2 units
# (x * log2(e), log2(e) = 1.4426950408889634, ln(2) = 0.6931471805599453) so that exponentials are exp2, the
# hardware instruction; the constants are written inline because torch.compile copies kernel sources.

@triton.jit
def _mma(a, b, DOT_F32: tl.constexpr):
    """a @ b with a float32 accumulator. DOT_F32 upcasts the (already rounded) operands first: only for
    bfloat16 under TRITON_INTERPRET=1, whose tl.dot multiplies bfloat16 bit patterns
    (triton-lang/triton#11584); bf16 x bf16 products are exact in float32, so results match the GPU's."""
    if DOT_F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b)


@triton.jit
def _load_tile(base, rows, S, s_row, s_col, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """(len(rows), HEAD_DIM) tile at base + rows * s_row + d * s_col; rows >= S read as 0 when MASKED."""
    ptrs = base + rows[:, None] * s_row + tl.arange(0, HEAD_DIM)[None, :] * s_col
    if MASKED:
        tile = tl.load(ptrs, mask=rows[:, None] < S, other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _store_tile(base, rows, S, s_row, s_col, value, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    ptrs = base + rows[:, None] * s_row + tl.arange(0, HEAD_DIM)[None, :] * s_col
    value = value.to(base.dtype.element_ty)
    if MASKED:
        tl.store(ptrs, value, mask=rows[:, None] < S)
    else:
        tl.store(ptrs, value)


@triton.jit
def _load_row_stat(base, rows, S, MASKED: tl.constexpr):
    """A float32 per-row statistic (lse, delta); 0 for rows >= S when MASKED."""
    if MASKED:
        x = tl.load(base + rows, mask=rows < S, other=0.0)
    else:
        x = tl.load(base + rows)
    return x


@triton.jit
def _store_row_stat(base, rows, S, value, MASKED: tl.constexpr):
    if MASKED:
        tl.store(base + rows, value, mask=rows < S)
    else:
        tl.store(base + rows, value)


# --- S <= 128: one program per (b, h) ---------------------------------------------------------------------


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
    q = _load_tile(q_ptr, rows, S, s_q_s, s_q_d, HEAD_DIM, MASK_ROWS)
    s = _mma(q, tl.trans(k), DOT_F32) * (SM_SCALE * 1.4426950408889634)  # (ROWS, BLOCK_N)
    if MASK_MAIN:
        s = tl.where((tl.arange(0, BLOCK_N) < S)[None, :], s, -float("inf"))
    m = tl.max(s, axis=1)
    if HAS_TAIL:
        st = _mma(q, tl.trans(kt), DOT_F32) * (SM_SCALE * 1.4426950408889634)  # (ROWS, BLOCK_T)
        st = tl.where((BLOCK_N + tl.arange(0, BLOCK_T) < S)[None, :], st, -float("inf"))
        m = tl.maximum(m, tl.max(st, axis=1))
    p = tl.exp2(s - m[:, None])
    denom = tl.sum(p, axis=1)
    acc = _mma(p.to(v.dtype), v, DOT_F32)  # (ROWS, HEAD_DIM) float32
    if HAS_TAIL:
        pt = tl.exp2(st - m[:, None])
        denom += tl.sum(pt, axis=1)
        acc += _mma(pt.to(v.dtype), vt, DOT_F32)
    _store_tile(o_ptr, rows, S, s_o_s, s_o_d, acc / denom[:, None], HEAD_DIM, MASK_ROWS)
    lse = (m + tl.log2(denom)) * 0.6931471805599453  # natural-log logsumexp of the scaled scores
    _store_row_stat(lse_ptr, rows, S, lse, MASK_ROWS)


@triton.jit
def _attn_fwd_one_block_kernel(
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
    k = _load_tile(k_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    v = _load_tile(v_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    if HAS_TAIL:
        tail = BLOCK_N + tl.arange(0, BLOCK_T)
        kt = _load_tile(k_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
        vt = _load_tile(v_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
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
    q = _load_tile(q_ptr, rows, S, s_q_s, s_q_d, HEAD_DIM, MASK_ROWS)
    do = _load_tile(do_ptr, rows, S, s_do_s, s_do_d, HEAD_DIM, MASK_ROWS).to(q.dtype)
    lse = _load_row_stat(lse_ptr, rows, S, MASK_ROWS) * 1.4426950408889634
    qk_scale = SM_SCALE * 1.4426950408889634
    p = tl.exp2(_mma(q, tl.trans(k), DOT_F32) * qk_scale - lse[:, None])  # (ROWS, BLOCK_N)
    if MASK_MAIN:
        p = tl.where((tl.arange(0, BLOCK_N) < S)[None, :], p, 0.0)
    dp = _mma(do, tl.trans(v), DOT_F32)
    delta = tl.sum(p * dp, axis=1)  # = rowsum(dO * O): these rows see every key here
    if HAS_TAIL:
        pt = tl.exp2(_mma(q, tl.trans(kt), DOT_F32) * qk_scale - lse[:, None])
        pt = tl.where((BLOCK_N + tl.arange(0, BLOCK_T) < S)[None, :], pt, 0.0)
        dpt = _mma(do, tl.trans(vt), DOT_F32)
        delta += tl.sum(pt * dpt, axis=1)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dv += _mma(tl.trans(p.to(q.dtype)), do, DOT_F32)
    dk += _mma(tl.trans(ds), q, DOT_F32)
    dq = _mma(ds, k, DOT_F32)
    if HAS_TAIL:
        dst = (pt * (dpt - delta[:, None])).to(q.dtype)
        dvt += _mma(tl.trans(pt.to(q.dtype)), do, DOT_F32)
        dkt += _mma(tl.trans(dst), q, DOT_F32)
        dq += _mma(dst, kt, DOT_F32)
    _store_tile(dq_ptr, rows, S, s_dq_s, s_dq_d, dq * SM_SCALE, HEAD_DIM, MASK_ROWS)
    return dk, dv, dkt, dvt


@triton.jit
def _attn_bwd_one_block_kernel(
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
    k = _load_tile(k_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    v = _load_tile(v_ptr, main, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_MAIN)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    if HAS_TAIL:
        tail = BLOCK_N + tl.arange(0, BLOCK_T)
        kt = _load_tile(k_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
        vt = _load_tile(v_ptr, tail, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
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

    _store_tile(dk_ptr, main, S, s_dq_s, s_dq_d, dk * SM_SCALE, HEAD_DIM, MASK_MAIN)
    _store_tile(dv_ptr, main, S, s_dq_s, s_dq_d, dv, HEAD_DIM, MASK_MAIN)
    if HAS_TAIL:
        _store_tile(dk_ptr, tail, S, s_dq_s, s_dq_d, dkt * SM_SCALE, HEAD_DIM, True)
        _store_tile(dv_ptr, tail, S, s_dq_s, s_dq_d, dvt, HEAD_DIM, True)


# --- S > 128: flash-attention-2 tiling --------------------------------------------------------------------


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, k_ptr, v_ptr, start_n, S, s_kv_s, s_kv_d,
              HEAD_DIM: tl.constexpr, COLS: tl.constexpr, MASKED: tl.constexpr,
              SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    """One online-softmax step over keys [start_n, start_n + COLS)."""
    cols = start_n + tl.arange(0, COLS)
    k = _load_tile(k_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    v = _load_tile(v_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    s = _mma(q, tl.trans(k), DOT_F32) * (SM_SCALE * 1.4426950408889634)  # (BLOCK_M, COLS), log2 units
    if MASKED:
        s = tl.where((cols < S)[None, :], s, -float("inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every tile holds a valid key
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + _mma(p.to(v.dtype), v, DOT_F32)
    return acc, m_new, l_i


@triton.jit
def _attn_fwd_tiled_kernel(
    # pointers: as _attn_fwd_one_block_kernel
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
    q = _load_tile(q_ptr, rows, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
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
    _store_tile(Out + b * s_o_b + h * s_o_h, rows, S, s_o_s, s_o_d, acc / l_i[:, None], HEAD_DIM, True)
    _store_row_stat(LSE + pid_bh * S, rows, S, (m_i + tl.log2(l_i)) * 0.6931471805599453, True)


@triton.jit
def _dq_tile(dq, q, do, lse, delta, k_ptr, v_ptr, start_n, S, s_kv_s, s_kv_d,
             HEAD_DIM: tl.constexpr, COLS: tl.constexpr, MASKED: tl.constexpr,
             SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    cols = start_n + tl.arange(0, COLS)
    k = _load_tile(k_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    v = _load_tile(v_ptr, cols, S, s_kv_s, s_kv_d, HEAD_DIM, MASKED)
    p = tl.exp2(_mma(q, tl.trans(k), DOT_F32) * (SM_SCALE * 1.4426950408889634) - lse[:, None])
    if MASKED:
        p = tl.where((cols < S)[None, :], p, 0.0)
    dp = _mma(do, tl.trans(v), DOT_F32)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    return dq + _mma(ds, k, DOT_F32)


@triton.jit
def _attn_bwd_dq_kernel(
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
    q = _load_tile(q_ptr, rows, S, s_qkv_s, s_qkv_d, HEAD_DIM, True)
    do = _load_tile(DO + b * s_do_b + h * s_do_h, rows, S, s_do_s, s_do_d, HEAD_DIM, True).to(q.dtype)
    o = _load_tile(Out + b * s_o_b + h * s_o_h, rows, S, s_o_s, s_o_d, HEAD_DIM, True)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)  # (BLOCK_M,)
    lse = _load_row_stat(LSE + pid_bh * S, rows, S, True) * 1.4426950408889634

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full = S // BLOCK_N * BLOCK_N
    for start_n in range(0, full, BLOCK_N):
        dq = _dq_tile(dq, q, do, lse, delta, k_ptr, v_ptr, start_n, S, s_qkv_s, s_qkv_d,
                      HEAD_DIM, BLOCK_N, False, SM_SCALE, DOT_F32)
    for start_n in range(full, S, 16):
        dq = _dq_tile(dq, q, do, lse, delta, k_ptr, v_ptr, start_n, S, s_qkv_s, s_qkv_d,
                      HEAD_DIM, 16, True, SM_SCALE, DOT_F32)
    _store_tile(DQKV + b * s_dq_b + h * s_dq_h, rows, S, s_dq_s, s_dq_d, dq * SM_SCALE, HEAD_DIM, True)


@triton.jit
def _dkdv_rows(dk, dv, k, v, col_ok, q_ptr, o_ptr, do_ptr, lse_ptr, start_m, S,
               s_q_s, s_q_d, s_o_s, s_o_d, s_do_s, s_do_d,
               HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, MASK_ROWS: tl.constexpr,
               SM_SCALE: tl.constexpr, DOT_F32: tl.constexpr):
    rows = start_m + tl.arange(0, ROWS)
    q = _load_tile(q_ptr, rows, S, s_q_s, s_q_d, HEAD_DIM, MASK_ROWS)
    do = _load_tile(do_ptr, rows, S, s_do_s, s_do_d, HEAD_DIM, MASK_ROWS).to(q.dtype)
    o = _load_tile(o_ptr, rows, S, s_o_s, s_o_d, HEAD_DIM, MASK_ROWS)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)  # recomputed here: no buffer between kernels
    lse = _load_row_stat(lse_ptr, rows, S, MASK_ROWS) * 1.4426950408889634
    qk_scale = SM_SCALE * 1.4426950408889634
    p = tl.exp2(_mma(q, tl.trans(k), DOT_F32) * qk_scale - lse[:, None])  # (ROWS, COLS)
    p = tl.where(col_ok[None, :], p, 0.0)
    dp = _mma(do, tl.trans(v), DOT_F32)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dv += _mma(tl.trans(p.to(q.dtype)), do, DOT_F32)
    dk += _mma(tl.trans(ds), q, DOT_F32)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
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
    k = _load_tile(q_ptr + s_qkv_3, cols, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_COLS)
    v = _load_tile(q_ptr + 2 * s_qkv_3, cols, S, s_qkv_s, s_qkv_d, HEAD_DIM, MASK_COLS)
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
    _store_tile(dk_ptr, cols, S, s_dq_s, s_dq_d, dk * SM_SCALE, HEAD_DIM, MASK_COLS)
    _store_tile(dv_ptr, cols, S, s_dq_s, s_dq_d, dv, HEAD_DIM, MASK_COLS)


# ---------------------------------------------------------------------------------------------------------
# Launchers: check, allocate, launch. They take an optional _Config so that bench.attention.tune can sweep.


def _triton_unsupported(qkv: torch.Tensor) -> str | None:
    """Why the Triton path cannot take this qkv, or None if it can."""
    D = qkv.shape[-1]
    if qkv.dtype not in TRITON_DTYPES:
        return f"the Triton attention takes float16/bfloat16, got {qkv.dtype}; use impl='reference'"
    if not (_MIN_HEAD_DIM <= D <= _MAX_HEAD_DIM) or D & (D - 1):
        return f"the Triton attention takes head dims that are powers of two in [16, 128], got {D}"
    if qkv.shape[0] == 0 or qkv.shape[1] == 0 or qkv.shape[3] == 0:
        return f"the Triton attention needs a non-empty qkv, got shape {tuple(qkv.shape)}"
    if not qkv.is_cuda and not isinstance(_attn_fwd_one_block_kernel, InterpretedFunction):
        return ("the Triton attention needs CUDA tensors, or TRITON_INTERPRET=1 set before kernels.attention "
                f"is imported; got a {qkv.device.type} tensor")
    return None


def _common_constants(qkv: torch.Tensor) -> dict:
    D = qkv.shape[-1]
    # DOT_F32: see _mma; only under the interpreter, whose kernels are InterpretedFunction objects
    dot_f32 = isinstance(_attn_fwd_one_block_kernel, InterpretedFunction) and qkv.dtype == torch.bfloat16
    return {"HEAD_DIM": D, "SM_SCALE": 1.0 / math.sqrt(D), "DOT_F32": dot_f32}


def _key_tile_constants(S: int) -> dict:
    main, tail = _key_tiles(S)
    return {"BLOCK_N": main, "MASK_MAIN": main > S, "BLOCK_T": tail or _TAIL, "HAS_TAIL": tail > 0}


def _head_strides(x: torch.Tensor, D: int) -> tuple[int, int, int, int]:
    """Strides of a (B, S, H*D) tensor seen as (B, S, H, D); any layout, stride 0 included."""
    sb, ss, se = x.stride()
    return sb, ss, se * D, se


def _use_one_block(S: int, cfg: _Config) -> bool:
    return S <= _ONE_BLOCK_MAX_S and not cfg.tiled


def _attn_forward(qkv: torch.Tensor, config: _Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv (B, S, 3, H, D) -> out (B, S, H*D) contiguous, lse (B, H, S) float32."""
    B, S, _, H, D = qkv.shape
    cfg = config or _fwd_config(S, D)
    out = torch.empty((B, S, H * D), dtype=qkv.dtype, device=qkv.device)
    lse = torch.empty((B, H, S), dtype=torch.float32, device=qkv.device)
    args = (qkv, out, lse, H, S, *qkv.stride(), *_head_strides(out, D))
    launch = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **_common_constants(qkv)}
    if _use_one_block(S, cfg):
        wrap_triton(_attn_fwd_one_block_kernel)[(B * H,)](
            *args, BLOCK_M=cfg.block_m, **_key_tile_constants(S), **launch)
    else:
        wrap_triton(_attn_fwd_tiled_kernel)[(triton.cdiv(S, cfg.block_m), B * H)](
            *args, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **launch)
    return out, lse


def _attn_backward(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   config: _Config | None = None) -> torch.Tensor:
    """Gradient of qkv, (B, S, 3, H, D) contiguous, from grad_out (B, S, H*D) of any strides."""
    B, S, _, H, D = qkv.shape
    cfg = config or _bwd_config(S, D)
    dqkv = torch.empty((B, S, 3, H, D), dtype=qkv.dtype, device=qkv.device)
    strides = (*qkv.stride(), *_head_strides(grad_out, D), *dqkv.stride())
    launch = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **_common_constants(qkv)}
    if _use_one_block(S, cfg):
        wrap_triton(_attn_bwd_one_block_kernel)[(B * H,)](
            qkv, grad_out, lse, dqkv, H, S, *strides,
            BLOCK_M=cfg.block_m, **_key_tile_constants(S), **launch)
        return dqkv

    wrap_triton(_attn_bwd_dq_kernel)[(triton.cdiv(S, cfg.block_m), B * H)](
        qkv, out, grad_out, lse, dqkv, H, S,
        *qkv.stride(), *_head_strides(out, D), *strides[5:],
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **launch)
    full = S // cfg.block_n * cfg.block_n  # keys in whole BLOCK_N tiles; the rest in 16-key tail tiles
    for key_start, n_tiles, cols, masked in ((0, full // cfg.block_n, cfg.block_n, False),
                                             (full, triton.cdiv(S - full, _TAIL), _TAIL, True)):
        if n_tiles:
            wrap_triton(_attn_bwd_dkdv_kernel)[(n_tiles, B * H)](
                qkv, out, grad_out, lse, dqkv, H, S, key_start,
                *qkv.stride(), *_head_strides(out, D), *strides[5:],
                BLOCK_M=cfg.block_m, COLS=cols, MASK_COLS=masked, **launch)
    return dqkv


# ---------------------------------------------------------------------------------------------------------
# Autograd binding: an autograd.Function with a separate setup_context (so torch.func.grad works) whose
# forward and backward call triton_ops (so torch.compile traces the launches). See
# shared/notes/torch-func-triton.md for what composes with what. The backward is once_differentiable: it
# runs without building a graph, and differentiating it again raises instead of returning wrong values.


@triton_op("cifar_zoo::attn_fwd", mutates_args={})
def _attn_fwd_op(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _attn_forward(qkv)


@triton_op("cifar_zoo::attn_bwd", mutates_args={})
def _attn_bwd_op(
    grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor
) -> torch.Tensor:
    return _attn_backward(grad_out, qkv, out, lse)


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(qkv):
        return _attn_fwd_op(qkv)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (qkv,) = inputs
        out, lse = output
        ctx.save_for_backward(qkv, out, lse)
        ctx.mark_non_differentiable(lse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_lse):
        qkv, out, lse = ctx.saved_tensors
        return _attn_bwd_op(grad_out, qkv, out, lse)


def attention(qkv: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """softmax(Q K^T / sqrt(D)) V for qkv (B, S, 3, H, D) -> (B, S, H*D) contiguous, differentiable.

    impl: "triton" (fused kernels; float16/bfloat16, D a power of two in [16, 128]; on CPU tensors only under
    TRITON_INTERPRET=1), "reference" (plain PyTorch, float32 math), "sdpa" (PyTorch's fused SDPA after
    permutes), or "auto": Triton for supported CUDA tensors (S > 128 only while _AUTO_TILED, else SDPA),
    the reference otherwise (float32 and CPU inputs included).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    _check_qkv(qkv)
    if impl == "auto":
        if not qkv.is_cuda or _triton_unsupported(qkv) is not None:
            impl = "reference"
        else:
            impl = "triton" if qkv.shape[1] <= _ONE_BLOCK_MAX_S or _AUTO_TILED else "sdpa"
    if impl == "reference":
        return reference_attention(qkv)
    if impl == "sdpa":
        return sdpa_attention(qkv)
    reason = _triton_unsupported(qkv)
    if reason is not None:
        raise ValueError(reason)
    out, _lse = _TritonAttention.apply(qkv)
    return out
