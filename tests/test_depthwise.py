"""kernels.depthwise against its float64 reference: forward and every gradient, both layouts, three dtypes.

Without CUDA the Triton kernels run in Triton's interpreter, which reads TRITON_INTERPRET when triton is first
imported: this module sets it before importing the kernels (torch itself does not import triton). The
interpreter runs each program in Python, so the shapes are tiny: the whole file takes a few seconds per
dozen cases. With CUDA the same tests run on the GPU.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernels.depthwise import depthwise_conv2d, reference_depthwise_conv2d  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# ||out - ref|| / ||ref|| against float64: float32 accumulation; bfloat16 / float16 add the rounding of the
# output (and, with an epilogue, of the stored gradient w.r.t. the conv output): ~4e-3 and ~5e-4 measured.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
DTYPES = list(TOL)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _triton_runs_here() -> bool:
    """False when triton was imported (by another module) before TRITON_INTERPRET could be set."""
    if DEVICE == "cuda":
        return True
    from triton.runtime.interpreter import InterpretedFunction

    from kernels.depthwise.helpers import affine_relu  # a @triton.jit function like every kernel

    return isinstance(affine_relu, InterpretedFunction)


needs_triton = pytest.mark.skipif(
    not _triton_runs_here(),
    reason="triton was imported before TRITON_INTERPRET=1 was set; run this file alone or export it",
)


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """The tensors here are tiny: intra-op threads only add barriers, which on a loaded CI machine (spinning
    OpenMP workers competing for the cores) made a float64 conv2d take ~50 ms. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(N, C, H, W, k, dtype, layout, scale=False, shift=False, weight_dtype=torch.float32):
    """Fresh random leaves: x in dtype and layout, weight / scale / shift in weight_dtype (master weights)."""
    x = torch.randn(N, C, H, W, device=DEVICE, dtype=dtype).to(memory_format=LAYOUTS[layout])
    w = (torch.randn(C, 1, k, k, device=DEVICE) / k).to(weight_dtype)
    sc = (1 + 0.5 * torch.randn(C, device=DEVICE)).to(weight_dtype) if scale else None
    sh = (0.5 * torch.randn(C, device=DEVICE)).to(weight_dtype) if shift else None
    return [t.requires_grad_() if t is not None else None for t in (x, w, sc, sh)]


def float64_twins(tensors):
    return [t.detach().double().cpu().requires_grad_() if t is not None else None for t in tensors]


def check_against_reference(inputs, stride, relu, dtype, grad_y=None):
    """Run Triton and the float64 reference, backprop the same grad_y, compare output and every gradient."""
    x, w, sc, sh = inputs
    y = depthwise_conv2d(x, w, stride, sc, sh, relu, impl="triton")
    ref_inputs = float64_twins(inputs)
    y_ref = reference_depthwise_conv2d(*ref_inputs[:2], stride, *ref_inputs[2:], relu)
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt), "output must keep x's memory format"
    assert rel_err(y, y_ref) < TOL[dtype], f"forward: {rel_err(y, y_ref):.2e}"
    if grad_y is None:
        grad_y = torch.randn(y.shape, device=DEVICE, dtype=dtype)
    y.backward(grad_y)
    y_ref.backward(grad_y.double().cpu())
    for name, t, t_ref in zip(("x", "weight", "scale", "shift"), inputs, ref_inputs, strict=True):
        if t is None:
            continue
        assert t.grad is not None and t.grad.dtype == t.dtype and t.grad.shape == t.shape, name
        err = rel_err(t.grad, t_ref.grad)
        assert err < TOL[dtype], f"grad {name}: {err:.2e}"


# (N, C, H, W, k, stride, epilogue): odd sizes, batch 1, channel counts off the block sizes (3, 17, 40),
# 2x2 inputs (the last CIFAR stages), kernel 5 once; epilogues: None or which of scale / shift / relu.
CASES = [
    (2, 17, 7, 7, 3, 1, "scale,shift,relu"),
    (1, 40, 9, 9, 3, 2, None),
    (2, 3, 5, 5, 3, 2, "scale,shift,relu"),
    (2, 8, 6, 5, 3, 1, "shift"),
    (2, 17, 2, 2, 3, 2, "scale,relu"),
    (1, 17, 7, 6, 5, 1, "scale,shift,relu"),
]


