"""kernels.depthwise on the GPU at real CIFAR shapes, and inside torch.compile. Skipped without CUDA."""

import pytest
import torch

from kernels.depthwise import Layer, depthwise_conv2d, dispatch, precompile, reference_depthwise_conv2d

# gpu: selected by `pytest -m gpu`, the command that runs the GPU tests on the device machine.
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# ||out - ref|| / ||ref|| against a float64 reference (see tests/test_depthwise.py).
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# (N, C, H, stride, epilogue): channel counts and sizes of MobileNetV1's and Xception's depthwise layers
# (bench/depthwise/layers.py lists the layers themselves) at batch 128-256 (C=728 is not a multiple of 16), with
# (scale, shift, relu) on some. Each case is a separate Triton compilation.
CASES = [(256, 32, 32, 1, False), (128, 64, 32, 2, True), (256, 256, 8, 2, False), (256, 728, 4, 1, True),
         (256, 1024, 2, 1, False)]
COMPILE_CASE = (64, 128, 16, 1, True)  # torch.compile tests: bfloat16


@pytest.fixture(scope="module", autouse=True)
def compiled_ahead():
    """Compile every variant used below in parallel processes first (about a second each, serially)."""
    layers = [Layer(C, H, H, s, 3, str(dt).removeprefix("torch."), lay == "channels_last", e, e, e)
              for N, C, H, s, e in CASES for dt in TOL for lay in LAYOUTS]
    N, C, H, s, e = COMPILE_CASE
    layers += [Layer(C, H, H, s, 3, "bfloat16", lay == "channels_last", e, e, e) for lay in LAYOUTS]
    layers += [Layer(64, 8, 8, 2, 3, "float32", True, True, True, True),  # test_func_grad_on_gpu
               Layer(32, 8, 8, 1, 3, "bfloat16", True, True, True, True),  # test_compiled_has_no_graph_breaks
               Layer(64, 16, 16, 1, 5, "bfloat16", True, True, True, True),  # test_kernel_size_5
               Layer(128, 16, 16, 1, 3, "bfloat16", True)]  # test_compiled_one_pass_backward
    precompile(layers)


def rel_err(out, ref):
    out, ref = out.detach().double(), ref.detach().double()
    return ((out - ref).norm() / ref.norm()).item()


def _inputs(N, C, H, dtype, layout, epilogue):
    x = torch.randn(N, C, H, H, device="cuda", dtype=dtype).to(memory_format=LAYOUTS[layout]).requires_grad_()
    w = (torch.randn(C, 1, 3, 3, device="cuda") / 3).requires_grad_()
    sc = (1 + 0.3 * torch.randn(C, device="cuda")).requires_grad_() if epilogue else None
    sh = (0.3 * torch.randn(C, device="cuda")).requires_grad_() if epilogue else None
    return x, w, sc, sh


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("N,C,H,stride,epilogue", CASES)
def test_real_shapes_match_reference(N, C, H, stride, epilogue, dtype, layout):
    inputs = _inputs(N, C, H, dtype, layout, epilogue)
    x, w, sc, sh = inputs
    y = depthwise_conv2d(x, w, stride, sc, sh, epilogue, impl="triton")
    assert y.is_contiguous(memory_format=LAYOUTS[layout])
    ref_inputs = [t.detach().double().requires_grad_() if t is not None else None for t in inputs]
    y_ref = reference_depthwise_conv2d(ref_inputs[0], ref_inputs[1], stride, *ref_inputs[2:], epilogue)
    assert rel_err(y, y_ref) < TOL[dtype]
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    y_ref.backward(grad_y.double())
    for name, t, t_ref in zip(("x", "weight", "scale", "shift"), inputs, ref_inputs, strict=True):
        if t is not None:
            assert rel_err(t.grad, t_ref.grad) < TOL[dtype], name


def _loss_and_grads(x, w, sc, sh):
    """A small training-style function: loss through the kernel, gradients by torch.autograd.grad."""
    y = depthwise_conv2d(x, w, 1, sc, sh, True, impl="triton")
    loss = (y.float().sin() ** 2).mean()
    return (loss, *torch.autograd.grad(loss, (x, w, sc, sh)))


