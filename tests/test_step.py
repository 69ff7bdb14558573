"""The training step: compiled equals eager, both gradient forms agree, one graph, compiled once per shape."""

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from nets.core import Net
from train.config import Config
from train.optim import init_state, zeros_like_tree
from train.step import (
    TrainState,
    as_leaves,
    leaf_step,
    make_eval_step,
    make_train_step,
    maybe_compile,
    padded_to,
    precision_for,
    prepare_step,
)

CPU = precision_for(torch.device("cpu"), "fp32")


def small_net() -> Net:
    """Conv-BN-ReLU-pool-linear: every kind of tensor the zoo's nets have, at a cost tests can afford."""
    return Net("small", lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)), 10)


def fresh_state(net):
    params, state = net.init(torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()))))
    return TrainState(params, state, zeros_like_tree(params))


def batches(n, size=16):
    return [(torch.randn(size, 3, 32, 32), torch.randint(0, 10, (size,))) for _ in range(n)]


def run_steps(step, ts, data, lrs):
    for batch, lr in zip(data, lrs):
        ts, metrics = step(ts, batch, lr)
    return ts, metrics


def assert_same_state(a: TrainState, b: TrainState, **tol):
    for tree_a, tree_b in zip(a, b):
        assert set(tree_a) == set(tree_b)
        for k in tree_a:
            torch.testing.assert_close(tree_a[k].detach(), tree_b[k].detach(), **tol)


CFG = Config(nesterov=True, weight_decay=5e-4, label_smoothing=0.1)


def cuda_case():
    """(net, fp32 precision, train state, 4 batches, 4 lrs) on CUDA, for the CUDA-graph tests."""
    device = torch.device("cuda")
    net = small_net()
    params, state = net.init(torch.Generator().manual_seed(0), device)
    data = [(x.to(device), y.to(device)) for x, y in batches(4)]
    lrs = [torch.tensor(v, device=device) for v in (0.1, 0.05, 0.1, 0.02)]
    return net, precision_for(device, "fp32"), TrainState(params, state, zeros_like_tree(params)), data, lrs


def test_autograd_form_equals_func_form():
    net = small_net()
    ts = fresh_state(net)
    data, lrs = batches(3), [torch.tensor(v) for v in (0.1, 0.05, 0.1)]
    a, ma = run_steps(make_train_step(net, CFG, CPU, "func"), ts, data, lrs)
    b, mb = run_steps(leaf_step(make_train_step(net, CFG, CPU, "autograd")), as_leaves(ts), data, lrs)
    assert_same_state(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ma["loss"], mb["loss"])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("gradients", ["func", "autograd"])
def test_step_is_one_graph(gradients, optimizer):
    """torch._dynamo.explain finds no graph break in the whole step (forward, backward, optimizer, BN stats)."""
    net = small_net()
    cfg = CFG if optimizer == "sgd" else Config(optimizer="adamw", lr=1e-3, weight_decay=0.05)
    ts = fresh_state(net)._replace(momentum=init_state(optimizer, net.init(torch.Generator())[0]))
    if gradients == "autograd":
        ts = as_leaves(ts)
    step = make_train_step(net, cfg, CPU, gradients)
    with torch._dynamo.config.patch(trace_autograd_ops=gradients == "autograd"):
        explained = torch._dynamo.explain(step)(ts, batches(1)[0], torch.tensor(0.1))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("gradients", ["func", "autograd"])
def test_compiled_once_per_shape(gradients):
    """Feeding the step its own outputs with a changing lr never recompiles; the eval step compiles once per
    batch shape (full and last partial) and not again in later epochs."""
    torch._dynamo.reset()
    net = small_net()
    counter = CompileCounter()
    compiled = torch.compile(make_train_step(net, CFG, CPU, gradients), backend=counter, dynamic=False)
    ts = fresh_state(net)
    step = compiled
    if gradients == "autograd":
        ts = as_leaves(ts)
        step = leaf_step(compiled)
    lrs = torch.tensor([0.1, 0.09, 0.08, 0.07])
    with torch._dynamo.config.patch(trace_autograd_ops=gradients == "autograd"):
        run_steps(step, ts, batches(4), [lrs[i] for i in range(4)])
    assert counter.frame_count == 1

    eval_counter = CompileCounter()
    evaluate = torch.compile(make_eval_step(net, CPU), backend=eval_counter, dynamic=False)
    for _epoch in range(3):
        for size in (16, 16, 5):
            evaluate(ts.params, ts.state, *batches(1, size)[0])
    assert eval_counter.frame_count == 2


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_padded_evaluation_is_one_graph_and_changes_no_number(tta):
    """padded_to: the partial batches (5 and 7 rows) run in the full batch's graph, and every real row's logits
    and every summed metric equal the unpadded step's (float64 weights and images; the eval step's logits are
    float32, so the sums over 16 rows and over 5 agree to float32 rounding, the hit counts exactly): the
    padding rows count for nothing."""
    torch._dynamo.reset()
    net = small_net()
    ts = fresh_state(net)
    params = {k: v.double() for k, v in ts.params.items()}
    state = {k: v.double() if v.is_floating_point() else v for k, v in ts.state.items()}
    counter = CompileCounter()
    padded = padded_to(torch.compile(make_eval_step(net, CPU, tta), backend=counter, dynamic=False), 16)
    for size in (16, 5, 7, 16):
        x, y = batches(1, size)[0]
        got, logits = padded(params, state, x.double(), y)
        want, want_logits = make_eval_step(net, CPU, tta)(params, state, x.double(), y)
        assert logits.shape == (size, 10)
        torch.testing.assert_close(logits, want_logits, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-6, atol=0)
        assert (got["top1"], got["top5"]) == (want["top1"], want["top5"])
    assert counter.frame_count == 1


