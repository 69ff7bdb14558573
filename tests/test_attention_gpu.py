"""kernels.attention on CUDA: real ViT-on-CIFAR shapes against a float64 reference, and inside torch.compile.

Skipped without CUDA. The compiled case follows docs/kernels.md ("Binding a Triton kernel"): leaf tensors made outside
the compiled function, gradients through torch.autograd.grad, torch._dynamo.config.trace_autograd_ops = True
(where the attribute exists) so that dynamo traces the backward too: one graph, no breaks.
"""

import contextlib

import pytest
import torch

import kernels.attention.ops as attention_ops
from kernels.attention import attention, auto_impl, reference_attention, sdpa_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# ||kernel - ref64|| / ||ref64||, the same budget as the interpreter tests in tests/test_attention.py
TOLERANCE = {
    torch.bfloat16: {"out": 1.5e-2, "grad": 2e-2},
    torch.float16: {"out": 1.5e-3, "grad": 2e-3},
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def trace_autograd_ops():
    """Let dynamo trace torch.autograd.grad (one graph instead of three), where this torch has the switch."""
    if hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return torch._dynamo.config.patch(trace_autograd_ops=True)
    return contextlib.nullcontext()


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize(
    "B,S,H,D",
    [(256, 65, 8, 64), (512, 65, 12, 32), (128, 64, 6, 64), (64, 257, 6, 64), (32, 257, 3, 32)],
)
def test_real_shapes(B, S, H, D, dtype):
    qkv = torch.randn(B, S, 3, H, D, device="cuda", dtype=dtype, requires_grad=True)
    grad_out = torch.randn(B, S, H * D, device="cuda", dtype=dtype)
    out = attention(qkv)  # "auto" must pick the kernels here
    (grad,) = torch.autograd.grad(out, qkv, grad_out)
    if auto_impl(qkv) == "triton":  # S > 128 goes to SDPA while kernels.attention.ops.AUTO_TILED is off
        assert type(out.grad_fn).__name__ == "_TritonAttentionBackward"

    x = qkv.detach().double().requires_grad_(True)
    ref_out = reference_attention(x)
    (ref_grad,) = torch.autograd.grad(ref_out, x, grad_out.double())
    errors = {"out": rel_err(out, ref_out)}
    errors |= {f"d{name}": rel_err(grad[:, :, i], ref_grad[:, :, i]) for i, name in enumerate("qkv")}
    assert errors["out"] < TOLERANCE[dtype]["out"], errors
    assert max(errors[g] for g in ("dq", "dk", "dv")) < TOLERANCE[dtype]["grad"], errors


def test_auto_tiled_switch(monkeypatch):
    """AUTO_TILED decides where "auto" sends S > 128 (tiled kernels or SDPA); S <= 128 stays on the kernels."""
    long = torch.randn(2, 257, 3, 2, 32, device="cuda", dtype=torch.bfloat16)
    short = torch.randn(2, 65, 3, 2, 32, device="cuda", dtype=torch.bfloat16)
    monkeypatch.setattr(attention_ops, "AUTO_TILED", True)
    assert (auto_impl(long), auto_impl(short)) == ("triton", "triton")
    monkeypatch.setattr(attention_ops, "AUTO_TILED", False)
    assert (auto_impl(long), auto_impl(short)) == ("sdpa", "triton")
    assert torch.equal(attention(long), sdpa_attention(long))


@pytest.mark.parametrize("S", [65, 257])
def test_backward_is_deterministic(S):
    """Same inputs, same gradient bits: a compiler scheduling race shows up here first."""
    B, H, D = 64, 6, 64
    qkv = torch.randn(B, S, 3, H, D, device="cuda", dtype=torch.float16, requires_grad=True)
    grad_out = torch.randn(B, S, H * D, device="cuda", dtype=torch.float16)
    out = attention(qkv, impl="triton")
    grads = [torch.autograd.grad(out, qkv, grad_out, retain_graph=True)[0] for _ in range(3)]
    assert all(torch.equal(g, grads[0]) for g in grads[1:])


def _loss_and_grad(qkv, proj):
    """A ViT-like use: attention, an output projection, a loss, and the gradient of qkv."""
    out = attention(qkv)  # (B, S, H*D)
    loss = (out @ proj).float().sin().mean()
    (grad,) = torch.autograd.grad(loss, qkv)
    return loss, grad


@pytest.mark.parametrize("S", [65, 257])
def test_compiled_equals_eager(S):
    B, H, D = 32, 6, 64
    qkv = torch.randn(B, S, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    proj = torch.randn(H * D, H * D, device="cuda", dtype=torch.bfloat16) / (H * D) ** 0.5
    loss, grad = _loss_and_grad(qkv, proj)
    torch._dynamo.reset()
    with trace_autograd_ops():
        c_loss, c_grad = torch.compile(_loss_and_grad)(qkv, proj)
    assert rel_err(c_loss, loss) < 1e-3
    assert rel_err(c_grad, grad) < 1e-2  # same kernels; inductor may round the fused projection differently


def test_compile_has_no_graph_breaks():
    B, S, H, D = 8, 65, 4, 32
    qkv = torch.randn(B, S, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    proj = torch.randn(H * D, H * D, device="cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    with trace_autograd_ops():
        explanation = torch._dynamo.explain(_loss_and_grad)(qkv, proj)
    assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
    assert explanation.graph_count == 1