def _trace_autograd_ops():
    """torch._dynamo.config.trace_autograd_ops=True where it exists: autograd.grad traced, no graph break."""
    if hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return torch._dynamo.config.patch(trace_autograd_ops=True)
    return torch._dynamo.config.patch()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_matches_eager(layout):
    torch._dynamo.reset()
    N, C, H, _, _ = COMPILE_CASE
    inputs = _inputs(N, C, H, torch.bfloat16, layout, True)
    eager = _loss_and_grads(*inputs)
    with _trace_autograd_ops():
        compiled = torch.compile(_loss_and_grads)(*inputs)
    for a, b in zip(eager, compiled, strict=True):
        assert rel_err(b, a) < 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_graph_writes_the_outputs_once(layout):
    """Inductor (torch 2.11) lowers a channels_last torch.empty inside a triton_op to an empty plus a copy that
    writes NaN over it, a whole extra pass over each output before the kernel writes it (kernels.depthwise.helpers
    .empty_in_layout allocates by strides instead): no kernel of the compiled graph may store a NaN constant."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    N, C, H, _, _ = COMPILE_CASE
    inputs = _inputs(N, C, H, torch.bfloat16, layout, True)
    with _trace_autograd_ops():
        _, codes = run_and_get_code(torch.compile(_loss_and_grads), *inputs)
    assert codes and "_dwconv_" in "".join(codes)
    fills = [line.strip() for code in codes for line in code.splitlines() if 'float("nan")' in line]
    assert not fills, fills


def test_compiled_has_no_graph_breaks():
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch has no trace_autograd_ops: torch.autograd.grad breaks the graph")
    torch._dynamo.reset()
    inputs = _inputs(8, 32, 8, torch.bfloat16, "channels_last", True)
    with _trace_autograd_ops():
        explanation = torch._dynamo.explain(_loss_and_grads)(*inputs)
    assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize(("H", "kernel"), [(16, "_dwconv_bwd_window_kernel"), (8, "_dwconv_bwd_fused_kernel")])
def test_compiled_one_pass_backward(H, kernel):
    """Without an epilogue at stride 1 in channels_last the backward is one kernel (kernels/depthwise/onepass.py),
    the window from 16x16 maps in bf16, the tiles below: inside torch.compile, as one graph, with the gradients of
    the float64 reference."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    x, w, _, _ = _inputs(64, 128, H, torch.bfloat16, "channels_last", False)

    def loss_and_grads(x, w):
        loss = (depthwise_conv2d(x, w, 1, impl="triton").float().sin() ** 2).mean()
        return (loss, *torch.autograd.grad(loss, (x, w)))

    with _trace_autograd_ops():
        compiled, codes = run_and_get_code(torch.compile(loss_and_grads), x, w)
    code = "".join(codes)
    assert kernel in code and "_dwconv_bwd_input_kernel" not in code
    refs = [t.detach().double().requires_grad_() for t in (x, w)]
    loss = (reference_depthwise_conv2d(*refs, 1).sin() ** 2).mean()
    for got, want in zip(compiled, (loss, *torch.autograd.grad(loss, refs)), strict=True):
        assert rel_err(got, want) < TOL[torch.bfloat16]


def test_func_grad_on_gpu():
    x, w, sc, sh = (t.detach() for t in _inputs(32, 64, 8, torch.float32, "channels_last", True))

    def loss(impl, x, w, sc, sh):
        return depthwise_conv2d(x, w, 2, sc, sh, True, impl=impl).square().sum()

    grads = torch.func.grad(lambda *a: loss("triton", *a), argnums=(0, 1, 2, 3))(x, w, sc, sh)
    refs = torch.func.grad(lambda *a: loss("reference", *a), argnums=(0, 1, 2, 3))(
        *(t.double() for t in (x, w, sc, sh)))
    for g, r in zip(grads, refs, strict=True):
        assert rel_err(g, r) < 1e-5


@pytest.mark.parametrize(
    "dtype, layout, H, stride, fused, expect_triton",
    [
        (torch.bfloat16, "channels_last", 8, 1, False, False),  # cuDNN's NHWC kernels were faster here
        (torch.bfloat16, "channels_last", 8, 2, False, True),
        (torch.bfloat16, "channels_last", 8, 1, True, True),  # fused epilogue
        (torch.float32, "channels_last", 8, 2, False, False),
        (torch.float32, "channels_last", 2, 1, False, True),
        (torch.float32, "nchw", 8, 1, False, True),
    ],
)
def test_auto_dispatch_follows_rule(monkeypatch, dtype, layout, H, stride, fused, expect_triton):
    """impl='auto' on CUDA takes the reference exactly where triton_preferred says PyTorch is faster."""
    calls = []
    real_reference = dispatch.reference_depthwise_conv2d
    monkeypatch.setattr(dispatch, "reference_depthwise_conv2d",
                        lambda *a, **k: calls.append(1) or real_reference(*a, **k))
    x = torch.randn(4, 16, H, H, device="cuda", dtype=dtype).to(memory_format=LAYOUTS[layout])
    w = torch.randn(16, 1, 3, 3, device="cuda")
    y = depthwise_conv2d(x, w, stride, relu=fused, impl="auto")
    assert y.shape == (4, 16, (H - 1) // stride + 1, (H - 1) // stride + 1)
    assert (not calls) == expect_triton


def test_kernel_size_5():
    x, _, sc, sh = _inputs(32, 64, 16, torch.bfloat16, "channels_last", True)
    w = (torch.randn(64, 1, 5, 5, device="cuda") / 5).requires_grad_()
    y = depthwise_conv2d(x, w, 1, sc, sh, True, impl="triton")
    refs = [t.detach().double().requires_grad_() for t in (x, w, sc, sh)]
    y_ref = reference_depthwise_conv2d(refs[0], refs[1], 1, refs[2], refs[3], True)
    assert rel_err(y, y_ref) < TOL[torch.bfloat16]
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    y_ref.backward(grad_y.double())
    for t, t_ref in zip((x, w, sc, sh), refs, strict=True):
        assert rel_err(t.grad, t_ref.grad) < TOL[torch.bfloat16]