def test_compiled_step_equals_eager():
    """Inductor's compiled step gives the eager step's numbers (same inputs, several steps)."""
    torch._dynamo.reset()
    net = small_net()
    ts = fresh_state(net)
    data, lrs = batches(3), [torch.tensor(v) for v in (0.1, 0.05, 0.1)]
    eager, m_eager = run_steps(make_train_step(net, CFG, CPU), ts, data, lrs)
    compiled, m_compiled = run_steps(maybe_compile(make_train_step(net, CFG, CPU), True), ts, data, lrs)
    assert_same_state(eager, compiled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m_eager["loss"], m_compiled["loss"], rtol=1e-5, atol=1e-6)
    assert m_eager["correct"] == m_compiled["correct"]


@pytest.mark.gpu
@pytest.mark.parametrize("gradients", ["func", "autograd"])
def test_cuda_graph_step_equals_the_compiled_step_and_keeps_every_step(gradients):
    """cudagraphs=True: the same numbers as without graphs over several steps, each step's outputs fed to the
    next (the training loop's pattern), and a step's metrics still readable after later steps."""
    torch._dynamo.reset()
    net, gpu, ts, data, lrs = cuda_case()
    results = []
    for graphs in (False, True):
        step = maybe_compile(make_train_step(net, CFG, gpu, gradients), True, gradients, cudagraphs=graphs)
        start = as_leaves(ts) if gradients == "autograd" else ts
        step = leaf_step(step) if gradients == "autograd" else step
        kept, out = [], start
        for batch, lr in zip(data, lrs):
            out, metrics = step(out, batch, lr)
            kept.append(metrics["loss"])
        results.append((out, torch.stack(kept)))
    assert_same_state(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


def copy_state(ts: TrainState) -> TrainState:
    """A copy of ts in new tensors."""
    return TrainState(*({k: v.detach().clone() for k, v in tree.items()} for tree in ts))


@pytest.mark.gpu
@pytest.mark.parametrize("gradients", ["func", "autograd"])
def test_in_place_cuda_graph_step_equals_the_compiled_step(gradients):
    torch._dynamo.reset()
    net, gpu, ts, data, lrs = cuda_case()
    plain_step, plain_ts = prepare_step(make_train_step(net, CFG, gpu, gradients), copy_state(ts), gradients, True,
                                        cudagraphs=False)
    plain, m_plain = run_steps(plain_step, plain_ts, data, lrs)
    step, buffers = prepare_step(make_train_step(net, CFG, gpu, gradients), copy_state(ts), gradients, True,
                                 cudagraphs=True)
    out, m_out = run_steps(step, buffers, data, lrs)
    assert_same_state(plain, out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m_plain["loss"], m_out["loss"], rtol=1e-5, atol=1e-6)


def test_step_does_not_change_its_inputs():
    net = small_net()
    ts = fresh_state(net)
    copy = TrainState(*({k: v.clone() for k, v in tree.items()} for tree in ts))
    make_train_step(net, CFG, CPU)(ts, batches(1)[0], torch.tensor(0.1))
    assert_same_state(ts, copy, rtol=0, atol=0)


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_eval_step_against_a_float64_module(tta):
    """Summed loss and top-k hits of the eval step equal a float64 nn.Module's; with tta="flip", of the mean of
    the softmax outputs for the images and their mirror images (tests/test_ema_tta.py: translate too)."""
    net = small_net()
    ts = fresh_state(net)
    ts = ts._replace(state={k: v + 0.1 * torch.rand_like(v.float()).to(v.dtype) for k, v in ts.state.items()})
    x, y = batches(1, 64)[0]
    module = net.to_module(ts.params, ts.state).double()
    with torch.no_grad():
        expected = module(x.double())
        if tta == "flip":
            expected = ((expected.softmax(1) + module(x.double().flip(-1)).softmax(1)) / 2).log()
    metrics, logits = make_eval_step(net, CPU, tta)(ts.params, ts.state, x, y)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-5)
    loss = torch.nn.functional.cross_entropy(expected, y, reduction="sum")
    torch.testing.assert_close(metrics["loss"].double(), loss, rtol=1e-4, atol=0)
    ranks = (expected > expected[torch.arange(64), y][:, None]).sum(1)  # classes ranked above the label
    assert metrics["top1"] == (ranks < 1).sum() and metrics["top5"] == (ranks < 5).sum()
    plain, _ = make_eval_step(net, CPU)(ts.params, ts.state, x, y)
    assert (plain["loss"] != metrics["loss"]) == (tta == "flip")  # the flipped view changes the numbers


