"""The attention contract in plain PyTorch: the input check, the test oracle and CPU path, and the SDPA baseline.

qkv has shape (B, S, 3, H, D), exactly a Linear(dim, 3*H*D) output reshaped; every implementation returns
softmax(Q K^T / sqrt(D)) V as a (B, S, H*D) tensor, ready for the output projection. Non-causal, no mask, no
dropout. `python -m bench attention` times the kernels against sdpa_attention under every SDPA backend.
"""

import math

import torch


def check_qkv(qkv: torch.Tensor) -> None:
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
    check_qkv(qkv)
    B, S, _, H, D = qkv.shape
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, D), strided views
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, H * D)


def reference_attention(qkv: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D)) V in plain PyTorch: the CPU path and the test oracle.

    qkv (B, S, 3, H, D) -> (B, S, H*D) in qkv's dtype; computed in float32 (float64 for float64 inputs).
    """
    check_qkv(qkv)
    B, S, _, H, D = qkv.shape
    compute_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    q, k, v = qkv.to(compute_dtype).unbind(2)  # each (B, S, H, D)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)  # (B, H, S, S)
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)  # (B, S, H, D)
    return out.reshape(B, S, H * D).to(qkv.dtype)