@needs_triton
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_matches_reference(case, dtype, layout):
    N, C, H, W, k, stride, epilogue = case
    epilogue = epilogue or ""
    inputs = make_inputs(N, C, H, W, k, dtype, layout, "scale" in epilogue, "shift" in epilogue)
    check_against_reference(inputs, stride, "relu" in epilogue, dtype)


@needs_triton
@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_in_input_dtype(layout):
    """bfloat16 weight (no autocast): read as stored, gradient returned in bfloat16."""
    inputs = make_inputs(2, 17, 5, 5, 3, torch.bfloat16, layout, True, True, weight_dtype=torch.bfloat16)
    check_against_reference(inputs, 1, True, torch.bfloat16)


@needs_triton
@pytest.mark.parametrize("layout", LAYOUTS)
def test_expanded_and_strided_grad_output(layout):
    """grad_y as an expanded stride-0 tensor (from .sum()) and in the other memory format than y."""
    inputs = make_inputs(2, 17, 5, 5, 3, torch.float32, layout, True, True)
    x, w, sc, sh = inputs
    OH = OW = 3
    expanded = torch.randn(1, 17, 1, 1, device=DEVICE).expand(2, 17, OH, OW)
    check_against_reference(inputs, 2, True, torch.float32, grad_y=expanded)
    other = LAYOUTS["nchw" if layout == "channels_last" else "channels_last"]
    inputs = make_inputs(2, 17, 5, 5, 3, torch.float32, layout, True, False)
    grad_y = torch.randn(2, 17, OH, OW, device=DEVICE).to(memory_format=other)
    check_against_reference(inputs, 2, False, torch.float32, grad_y=grad_y)


@needs_triton
def test_sum_backward_matches_reference():
    """The plain y.sum().backward() path (grad_y arrives expanded from autograd itself)."""
    x, w, sc, sh = make_inputs(2, 8, 6, 6, 3, torch.float32, "channels_last", True, True)
    depthwise_conv2d(x, w, 1, sc, sh, True, impl="triton").sum().backward()
    xr, wr, scr, shr = float64_twins((x, w, sc, sh))
    reference_depthwise_conv2d(xr, wr, 1, scr, shr, True).sum().backward()
    for t, t_ref in zip((x, w, sc, sh), (xr, wr, scr, shr), strict=True):
        assert rel_err(t.grad, t_ref.grad) < TOL[torch.float32]


@needs_triton
@pytest.mark.parametrize("layout", LAYOUTS)
def test_func_grad(layout):
    """torch.func.grad through the autograd.Function binding, against the reference's func.grad."""
    x, w, sc, sh = (t.detach() for t in make_inputs(2, 17, 6, 6, 3, torch.float32, layout, True, True))
    grad_y = torch.randn(2, 17, 3, 3, device=DEVICE)

    def loss(impl, x, w, sc, sh):
        y = depthwise_conv2d(x, w, 2, sc, sh, True, impl=impl)
        return (y * grad_y.to(y.dtype)).sum()

    grads = torch.func.grad(lambda *a: loss("triton", *a), argnums=(0, 1, 2, 3))(x, w, sc, sh)
    ref_args = [t.double() for t in (x, w, sc, sh)]
    ref_grads = torch.func.grad(lambda *a: loss("reference", *a), argnums=(0, 1, 2, 3))(*ref_args)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        assert rel_err(g, g_ref) < TOL[torch.float32]


