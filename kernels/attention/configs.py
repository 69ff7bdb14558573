"""Launch configurations of the attention kernels, and the rule that picks one-block or tiled kernels.

The rule (`use_one_block`): up to ONE_BLOCK_MAX_S = 128 tokens, one program per (b, h) (one_block.py): the
head's keys and values, at most 2 x 128 x D elements (32 KiB at D = 64 in 16 bits), stay on chip while the
program walks its queries, so Q, K, V and dO are read once. Longer sequences go to the flash-attention-2
kernels (tiled.py), whose programs hold one query block and one key tile at a time. `Config.tiled` forces the
tiled kernels at S <= 128, so that the sweep can compare the two.

Key tiles are powers of two of at least TAIL = 16 rows (tl.dot's minimum). A sequence of 65 = 64 patches + a
class token would waste half of a 128 tile, so it is cut into a main tile and a small tail tile: 65 -> 64 + 16.

The configurations are fixed per regime instead of autotuned: the choice stays deterministic, costs nothing at
the first call, and is the same under torch.compile. Each is the fastest of the launch-configuration sweep
(`python -m bench attention tune=true`, CUDA-graph GPU time on the H100, bfloat16) at the CIFAR ViT shapes: at
S <= 128, 64-row query chunks with 4 warps beat 32-row chunks, 8 warps and the tiled path, forward and
backward; query chunks never exceed the main key tile (S = 17 -> 16-row chunks). The figures are in the
attention section of docs/kernels.md; end-to-end timings come from `python -m bench attention`.

The tiled backward runs unpipelined (num_stages=1) and each of its kernels recomputes delta from O and dO:
two pipeline stages with delta passed between launches in a buffer gave run-to-run different gradients on the
H100 with triton 3.6 (cause not isolated; bitwise repeatable in the interpreter). `test_backward_is_deterministic`
in tests/test_attention_gpu.py checks the current kernels.
"""

from typing import NamedTuple

import triton

ONE_BLOCK_MAX_S = 128  # up to this many tokens a head's keys and values stay on chip
TAIL = 16  # rows of a tail tile: the smallest tile tl.dot accepts


class Config(NamedTuple):
    """One launch configuration; bench/attention.py's sweep builds others and passes them to the launchers."""

    block_m: int  # query rows per chunk (one-block) or per program (tiled)
    block_n: int  # keys per tile in the tiled path; the one-block path derives its key tiles from S (key_tiles)
    num_warps: int
    num_stages: int
    tiled: bool = False  # force the flash-style path at S <= 128 (for comparisons in the sweep)


def key_tiles(S: int) -> tuple[int, int]:
    """(main, tail) tile sides covering S keys at S <= 128: main = largest power of two <= S (at least 16),
    tail = 0 or a power of two >= 16 covering the S - main keys left (65 -> (64, 16), 64 -> (64, 0))."""
    main = max(TAIL, 1 << (S.bit_length() - 1))
    rest = S - main
    return main, (max(TAIL, triton.next_power_of_2(rest)) if rest > 0 else 0)


def use_one_block(S: int, cfg: Config) -> bool:
    """Whether S tokens go to the one-program-per-head kernels (True) or the tiled ones (False)."""
    return S <= ONE_BLOCK_MAX_S and not cfg.tiled


def fwd_config(S: int, D: int) -> Config:
    """The forward's launch configuration at S tokens, head dim D."""
    if S <= ONE_BLOCK_MAX_S:
        return Config(block_m=min(64, key_tiles(S)[0]), block_n=0, num_warps=4, num_stages=2)
    return Config(block_m=64, block_n=64, num_warps=4, num_stages=3)


def bwd_config(S: int, D: int) -> Config:
    """The backward's launch configuration at S tokens, head dim D (unpipelined: see the module docstring)."""
    if S <= ONE_BLOCK_MAX_S:
        return Config(block_m=min(64, key_tiles(S)[0]), block_n=0, num_warps=4, num_stages=1)
    return Config(block_m=64, block_n=64, num_warps=4, num_stages=1)
