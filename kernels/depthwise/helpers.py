"""What the depthwise kernels and their launchers share: the launch configuration type, integer helpers, the
launch itself, the memory layouts, and the @triton.jit helpers that more than one kernel calls.

Layouts. Tensors reach the kernels dense in x's layout: channels_last offsets are ((n*H + h)*W + w)*C + c, NCHW
offsets ((n*C + c)*H + h)*W + w; the weight is read as (C, K*K). Index arithmetic is int32. Tensors that are not
dense in that layout (slices, an expanded stride-0 grad_y from `.sum()`) are copied to it first (`dense`).

Launching. `launch` routes a launch through torch.library.wrap_triton when it runs inside a triton_op (so that
torch.compile sees it) and launches directly in eager mode; CPU tensors run the kernels in Triton's interpreter,
which needs TRITON_INTERPRET=1 before triton is first imported.

Every other module of the package may import this one; it imports none of them.
"""

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton


class LaunchConfig(NamedTuple):
    """A kernel's tile and warps. For the tile kernels (rows, cols) = (pixels or planes, channels or pixels);
    for the row-walking kernels (rows and the one-pass window) block_r is the rows a program walks down."""

    block_r: int  # tile rows: pixels (channels_last) or planes / channels (NCHW); ROWS for the row walkers
    block_k: int  # tile columns: channels (channels_last) or pixels of a plane (NCHW)
    num_warps: int


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Like triton.next_power_of_2, whose calls cost microseconds each (it unwraps constexprs)."""
    return 1 << max(0, n - 1).bit_length()


def launch(kernel, grid, wrap: bool, num_warps: int, device: torch.device, *args, **consts) -> None:
    """kernel[grid](*args, **consts): through wrap_triton when `wrap` (inside a triton_op), in Triton's
    interpreter for CPU tensors (without num_warps, which it ignores)."""
    if device.type == "cuda":
        launcher = wrap_triton(kernel) if wrap else kernel
        launcher[grid](*args, **consts, num_warps=num_warps)
        return
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(kernel, InterpretedFunction):
        raise RuntimeError(
            "impl='triton' on CPU tensors runs the kernels in Triton's interpreter, which needs "
            "TRITON_INTERPRET=1 in the environment before triton is first imported; or use impl='reference'"
        )
    kernel[grid](*args, **consts)


def is_channels_last(x: torch.Tensor) -> bool:
    """The kernels' layout for x: channels_last if x is (or is closest to) channels_last, else NCHW."""
    if x.is_contiguous():
        return False
    if _dense_channels_last(x):
        return True
    return x.stride(1) < x.stride(3)  # neither: follow the innermost of C and W


def _dense_channels_last(x: torch.Tensor) -> bool:
    """x.is_contiguous(memory_format=torch.channels_last), from the strides: inside torch.func.vmap a tensor
    answers that query only for contiguous_format. Size-1 dims may have any stride, as in PyTorch's own rule."""
    N, C, H, W = x.shape
    expected = (H * W * C, 1, W * C, C)
    return all(n == 1 or s == e for n, s, e in zip(x.shape, x.stride(), expected, strict=True))


def dense(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t itself when dense in the layout, else a dense copy (slices, expanded gradients)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)


def empty_in_layout(shape, like: torch.Tensor, channels_last: bool, dtype=None) -> torch.Tensor:
    """An uninitialised (N, C, H, W) output in the layout, allocated by its strides, not memory_format=.

    Inside a triton_op, Inductor (torch 2.11) lowers empty(memory_format=channels_last) as a contiguous empty
    (its `empty` lowering drops memory_format) and copies that into the strides the op was traced with: a kernel
    that writes NaN over the whole output before ours writes it. empty_strided stays a no-op there
    (tests/test_depthwise_gpu.py checks that no compiled graph stores a NaN)."""
    N, C, H, W = shape
    strides = (H * W * C, 1, W * C, C) if channels_last else (C * H * W, H * W, W, 1)
    return torch.empty_strided(shape, strides, device=like.device, dtype=dtype or like.dtype)


# ---------------------------------------------------------------------------------------------------------
# @triton.jit helpers shared by the kernels. A 3x3 weight is read as (C, 9), tap T = kh * 3 + kw.

@triton.jit
def affine_relu(acc, sc, sh, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, RELU: tl.constexpr):
    """The forward epilogue: relu(acc * sc + sh), each step only if the kernel has it."""
    if HAS_SCALE:
        acc = acc * sc
    if HAS_SHIFT:
        acc = acc + sh
    if RELU:
        acc = tl.maximum(acc, 0.0)
    return acc


@triton.jit
def tap_weight(w_ptr, c, c_ok, T: tl.constexpr):
    """weight[c, tap T] of a 3x3 kernel read as (C, 9), in float32."""
    return tl.load(w_ptr + c * 9 + T, mask=c_ok, other=0.0).to(tl.float32)


@triton.jit
def flippable_tap_weight(w_ptr, c, c_ok, T: tl.constexpr, FLIP: tl.constexpr):
    """weight[c, tap T] (or tap 8 - T when FLIP) of a (C, 9) weight, float32, as a (1, BLOCK_K) row."""
    return tl.load(w_ptr + c * 9 + (8 - T if FLIP else T), mask=c_ok, other=0.0).to(tl.float32)


@triton.jit
def load_row_tiles(x_ptr, row, ok, col0, col1, col2, ok0, ok1, ok2, H: tl.constexpr, W: tl.constexpr,
                   C: tl.constexpr, UPCAST: tl.constexpr):
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
def _dot3(a0, a1, a2, w0, w1, w2):
    return a0.to(tl.float32) * w0 + a1.to(tl.float32) * w1 + a2.to(tl.float32) * w2


@triton.jit
def window_conv(a0, a1, a2, b0, b1, b2, d0, d1, d2, w0, w1, w2, w3, w4, w5, w6, w7, w8):
    """The 3x3 convolution at each pixel of an output row from its window's three rows, in float32."""
    return _dot3(a0, a1, a2, w0, w1, w2) + _dot3(b0, b1, b2, w3, w4, w5) + _dot3(d0, d1, d2, w6, w7, w8)


@triton.jit
def _store_part_row(part_ptr, ROW: tl.constexpr, acc, c, C: tl.constexpr):
    """part[program, ROW, c] = the column sums of acc (BLOCK_R, BLOCK_K); part_ptr points at the program's."""
    tl.store(part_ptr + ROW * C + c, tl.sum(acc, axis=0), mask=c < C)


@triton.jit
def store_parts3x3(part_ptr, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, acc8, acc_scale, acc_shift, c,
                   C: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr):
    """The program's row of the (G, 9 + 2, C) partial sums of a 3x3 weight pass: per tap (row-major), then dscale
    and dshift; kernels.depthwise.weight's finishing kernel adds the rows."""
    part = part_ptr + tl.program_id(0) * ((9 + 2) * C)
    _store_part_row(part, 0, acc0, c, C)
    _store_part_row(part, 1, acc1, c, C)
    _store_part_row(part, 2, acc2, c, C)
    _store_part_row(part, 3, acc3, c, C)
    _store_part_row(part, 4, acc4, c, C)
    _store_part_row(part, 5, acc5, c, C)
    _store_part_row(part, 6, acc6, c, C)
    _store_part_row(part, 7, acc7, c, C)
    _store_part_row(part, 8, acc8, c, C)
    if HAS_SCALE:
        _store_part_row(part, 9, acc_scale, c, C)
    if HAS_SHIFT:
        _store_part_row(part, 10, acc_shift, c, C)
