"""kernels.attention against a float64 reference: forward and the gradient of qkv, several layouts, func.grad.

Without CUDA the Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1, set below before anything
imports the kernels: @triton.jit reads it when it decorates); with CUDA they run on the GPU. Shapes stay tiny
(B * H <= 4) because the interpreter executes every program in numpy.
"""

import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernels.attention import attention, auto_impl, reference_attention  # noqa: E402

# ||kernel - ref64|| / ||ref64||. Measured in the interpreter: bf16 ~5e-3 forward / ~6e-3 gradients, fp16
# ~3e-4 / ~3e-4 (P is rounded to the input dtype before P V, as in flash attention); about 3x headroom.
TOLERANCE = {
    torch.bfloat16: {"out": 1.5e-2, "grad": 2e-2},
    torch.float16: {"out": 1.5e-3, "grad": 2e-3},
}
DTYPES = list(TOLERANCE)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||; the absolute error where b is exactly zero (dQ, dK at S = 1)."""
    a, b = a.double(), b.double()
    scale = b.norm()
    return ((a - b).norm() / (scale if scale > 0 else 1.0)).item()


def reference_out_and_grad(qkv: torch.Tensor, grad_out: torch.Tensor):
    """float64 forward and gradient of qkv, the oracle for every check."""
    x = qkv.detach().double().requires_grad_(True)
    out = reference_attention(x)
    (grad,) = torch.autograd.grad(out, x, grad_out.double())
    return out, grad


def assert_close(out, grad, ref_out, ref_grad, dtype):
    tol = TOLERANCE[dtype]
    assert out.shape == ref_out.shape and out.dtype == dtype and out.is_contiguous()
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert rel_err(out, ref_out) < tol["out"], rel_err(out, ref_out)
    for i, name in enumerate("qkv"):  # dim 2 of the gradient holds dQ, dK, dV
        err = rel_err(grad[:, :, i], ref_grad[:, :, i])
        assert err < tol["grad"], f"d{name}: {err}"


def triton_out_and_grad(qkv_leaf, qkv_view, grad_out):
    out = attention(qkv_view, impl="triton")
    (grad,) = torch.autograd.grad(out, qkv_leaf, grad_out)
    return out, grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(  # S not a multiple of 16, both head dims, B x H alternating (interpreter time)
    "B,S,H,D", [(2, 17, 2, 32), (1, 17, 3, 64), (1, 65, 3, 32), (2, 65, 2, 64), (3, 65, 1, 64)]
)
def test_matches_reference(B, S, H, D, dtype):
    qkv = torch.randn(B, S, 3, H, D, device=DEVICE, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(B, S, H * D, device=DEVICE, dtype=dtype)
    out, grad = triton_out_and_grad(qkv, qkv, grad_out)
    assert_close(out, grad, *reference_out_and_grad(qkv, grad_out), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "B,S,H,D", [(1, 130, 2, 32), (2, 1, 1, 16), (1, 64, 2, 32)], ids=["tiled-S130", "S1-D16", "S64-no-tail"]
)
def test_edge_shapes(B, S, H, D, dtype):
    """S > 128 takes the tiled flash path (dQ kernel, then dK/dV kernels); S = 1 pads to a 16-row tile;
    S = 64 fills one key tile exactly (no tail tile)."""
    qkv = torch.randn(B, S, 3, H, D, device=DEVICE, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(B, S, H * D, device=DEVICE, dtype=dtype)
    out, grad = triton_out_and_grad(qkv, qkv, grad_out)
    assert_close(out, grad, *reference_out_and_grad(qkv, grad_out), dtype)


def _qkv_view(layout, B, S, H, D, dtype):
    """(leaf, (B, S, 3, H, D) non-contiguous view of it)."""
    if layout == "linear-slice":  # a Linear output with extra features, sliced then reshaped
        leaf = torch.randn(B, S, 3 * H * D + 8, device=DEVICE, dtype=dtype, requires_grad=True)
        return leaf, leaf[..., : 3 * H * D].unflatten(-1, (3, H, D))
    if layout == "seq-major":  # (S, B, ...) storage, batch and sequence swapped
        leaf = torch.randn(S, B, 3, H, D, device=DEVICE, dtype=dtype, requires_grad=True)
        return leaf, leaf.transpose(0, 1)
    if layout == "stride2-d":  # every other element along the head dim
        leaf = torch.randn(B, S, 3, H, 2 * D, device=DEVICE, dtype=dtype, requires_grad=True)
        return leaf, leaf[..., ::2]
    raise ValueError(layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["linear-slice", "seq-major", "stride2-d"])
def test_noncontiguous_qkv(layout, dtype):
    B, S, H, D = 2, 33, 2, 32
    leaf, qkv = _qkv_view(layout, B, S, H, D, dtype)
    assert not qkv.is_contiguous()
    grad_out = torch.randn(B, S, H * D, device=DEVICE, dtype=dtype)
    out = attention(qkv, impl="triton")
    grad, grad_leaf = torch.autograd.grad(out, (qkv, leaf), grad_out)
    assert_close(out, grad, *reference_out_and_grad(qkv, grad_out), dtype)
    # the gradient of the underlying storage (zero where the view does not reach)
    ref_leaf = leaf.detach().double().requires_grad_(True)
    (ref_grad_leaf,) = torch.autograd.grad(
        reference_attention(_qkv_like(layout, ref_leaf, H, D)), ref_leaf, grad_out.double()
    )
    assert rel_err(grad_leaf, ref_grad_leaf) < TOLERANCE[dtype]["grad"]


def _qkv_like(layout, leaf, H, D):
    """The same view as _qkv_view, of another leaf."""
    if layout == "linear-slice":
        return leaf[..., : 3 * H * D].unflatten(-1, (3, H, D))
    if layout == "seq-major":
        return leaf.transpose(0, 1)
    return leaf[..., ::2]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_expanded_grad_output(dtype):
    """grad_out with stride 0 (from .sum(), or a per-feature weight broadcast) is read through its strides."""
    B, S, H, D = 2, 33, 2, 32
    qkv = torch.randn(B, S, 3, H, D, device=DEVICE, dtype=dtype, requires_grad=True)
    per_feature = torch.randn(H * D, device=DEVICE, dtype=dtype)
    ones = torch.ones((), device=DEVICE, dtype=dtype)
    for grad_out in (per_feature.expand(B, S, H * D), ones.expand(B, S, H * D)):
        assert 0 in grad_out.stride()
        out, grad = triton_out_and_grad(qkv, qkv, grad_out)
        assert_close(out, grad, *reference_out_and_grad(qkv, grad_out.contiguous()), dtype)
    # the stride-0 gradient as autograd makes it
    attention(qkv, impl="triton").sum().backward()
    _, ref_grad = reference_out_and_grad(qkv, torch.ones(B, S, H * D, device=DEVICE))
    assert rel_err(qkv.grad, ref_grad) < TOLERANCE[dtype]["grad"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_func_grad(dtype):
    B, S, H, D = 1, 65, 2, 64
    qkv = torch.randn(B, S, 3, H, D, device=DEVICE, dtype=dtype)
    weight = torch.randn(B, S, H * D, device=DEVICE, dtype=dtype)

    def loss(x):
        return (attention(x, impl="triton") * weight).sum()

    _, ref_grad = reference_out_and_grad(qkv, weight)
    assert rel_err(torch.func.grad(loss)(qkv), ref_grad) < TOLERANCE[dtype]["grad"]
    # a plain .sum() hands the backward an expanded stride-0 gradient
    _, ref_grad = reference_out_and_grad(qkv, torch.ones_like(weight))
    grad_sum = torch.func.grad(lambda x: attention(x, impl="triton").float().sum())(qkv)
    assert rel_err(grad_sum, ref_grad) < TOLERANCE[dtype]["grad"]


def test_auto_dispatch():
    """"auto" takes the reference for float32 and for CPU tensors, the kernels for fp16/bf16 on CUDA."""
    qkv32 = torch.randn(2, 9, 3, 2, 16, device=DEVICE)
    assert auto_impl(qkv32) == "reference"
    assert torch.equal(attention(qkv32), reference_attention(qkv32))
    qkv16 = torch.randn(2, 9, 3, 2, 16, device=DEVICE, dtype=torch.bfloat16)
    assert auto_impl(qkv16) == ("reference" if DEVICE == "cpu" else "triton")
    if DEVICE == "cpu":
        assert torch.equal(attention(qkv16), reference_attention(qkv16))
    else:
        assert torch.equal(attention(qkv16), attention(qkv16, impl="triton"))


def test_reference_against_sdpa_and_gradcheck():
    """The oracle itself: equal to PyTorch's SDPA after permutes, and its float64 gradient checks out."""
    B, S, H, D = 2, 5, 2, 4
    qkv = torch.randn(B, S, 3, H, D, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, D)
    sdpa = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, H * D)
    assert rel_err(reference_attention(qkv), sdpa) < 1e-12
    assert torch.equal(attention(qkv, impl="sdpa"), sdpa)
    assert torch.autograd.gradcheck(reference_attention, (qkv,), fast_mode=True)


@pytest.mark.parametrize(
    "shape,impl,match",
    [
        ((2, 5, 3, 16), "auto", "rank 4"),
        ((2, 5, 4, 2, 16), "auto", "dim 2 must be 3"),
        ((2, 5, 2, 2, 16), "reference", "dim 2 must be 3"),
        ((2, 5, 3, 2, 16), "fast", "impl must be one of"),
        ((2, 5, 3, 2, 48), "triton", "powers of two"),
    ],
)
def test_errors(shape, impl, match):
    qkv = torch.randn(*shape, device=DEVICE, dtype=torch.float16)
    with pytest.raises(ValueError, match=match):
        attention(qkv, impl=impl)


def test_errors_triton_float32_and_reference_rank():
    with pytest.raises(ValueError, match="float16/bfloat16"):
        attention(torch.randn(1, 4, 3, 1, 16, device=DEVICE), impl="triton")
    with pytest.raises(ValueError, match="rank 3"):
        reference_attention(torch.randn(4, 3, 16))
