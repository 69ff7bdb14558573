"""Explicit randomness: random layers that draw from a key instead of torch's global generator.

`Net.apply(params, state, x, train, key)` with `key` an int64 scalar tensor makes every random layer of the net
(blocks.Dropout, blocks.DropPath) draw from a counter-based generator, a pure function of three things:

    u[i] = uniform(key, salt, i)   # salt: the layer's (and the call's, see Keyed.uniform); i: the position

so the train-mode forward is a function of its inputs alone: one key gives the same masks bit for bit; under
torch.func.vmap over a (K,) vector of keys each member draws its own; torch.compile sees the key as a graph input
(a new key is a new value, not a new graph); and no generator state needs saving in a checkpoint.

The generator is SplitMix64 (Steele, Lea & Flood 2014, "Fast Splittable Pseudorandom Number Generators"; its
finaliser `mix64` is Stafford's "Mix13"): a layer's stream is seeded by seed = mix64(key ^ salt) and its draw i
is mix64((seed + i + 1) * GOLDEN), whose top 24 bits make a float32 in [0, 1) (24 bits: every k / 2^24 is exact).
torch has no unsigned 64-bit integers, so the words are int64: multiplication wraps modulo 2^64 (two's
complement, as torch's CPU and CUDA kernels compute it), constants at or above 2^63 are written as the int64 with
the same bits, and right shifts are made logical by masking off the copies of the sign bit an arithmetic shift
brings in.

How the key reaches the layers inside torch.func.functional_call: a Net `bind`s every random module of its
skeletons to one `KeyHolder` and gives each a salt hashed from its qualified name (distinct names, distinct
streams; a layer called twice in one forward draws a second stream); `apply` puts the key in the holder for the
call and empties it after, also on an exception. Dynamo traces these writes as side effects, so the same holds in
a compiled step, with the key a graph input (tests/test_explicit_randomness.py). A layer
whose holder is empty (no key, or a module used outside a Net) draws from torch's global generator, as
nn.Dropout does.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

WORD_BITS = 64
UNIFORM_BITS = 24  # float32's significand width: the uniforms are k / 2^24, k < 2^24, all exact


def as_int64(word: int) -> int:
    """The int64 with the bits of the 64-bit word `word` (0 <= word < 2^64)."""
    return word - (1 << WORD_BITS) if word >= 1 << (WORD_BITS - 1) else word


GOLDEN = as_int64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd: SplitMix64's step between counters
MIX_1 = as_int64(0xBF58476D1CE4E5B9)  # Mix13's two multipliers
MIX_2 = as_int64(0x94D049BB133111EB)


def shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 words: torch's shift is arithmetic, so the sign copies are masked off."""
    return (z >> bits) & ((1 << (WORD_BITS - bits)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, elementwise on int64 words: a bijection of 64-bit words in which every input bit
    flips each output bit with probability about 1/2."""
    z = (z ^ shift_right(z, 30)) * MIX_1
    z = (z ^ shift_right(z, 27)) * MIX_2
    return z ^ shift_right(z, 31)


def step_key(seed: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The key of training step `step` of the run seeded `seed` (int64 tensors, broadcast elementwise: a (K,)
    vector of seeds gives K keys): draw `step` of the SplitMix64 stream seeded by mix64(seed). Two steps of one
    seed never share a key (GOLDEN is odd, mix64 a bijection); two seeds collide only if their streams' seeds
    differ by a multiple of GOLDEN below the step count, a chance of about steps / 2^63."""
    seed, step = seed.to(torch.int64), step.to(torch.int64)
    return mix64(mix64(seed) + (step + 1) * GOLDEN)


def uniform(key: torch.Tensor, salt: int, shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """float32 uniforms in [0, 1) of `shape`: draws 0, 1, ... of the stream (key, salt) in row-major order."""
    seed = mix64(key ^ salt)  # () int64: the layer's stream
    counter = torch.arange(1, math.prod(shape) + 1, dtype=torch.int64, device=device).view(shape)
    # SplitMix64's state after i steps from seed * GOLDEN. Written (seed + i) * GOLDEN, not seed * GOLDEN + i *
    # GOLDEN (the same word): inductor folds `arange * constant` into an index expression, which miscompiles
    # or crashes with 64-bit constants on the CPU; a sum with the seed first is an ordinary value.
    bits = mix64((seed + counter) * GOLDEN)
    return shift_right(bits, WORD_BITS - UNIFORM_BITS).to(torch.float32) * 2.0**-UNIFORM_BITS


def salt_of(name: str) -> int:
    """A layer's salt: 64 bits of BLAKE2b of its qualified name (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little", signed=True)


class KeyHolder:
    """The key of the `Net.apply` call in progress (None outside a call, and in a call given no key), and how
    many draws each random layer has made in it."""

    def __init__(self):
        self.key: torch.Tensor | None = None
        self.draws: dict[int, int] = {}  # salt -> draws so far in this call

    def hold(self, key: torch.Tensor | None) -> None:
        self.key, self.draws = key, {}


class Keyed:
    """Mixed into a random layer (an nn.Module): `bind` sets its salt and holder; `key()` is the key of the call
    in progress or None, in which case the layer draws from torch's global generator."""

    salt: int = 0
    holder: KeyHolder | None = None

    def key(self) -> torch.Tensor | None:
        return None if self.holder is None else self.holder.key

    def uniform(self, shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
        """The layer's uniforms of `shape` under the current key (call only when `key()` is not None). A layer
        called twice in one forward (ViT's MLP dropout, its blocks' drop path) draws a fresh stream each time, as
        flax's make_rng does: call n's salt is the layer's plus n * GOLDEN. Which call is which is fixed by the
        forward's code, so the draws stay a function of the key."""
        n = self.holder.draws.get(self.salt, 0)
        self.holder.draws[self.salt] = n + 1
        return uniform(self.holder.key, as_int64((self.salt + n * GOLDEN) % (1 << WORD_BITS)), shape, device)


def bind(module: nn.Module, holder: KeyHolder) -> None:
    """Gives every random layer in `module` the holder and a salt from its qualified name."""
    for name, m in module.named_modules():
        if isinstance(m, Keyed):
            m.salt, m.holder = salt_of(name), holder


def check_key(key: torch.Tensor | None) -> torch.Tensor | None:
    """`key` if it is None or an int64 scalar tensor (under vmap: each member's own scalar)."""
    if key is None:
        return None
    if not isinstance(key, torch.Tensor) or key.dtype != torch.int64 or key.ndim != 0:
        what = f"a {key.dtype} tensor of shape {tuple(key.shape)}" if isinstance(key, torch.Tensor) else repr(key)
        raise TypeError(f"key must be an int64 tensor of shape () (nets.step_key makes one), not {what}")
    return key
