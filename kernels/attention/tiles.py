"""@triton.jit helpers shared by the attention kernels (one_block.py, tiled.py): tile loads and stores, mma.

Conventions every attention kernel follows:
- Grids put B * H on one axis (pid_bh = b * H + h); offsets that scale with the batch are int64.
- Tiles are powers of two, at least 16 rows (the smallest tl.dot accepts; configs.TAIL). A "MASKED" tile reads
  rows >= S as zeros (which keeps every padded score finite) and never writes them; padded key columns are
  also masked out of the softmax explicitly.
- Scores are kept in log2 units (x * log2(e), log2(e) = 1.4426950408889634, ln(2) = 0.6931471805599453) so
  that exponentials are exp2, the hardware instruction. The constants are written inline, not as named
  globals, because torch.compile copies kernel sources into its generated code.
- Accumulation is float32 (mma); P and dS are rounded to the input dtype before their matrix products, as in
  flash attention.
"""

import triton
import triton.language as tl


@triton.jit
def mma(a, b, DOT_F32: tl.constexpr):
    """a @ b with a float32 accumulator. DOT_F32 upcasts the (already rounded) operands first: only for
    bfloat16 under TRITON_INTERPRET=1, whose tl.dot multiplies bfloat16 bit patterns
    (triton-lang/triton#11584); bf16 x bf16 products are exact in float32, so results match the GPU's."""
    if DOT_F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b)


@triton.jit
def load_tile(base, rows, S, s_row, s_col, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """(len(rows), HEAD_DIM) tile at base + rows * s_row + d * s_col; rows >= S read as 0 when MASKED."""
    ptrs = base + rows[:, None] * s_row + tl.arange(0, HEAD_DIM)[None, :] * s_col
    if MASKED:
        tile = tl.load(ptrs, mask=rows[:, None] < S, other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def store_tile(base, rows, S, s_row, s_col, value, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """Write value (len(rows), HEAD_DIM) in base's dtype at base + rows * s_row + d * s_col; rows >= S are
    skipped when MASKED."""
    ptrs = base + rows[:, None] * s_row + tl.arange(0, HEAD_DIM)[None, :] * s_col
    value = value.to(base.dtype.element_ty)
    if MASKED:
        tl.store(ptrs, value, mask=rows[:, None] < S)
    else:
        tl.store(ptrs, value)


@triton.jit
def load_row_stat(base, rows, S, MASKED: tl.constexpr):
    """A float32 per-row statistic (lse, delta); 0 for rows >= S when MASKED."""
    if MASKED:
        x = tl.load(base + rows, mask=rows < S, other=0.0)
    else:
        x = tl.load(base + rows)
    return x


@triton.jit
def store_row_stat(base, rows, S, value, MASKED: tl.constexpr):
    """Write a float32 per-row statistic; rows >= S are skipped when MASKED."""
    if MASKED:
        tl.store(base + rows, value, mask=rows < S)
    else:
        tl.store(base + rows, value)