@needs_triton
def test_every_output_element_written(monkeypatch):
    """Outputs are allocated NaN-filled: an element a kernel forgets to write shows up as NaN."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)
    for layout in LAYOUTS:
        x, w, sc, sh = make_inputs(2, 17, 7, 7, 3, torch.float32, layout, True, True)
        y = depthwise_conv2d(x, w, 2, sc, sh, True, impl="triton")
        y.backward(torch.randn_like(y))
        for t in (y, x.grad, w.grad, sc.grad, sh.grad):
            assert torch.isfinite(t).all()


def test_gradcheck_reference():
    """The oracle itself, float64 finite differences (with scale, shift; relu's kink is avoided).

    fast_mode checks random projections of the Jacobian: a tiny float64 conv2d can take tens of ms on a loaded
    machine, and the full Jacobian needs hundreds of them."""
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(3, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for stride in (1, 2):
        assert torch.autograd.gradcheck(
            lambda *a, s=stride: reference_depthwise_conv2d(a[0], a[1], s, a[2], a[3]), (x, w, sc, sh),
            fast_mode=True,
        )


def test_triton_preferred_rule():
    """The dispatch rule of impl='auto' (kernels.depthwise.rules.triton_preferred)."""
    from kernels.depthwise import triton_preferred

    bf16, fp32 = torch.bfloat16, torch.float32
    assert triton_preferred(False, bf16, 32, 32, 1, fused=False)  # NCHW: always
    assert triton_preferred(True, bf16, 32, 32, 1, fused=True)  # fused epilogue: always
    assert not triton_preferred(True, bf16, 32, 32, 1, fused=False)  # big NHWC stride 1: cuDNN
    assert not triton_preferred(True, bf16, 8, 8, 1, fused=False)
    assert triton_preferred(True, bf16, 4, 4, 1, fused=False)
    assert triton_preferred(True, bf16, 32, 32, 2, fused=False)
    assert not triton_preferred(True, fp32, 4, 4, 1, fused=False)
    assert triton_preferred(True, fp32, 4, 4, 2, fused=False)  # 2x2 output
    assert triton_preferred(True, fp32, 2, 2, 1, fused=False)


def test_auto_on_cpu_is_reference():
    """impl='auto' runs the reference on CPU tensors (exactly), whatever TRITON_INTERPRET says."""
    x = torch.randn(2, 5, 6, 6)
    w = torch.randn(5, 1, 3, 3)
    torch.testing.assert_close(
        depthwise_conv2d(x, w, 2, impl="auto"), reference_depthwise_conv2d(x, w, 2), rtol=0, atol=0
    )


@pytest.mark.parametrize(
    "weight_shape, stride, match",
    [
        ((4, 3, 3), 1, "shape"),  # not 4-d
        ((4, 2, 3, 3), 1, "shape"),  # not depthwise
        ((4, 1, 4, 4), 1, "odd"),  # even kernel
        ((4, 1, 1, 1), 1, "odd"),  # 1x1 is not a depthwise-separable 'k x k'
        ((4, 1, 3, 5), 1, "square"),
        ((5, 1, 3, 3), 1, "channels"),  # mismatched channels
        ((4, 1, 3, 3), 3, "stride"),
        ((4, 1, 3, 3), 0, "stride"),
    ],
)
@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_bad_arguments_raise(weight_shape, stride, match, impl):
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match=match):
        depthwise_conv2d(x, torch.randn(weight_shape), stride, impl=impl)


def test_bad_options_raise():
    x, w = torch.randn(2, 4, 5, 5), torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="scale"):
        depthwise_conv2d(x, w, scale=torch.ones(3))
    with pytest.raises(ValueError, match="shift"):
        depthwise_conv2d(x, w, shift=torch.ones(4, 1))
    with pytest.raises(ValueError, match="impl"):
        depthwise_conv2d(x, w, impl="cuda")
    with pytest.raises(ValueError, match="x must"):
        depthwise_conv2d(x[0], w)
    with pytest.raises(ValueError, match="dtype"):
        depthwise_conv2d(x.double(), w.double(), impl="triton")
    with pytest.raises(ValueError, match="kernel sizes"):
        depthwise_conv2d(x, torch.randn(4, 1, 7, 7), impl="triton")
