"""The differentiable attention op: triton_op bindings, the autograd Function, and `attention(qkv, impl)`.

The autograd.Function has a separate setup_context (so torch.func.grad works) and its forward and backward
call triton_ops (so torch.compile traces the launches into its graph); docs/kernels.md says
which bindings compose with what. The backward is once_differentiable: it runs without building a graph, and
differentiating it again raises instead of returning wrong values. Under torch.func.vmap (K members, each with
its own batch) both triton_ops fold the member dim into the batch dim and launch once (their vmap rules, below);
the Function generates its vmap rule from them, so vmap(grad(f)) and grad(vmap(f)) work.

The rule of impl="auto" (`auto_impl`): the kernels for float16 / bfloat16 CUDA tensors they support, with S up
to configs.ONE_BLOCK_MAX_S always and above it while AUTO_TILED (else PyTorch's SDPA); the reference for
everything else (float32, float64, CPU tensors). `python -m bench attention` times the kernels against SDPA.
"""

import torch
from torch.library import triton_op

from kernels.attention.configs import ONE_BLOCK_MAX_S
from kernels.attention.launch import attention_backward, attention_forward, triton_unsupported
from kernels.attention.reference import check_qkv, reference_attention, sdpa_attention

IMPLS = ("auto", "triton", "reference", "sdpa")
# Whether "auto" sends S > ONE_BLOCK_MAX_S to the tiled kernels (True) or to PyTorch's SDPA (False): the switch
# to turn if the tiled backward stops giving bitwise repeatable gradients on some GPU or Triton version
# (tests/test_attention_gpu.py, test_backward_is_deterministic). Read at every call, so a test can
# monkeypatch.setattr(kernels.attention.ops, "AUTO_TILED", False).
AUTO_TILED = True


@triton_op("cifar_zoo::attn_fwd", mutates_args={})
def _attn_fwd_op(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_forward(qkv)


@triton_op("cifar_zoo::attn_bwd", mutates_args={})
def _attn_bwd_op(
    grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor
) -> torch.Tensor:
    return attention_backward(grad_out, qkv, out, lse)


# vmap rules: under torch.func.vmap over K members the member dim folds into the batch dim (attention never mixes
# batch elements), so K members of B sequences are one launch over K*B sequences. An argument without the member
# dim (shared by every member) is expanded first.


def _fold_batch(t: torch.Tensor, bdim: int | None, K: int) -> torch.Tensor:
    """Member dim at bdim, per-member (B, ...) -> (K*B, ...): a view where the strides allow, else a copy."""
    t = t.movedim(bdim, 0) if bdim is not None else t.expand(K, *t.shape)
    return t.flatten(0, 1)


@_attn_fwd_op.register_vmap
def _attn_fwd_vmap(info, in_dims, qkv):
    K = info.batch_size
    out, lse = _attn_fwd_op(_fold_batch(qkv, in_dims[0], K))
    return (out.unflatten(0, (K, -1)), lse.unflatten(0, (K, -1))), (0, 0)


@_attn_bwd_op.register_vmap
def _attn_bwd_vmap(info, in_dims, grad_out, qkv, out, lse):
    K = info.batch_size
    grad_out, qkv, out, lse = (_fold_batch(t, d, K) for t, d in zip((grad_out, qkv, out, lse), in_dims, strict=True))
    # the kernels index qkv, out and grad_out through their strides but read lse as a dense (B, H, S) tensor
    return _attn_bwd_op(grad_out, qkv, out, lse.contiguous()).unflatten(0, (K, -1)), 0


class _TritonAttention(torch.autograd.Function):
    generate_vmap_rule = True  # vmap runs forward and backward batched; the triton_ops fold the members

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


def auto_impl(qkv: torch.Tensor) -> str:
    """The implementation impl="auto" runs for this qkv: "triton", "sdpa" or "reference"."""
    if not qkv.is_cuda or triton_unsupported(qkv) is not None:
        return "reference"
    return "triton" if qkv.shape[1] <= ONE_BLOCK_MAX_S or AUTO_TILED else "sdpa"


def attention(qkv: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """softmax(Q K^T / sqrt(D)) V for qkv (B, S, 3, H, D) -> (B, S, H*D) contiguous, differentiable.

    impl: "triton" (fused kernels; float16/bfloat16, D a power of two in [16, 128]; on CPU tensors only under
    TRITON_INTERPRET=1), "reference" (plain PyTorch, float32 math), "sdpa" (PyTorch's fused SDPA after
    permutes), or "auto" (`auto_impl`): Triton for supported CUDA tensors (S > 128 only while AUTO_TILED, else
    SDPA), the reference otherwise (float32 and CPU inputs included).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    check_qkv(qkv)
    if impl == "auto":
        impl = auto_impl(qkv)
    if impl == "reference":
        return reference_attention(qkv)
    if impl == "sdpa":
        return sdpa_attention(qkv)
    reason = triton_unsupported(qkv)
    if reason is not None:
        raise ValueError(reason)
    out, _lse = _TritonAttention.apply(qkv)
    return out