def linear_net() -> Net:
    """No BatchNorm, so an empty state tree, as the ViT's."""
    return Net("linear", lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), 10)


@pytest.mark.parametrize("gradients,make_net,optimizer", [("func", small_net, "sgd"), ("autograd", small_net, "sgd"),
                                                          ("func", linear_net, "sgd"), ("func", small_net, "adamw")])
def test_in_place_step_equals_the_pure_step_and_keeps_its_buffers(gradients, make_net, optimizer, monkeypatch):
    """compile_in_place: the pure step's numbers over several steps, written into the same tensors (through
    dynamo and AOT autograd's functionalisation of the writes; the aot_eager backend, to stay quick), for
    both gradient forms (with "autograd", the written params stay leaves that require grad), for a net
    whose state is empty, and for AdamW's state (the moments and the 0-dim step count)."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager", dynamic=False))
    torch._dynamo.reset()
    net = make_net()
    cfg = Config(optimizer=optimizer, nesterov=optimizer == "sgd", weight_decay=5e-4, label_smoothing=0.1)
    ts = fresh_state(net)
    ts = ts._replace(momentum=init_state(optimizer, ts.params))
    data, lrs = batches(3), [torch.tensor(v) for v in (0.1, 0.05, 0.1)]
    pure_step, pure_ts = prepare_step(make_train_step(net, cfg, CPU, gradients), copy_state(ts), gradients,
                                      compiled=False, cudagraphs=False)
    pure, m_pure = run_steps(pure_step, pure_ts, data, lrs)
    step, buffers = prepare_step(make_train_step(net, cfg, CPU, gradients), copy_state(ts), gradients, True,
                                 cudagraphs=True)
    pointers = [t.data_ptr() for tree in buffers for t in tree.values()]
    out, m_out = run_steps(step, buffers, data, lrs)
    assert out is buffers and [t.data_ptr() for tree in out for t in tree.values()] == pointers
    assert all(p.requires_grad == (gradients == "autograd") and p.is_leaf for p in out.params.values())
    assert_same_state(pure, out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m_pure["loss"], m_out["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_net", [small_net, linear_net])
@pytest.mark.parametrize("ema", [False, True])
def test_warm_up_restores_a_state_the_step_wrote_in_place(make_net, ema):
    """train.loop.warm_up with a step that writes its state in place (as compile_in_place's does): the eval
    step is warmed on the written state (on the EMA's weights when the state keeps an EMA: the tensors
    validation reads after each epoch), and every tree is as it was afterwards; also with an empty state tree."""
    from types import SimpleNamespace

    from train.loop import warm_up
    from train.step import eval_weights

    ts = fresh_state(make_net())
    if ema:  # an EMA apart from the params (+10), so the test tells which the eval step saw
        ts = ts._replace(ema={k: v + 10 for k, v in {**ts.params, **ts.state}.items()})
    before = copy_state(ts)
    x, y = batches(1)[0]

    keys = []

    def writes(state, batch, lr, key):
        keys.append(key)
        for tree in state:
            for t in tree.values():
                t.add_(1)
        return state, {}

    seen = []
    split = SimpleNamespace(train=SimpleNamespace(images=x, example=lambda: (x, y)), val=[(x, y)], test=[])
    warm_up(writes, lambda params, state, *_: seen.append(copy_state(TrainState(params, state, {}))), ts, split,
            torch.tensor(7))
    assert [int(k) for k in keys] == [7, 7]  # the key passed through, as the epochs pass theirs
    assert_same_state(ts, before, rtol=0, atol=0)
    assert len(seen) == 1
    written = TrainState(*({k: v + 2 for k, v in tree.items()} for tree in before))  # twice written, then evaluated
    assert_same_state(seen[0], TrainState(*eval_weights(written.params, written.state, written.ema), {}))
