"""Launchers of the attention kernels: check the inputs, allocate the outputs, launch.

`attention_forward` and `attention_backward` pick the one-block kernels (one_block.py) or the tiled ones
(tiled.py) by configs.use_one_block and take their launch configuration from configs.py unless given one:
the sweep (`python -m bench attention tune=true`) passes others, and `python -m bench attention`
times the default path. Each kernel indexes qkv and grad_out through their strides, so views, slices and
stride-0 (expanded) gradients need no copy; the outputs are contiguous.

The Triton path takes float16 / bfloat16, D a power of two in [16, 128], any S >= 1; CUDA tensors, or CPU
tensors when TRITON_INTERPRET=1 was set before the kernels were imported (`triton_unsupported` says why not).
"""

import math

import torch
import triton
from torch.library import wrap_triton
from triton.runtime.interpreter import InterpretedFunction

from kernels.attention.configs import TAIL, Config, bwd_config, fwd_config, key_tiles, use_one_block
from kernels.attention.one_block import attn_bwd_one_block_kernel, attn_fwd_one_block_kernel
from kernels.attention.tiled import attn_bwd_dkdv_kernel, attn_bwd_dq_kernel, attn_fwd_tiled_kernel

TRITON_DTYPES = (torch.float16, torch.bfloat16)
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128  # tl.dot needs >= 16 along every dimension; 128 bounds registers


def _interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (TRITON_INTERPRET=1 when they were decorated)."""
    return isinstance(attn_fwd_one_block_kernel, InterpretedFunction)


def triton_unsupported(qkv: torch.Tensor) -> str | None:
    """Why the Triton path cannot take this qkv, or None if it can."""
    D = qkv.shape[-1]
    if qkv.dtype not in TRITON_DTYPES:
        return f"the Triton attention takes float16/bfloat16, got {qkv.dtype}; use impl='reference'"
    if not (MIN_HEAD_DIM <= D <= MAX_HEAD_DIM) or D & (D - 1):
        return f"the Triton attention takes head dims that are powers of two in [16, 128], got {D}"
    if qkv.shape[0] == 0 or qkv.shape[1] == 0 or qkv.shape[3] == 0:
        return f"the Triton attention needs a non-empty qkv, got shape {tuple(qkv.shape)}"
    if not qkv.is_cuda and not _interpreted():
        return ("the Triton attention needs CUDA tensors, or TRITON_INTERPRET=1 set before kernels.attention "
                f"is imported; got a {qkv.device.type} tensor")
    return None


def _common_constants(qkv: torch.Tensor) -> dict:
    D = qkv.shape[-1]
    # DOT_F32: see tiles.mma; only under the interpreter, whose kernels are InterpretedFunction objects
    dot_f32 = _interpreted() and qkv.dtype == torch.bfloat16
    return {"HEAD_DIM": D, "SM_SCALE": 1.0 / math.sqrt(D), "DOT_F32": dot_f32}


def _key_tile_constants(S: int) -> dict:
    main, tail = key_tiles(S)
    return {"BLOCK_N": main, "MASK_MAIN": main > S, "BLOCK_T": tail or TAIL, "HAS_TAIL": tail > 0}


def _head_strides(x: torch.Tensor, D: int) -> tuple[int, int, int, int]:
    """Strides of a (B, S, H*D) tensor seen as (B, S, H, D); any layout, stride 0 included."""
    sb, ss, se = x.stride()
    return sb, ss, se * D, se


def attention_forward(qkv: torch.Tensor, config: Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv (B, S, 3, H, D) -> out (B, S, H*D) contiguous, lse (B, H, S) float32."""
    B, S, _, H, D = qkv.shape
    cfg = config or fwd_config(S, D)
    out = torch.empty((B, S, H * D), dtype=qkv.dtype, device=qkv.device)
    lse = torch.empty((B, H, S), dtype=torch.float32, device=qkv.device)
    args = (qkv, out, lse, H, S, *qkv.stride(), *_head_strides(out, D))
    launch = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **_common_constants(qkv)}
    if use_one_block(S, cfg):
        wrap_triton(attn_fwd_one_block_kernel)[(B * H,)](
            *args, BLOCK_M=cfg.block_m, **_key_tile_constants(S), **launch)
    else:
        wrap_triton(attn_fwd_tiled_kernel)[(triton.cdiv(S, cfg.block_m), B * H)](
            *args, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **launch)
    return out, lse


def attention_backward(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                       config: Config | None = None) -> torch.Tensor:
    """Gradient of qkv, (B, S, 3, H, D) contiguous, from grad_out (B, S, H*D) of any strides."""
    B, S, _, H, D = qkv.shape
    cfg = config or bwd_config(S, D)
    dqkv = torch.empty((B, S, 3, H, D), dtype=qkv.dtype, device=qkv.device)
    strides = (*qkv.stride(), *_head_strides(grad_out, D), *dqkv.stride())
    launch = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **_common_constants(qkv)}
    if use_one_block(S, cfg):
        wrap_triton(attn_bwd_one_block_kernel)[(B * H,)](
            qkv, grad_out, lse, dqkv, H, S, *strides,
            BLOCK_M=cfg.block_m, **_key_tile_constants(S), **launch)
        return dqkv

    wrap_triton(attn_bwd_dq_kernel)[(triton.cdiv(S, cfg.block_m), B * H)](
        qkv, out, grad_out, lse, dqkv, H, S,
        *qkv.stride(), *_head_strides(out, D), *strides[5:],
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **launch)
    full = S // cfg.block_n * cfg.block_n  # keys in whole BLOCK_N tiles; the rest in 16-key tail tiles
    for key_start, n_tiles, cols, masked in ((0, full // cfg.block_n, cfg.block_n, False),
                                             (full, triton.cdiv(S - full, TAIL), TAIL, True)):
        if n_tiles:
            wrap_triton(attn_bwd_dkdv_kernel)[(n_tiles, B * H)](
                qkv, out, grad_out, lse, dqkv, H, S, key_start,
                *qkv.stride(), *_head_strides(out, D), *strides[5:],
                BLOCK_M=cfg.block_m, COLS=cols, MASK_COLS=masked, **launch)
    return dqkv
