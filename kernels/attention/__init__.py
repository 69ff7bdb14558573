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

Two regimes, chosen by S (configs.use_one_block): up to 128 tokens one program per (b, h) keeps the head's
keys and values on chip (one_block.py); longer sequences use flash-attention-2 tiling (tiled.py).

Modules, each importable on its own:
    reference.py   the contract check, reference_attention (test oracle, CPU path), sdpa_attention (baseline)
    configs.py     launch configurations and the one-block / tiled rule
    tiles.py       @triton.jit helpers shared by the kernels (tile loads and stores, mma) and their conventions
    one_block.py   S <= 128 kernels: forward and backward, one program per (b, h)
    tiled.py       S > 128 kernels: tiled forward, dQ pass, dK/dV pass
    launch.py      launchers: check, allocate, launch (they accept a Config, for the sweep)
    ops.py         triton_op bindings with vmap rules, the autograd Function, attention(qkv, impl), its "auto" rule

Benchmark: `python -m bench attention` (against every SDPA backend); launch-configuration sweep:
`python -m bench attention tune=true`. Design and measured figures: the attention section of docs/kernels.md.
"""

from kernels.attention.ops import IMPLS, attention, auto_impl
from kernels.attention.reference import reference_attention, sdpa_attention

__all__ = ["IMPLS", "attention", "auto_impl", "reference_attention", "sdpa_attention"]
