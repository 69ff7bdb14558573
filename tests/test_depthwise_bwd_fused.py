"""The one-pass depthwise backward (kernels/depthwise/onepass.py through launchers.launch_bwd_fused) against the
float64 reference and the two-pass backward it replaces, its argument checks, where the autograd binding takes it
(eager and under torch.func.grad), its dispatch rule, and the CPU-side bookkeeping of its sweep,
`python -m bench depthwise tune=backward`, with a fake timer.

Without CUDA the kernels run in Triton's interpreter (test_depthwise sets TRITON_INTERPRET before triton is
imported); the shapes are tiny for it.
"""

import itertools

import pytest
import torch
from fake_timer import fake_timer
from test_depthwise import (  # noqa: F401 (one_cpu_thread: an autouse fixture, active where imported)
    DEVICE,
    TOL,
    float64_twins,
    make_inputs,
    needs_triton,
    one_cpu_thread,
    rel_err,
)

from bench.depthwise.layers import MATCH_TOL
from kernels.depthwise import LaunchConfig, autograd, depthwise_conv2d, launchers, reference_depthwise_conv2d
from kernels.depthwise.helpers import next_pow2
from kernels.depthwise.rules import FUSED_SCHEDULES, backward_variant, bwd_fused_config, window_config

# (N, C, H, W, shift, tiles config, window config, programs): odd sizes (5x7: 35 pixels, off BLOCK_R), batch 1,
# C = 20 off BLOCK_K = 8, 2x2 maps; config None = the interpreter's tile; programs = 3 with 3 channel blocks: one
# program per channel block looping over several steps, the last one partial. The window's ROWS (3, 4, 2) leave a
# partial chunk at the bottom of 5-row images, cross chunks inside 6-row ones, and exceed 2-row ones.
CASES = [
    (2, 20, 5, 7, False, (16, 8, 1), (3, 8, 1), 3),
    (1, 20, 5, 7, True, None, None, 1024),
    (2, 12, 6, 5, True, (8, 16, 1), (2, 16, 1), 2),
    (3, 8, 2, 2, False, (4, 8, 1), (4, 8, 1), 1024),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _reference(x, w, sh, grad_y):
    """float64 (grad_x, grad_weight, grad_shift) by autograd through the reference."""
    x, w, sh = float64_twins((x, w, sh))
    y = reference_depthwise_conv2d(x, w, 1, None, sh)
    wrt = [t for t in (x, w, sh) if t is not None]
    grads = iter(torch.autograd.grad(y, wrt, grad_y.double().cpu()))
    return [next(grads) if t is not None else None for t in (x, w, sh)]


@needs_triton
@pytest.mark.parametrize("schedule", FUSED_SCHEDULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v).replace(" ", "") for v in c))
def test_fused_matches_reference_and_split(case, dtype, schedule):
    N, C, H, W, shift, tiles_tile, window_tile, programs = case
    config = tiles_tile if schedule == "tiles" else window_tile
    x, w, _, sh = (t.detach() if t is not None else None
                   for t in make_inputs(N, C, H, W, 3, dtype, "channels_last", False, shift))  # fmt: skip
    grad_y = torch.randn(N, C, H, W, device=DEVICE, dtype=dtype).to(memory_format=torch.channels_last)
    cfg = config and LaunchConfig(*config)
    fused = launchers.launch_bwd_fused(grad_y, x, w, sh, config=cfg, programs=programs, schedule=schedule)
    weight_pass = launchers.launch_bwd_weight(grad_y, x, w, None, sh, 1, False, False, variant="taps")
    split = (launchers.launch_bwd_input(grad_y, w, x, 1), weight_pass[0], weight_pass[2])
    for name, f, s, r in zip(("grad_x", "grad_weight", "grad_shift"), fused, split, _reference(x, w, sh, grad_y)):
        if r is None:
            assert f.numel() == 0, name
            continue
        assert f.shape == r.shape and f.dtype == s.dtype, name
        assert rel_err(f, r) < TOL[dtype], f"{name} vs float64: {rel_err(f, r):.2e}"
        assert rel_err(f, s) < TOL[dtype], f"{name} vs split: {rel_err(f, s):.2e}"
    assert fused[0].is_contiguous(memory_format=torch.channels_last) and fused[0].dtype == dtype


def _spy(monkeypatch):
    """Record launch_bwd_fused's schedule at each call (the autograd binding and the triton_op reach it through
    the launchers module)."""
    calls = []
    real = launchers.launch_bwd_fused

    def spy(*args, **kwargs):
        calls.append(kwargs.get("schedule", "tiles"))
        return real(*args, **kwargs)

    monkeypatch.setattr(launchers, "launch_bwd_fused", spy)
    return calls


@needs_triton
def test_autograd_takes_the_fused_pass_where_the_rule_says(monkeypatch):
    """Stride 1, channels_last, no epilogue or a shift: one pass, on the window from 16 x 17 maps in 16 bits
    and 32 x 33 in float32, on the tiles below (and float32 from 16 x 17); with relu, at stride 2, in NCHW or at
    a small float32 map: two. The gradients match the reference either way."""
    calls = _spy(monkeypatch)
    bf16, fp32 = torch.bfloat16, torch.float32
    for dtype, H, layout, stride, shift, relu, fused in ((bf16, 6, "channels_last", 1, True, False, "tiles"),
                                                         (bf16, 16, "channels_last", 1, True, False, "window"),
                                                         (fp32, 32, "channels_last", 1, False, False, "window"),
                                                         (fp32, 16, "channels_last", 1, False, False, "tiles"),
                                                         (fp32, 8, "channels_last", 1, False, False, None),
                                                         (bf16, 16, "channels_last", 1, False, True, None),
                                                         (bf16, 6, "channels_last", 2, False, False, None),
                                                         (bf16, 6, "nchw", 1, False, False, None)):  # fmt: skip
        x, w, _, sh = make_inputs(1, 12, H, H + 1, 3, dtype, layout, False, shift)
        y = depthwise_conv2d(x, w, stride, None, sh, relu, impl="triton")
        grad_y = torch.randn_like(y)
        y.backward(grad_y)
        xr, wr, shr = float64_twins((x, w, sh))
        reference_depthwise_conv2d(xr, wr, stride, None, shr, relu).backward(grad_y.double().cpu())
        for t, r in zip((x, w, sh), (xr, wr, shr)):
            if t is not None:
                assert rel_err(t.grad, r.grad) < TOL[dtype]
        assert calls == ([fused] if fused else []), (dtype, H, layout, stride, shift, relu)
        calls.clear()


@needs_triton
def test_fused_pass_takes_expanded_and_other_format_grad_y(monkeypatch):
    """grad_y as autograd hands it over from .sum() (expanded, stride 0) and in NCHW for a channels_last y: the
    one pass densifies it first and matches the reference."""
    calls = _spy(monkeypatch)
    for grad_y in (torch.randn(1, 12, 1, 1, device=DEVICE).expand(2, 12, 6, 7),
                   torch.randn(2, 12, 6, 7, device=DEVICE)):  # fmt: skip
        x, w, _, sh = make_inputs(2, 12, 6, 7, 3, torch.bfloat16, "channels_last", False, True)
        depthwise_conv2d(x, w, 1, None, sh, impl="triton").backward(grad_y.to(torch.bfloat16))
        xr, wr, shr = float64_twins((x, w, sh))
        reference_depthwise_conv2d(xr, wr, 1, None, shr).backward(grad_y.to(torch.bfloat16).double().cpu())
        for t, r in zip((x, w, sh), (xr, wr, shr)):
            assert rel_err(t.grad, r.grad) < TOL[torch.bfloat16]
    assert len(calls) == 2


@needs_triton
@pytest.mark.parametrize(("dtype", "schedule"), [(torch.float32, "tiles"), (torch.bfloat16, "window")], ids=str)
def test_func_grad_through_the_fused_pass(monkeypatch, dtype, schedule):
    """torch.func.grad reaches the one pass, on each schedule, through its triton_op, against the reference's
    func.grad."""
    calls = _spy(monkeypatch)
    x, w, _, sh = make_inputs(1, 12, 16, 17, 3, dtype, "channels_last", False, True)
    x, w, sh = x.detach(), w.detach(), sh.detach()
    grad_y = torch.randn(1, 12, 16, 17, device=DEVICE)

    def loss(impl, x, w, sh):
        return (depthwise_conv2d(x, w, 1, None, sh, impl=impl) * grad_y.to(x.dtype)).sum()

    grads = torch.func.grad(lambda *a: loss("triton", *a), argnums=(0, 1, 2))(x, w, sh)
    ref = torch.func.grad(lambda *a: loss("reference", *a), argnums=(0, 1, 2))(*(t.double() for t in (x, w, sh)))
    for g, r in zip(grads, ref, strict=True):
        assert rel_err(g, r) < TOL[dtype]
    assert calls == [schedule]


def test_only_the_x_or_weight_gradient_takes_two_passes(monkeypatch):
    """With one of grad_x and grad_weight asked for, the pass that gives only it runs (no fused pass)."""
    monkeypatch.setattr(launchers, "launch_bwd_fused", lambda *a, **k: pytest.fail("fused pass with one gradient"))
    ran = []
    monkeypatch.setattr(launchers, "launch_bwd_input", lambda *a, **k: ran.append("input") or a[2])
    monkeypatch.setattr(launchers, "launch_bwd_weight",
                        lambda *a, **k: ran.append("weight") or (a[2], None, None, None))
    x, w = torch.randn(1, 4, 5, 5).to(memory_format=torch.channels_last), torch.randn(4, 1, 3, 3)
    for needs, expected in (((True, False, False, False), ["input"]), ((False, True, False, False), ["weight"])):
        grads = autograd.backward_pass(x, x, w, None, None, 1, False, needs, eager=True)
        assert ran == expected and [g is not None for g in grads] == list(needs)
        ran.clear()


def test_fused_rejects_what_it_does_not_take():
    """NCHW x, a 5x5 kernel, a grad_y of another shape than x (stride 2), or an unknown schedule: a ValueError
    before any launch."""
    x = torch.randn(1, 4, 5, 5)
    x_cl = x.to(memory_format=torch.channels_last)
    w3, w5 = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 5, 5)
    with pytest.raises(ValueError, match="channels_last"):
        launchers.launch_bwd_fused(x, x, w3, None)
    with pytest.raises(ValueError, match="3x3"):
        launchers.launch_bwd_fused(x_cl, x_cl, w5, None)
    with pytest.raises(ValueError, match="stride 1"):
        launchers.launch_bwd_fused(torch.randn(1, 4, 3, 3).to(memory_format=torch.channels_last), x_cl, w3, None)
    with pytest.raises(ValueError, match="schedule must be one of"):
        launchers.launch_bwd_fused(x_cl, x_cl, w3, None, schedule="rows")


def test_backward_variant_rule():
    """One pass only where it can run: channels_last, 3x3, stride 1, an epilogue that leaves the gradient alone;
    the size lines as rules.backward_variant states them."""
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    assert backward_variant(True, bf16, 256, 32, 32, 32, 1) == "window"
    assert backward_variant(True, bf16, 256, 32, 32, 32, 1, changes_grad=True) == "split"
    assert backward_variant(True, bf16, 256, 32, 32, 32, 2) == "split"
    assert backward_variant(False, bf16, 256, 32, 32, 32, 1) == "split"
    assert backward_variant(True, bf16, 256, 32, 32, 32, 1, K=5) == "split"
    assert backward_variant(True, fp16, 512, 728, 16, 16, 1) == "window"  # from 16x16 in 16 bits, any size
    assert backward_variant(True, fp16, 512, 728, 15, 16, 1) == "split"  # below: the tiles up to 2**25
    assert backward_variant(True, fp16, 128, 1024, 8, 16, 1) == "fused"
    assert backward_variant(True, fp32, 512, 64, 32, 32, 1) == "window"
    assert backward_variant(True, fp32, 512, 64, 31, 32, 1) == "fused"
    assert backward_variant(True, fp32, 512, 728, 16, 16, 1) == "fused"
    assert backward_variant(True, fp32, 512, 728, 8, 8, 1) == "split"


# ---------------------------------------------------------------------------------------------------------
# `python -m bench depthwise tune=backward` without a GPU


def test_bench_bytes_and_tiles():
    from bench.depthwise import layers as depthwise
    from bench.depthwise import tune_backward as backward

    assert backward.backward_bytes(2, 64, 32, 2) == 3 * 2 * 64 * 1024 * 2  # read grad_y and x, write grad_x
    for _, C, _, _ in depthwise.layer_table():  # the tiles depend on C alone
        tiles = backward.fused_candidates(C)
        assert tiles[0] == bwd_fused_config(C)
        assert len(set(tiles)) == len(tiles) >= 3 and all(t.block_k <= max(32, C) for t in tiles)
    for (_, C, H, _), dtype in itertools.product(depthwise.layer_table(), (torch.bfloat16, torch.float32)):
        windows = backward.window_candidates(C, H, dtype)
        assert windows[0] == window_config(C, H, H, dtype) and len(set(windows)) == len(windows) >= 3
        assert all(t.block_r <= H and 16 <= t.block_k <= max(16, next_pow2(C)) for t in windows)


@needs_triton
def test_bench_measure_with_fake_timer(monkeypatch):
    """The whole measurement on two tiny layers (interpreted without CUDA), the stride-2 one left out: rows, the
    per-case table with the rule's choice against the fastest, the summary and its text. Two fused tiles, to stay
    quick in the interpreter."""
    from bench import common
    from bench.depthwise import tune_backward as backward

    tiles, windows = backward.fused_candidates, backward.window_candidates
    monkeypatch.setattr(backward, "fused_candidates", lambda *case: tiles(*case)[:2])
    monkeypatch.setattr(backward, "window_candidates", lambda *case: windows(*case)[:2])
    timed = []

    def both_gradients(result):  # the one-pass call returns grad_x and the weight gradient
        grad_x, grad_w = result
        assert grad_x.dim() == 4 and grad_w.shape[-2:] == (3, 3)

    fake_us = fake_timer(timed, both_gradients)

    layers = [("tiny", 8, 4, 1), ("tiny", 8, 5, 2)]
    result = backward.measure(DEVICE, layers, batches=(2,), time_us=fake_us, copy_gbs=100.0, compile_ahead=False)
    rows, best = result["rows"], result["best"]
    assert len(rows) == len(timed) == 2 * 5 and {r["H"] for r in rows} == {4}  # 2 dtypes x (split + 2 + 2 tiles)
    assert len(best) == 2 and all(r["best speedup"] == r["split us"] / r["best fused us"] for r in best)
    for r in best:
        windows = [x["us"] for x in rows if x["variant"] == "window" and x["dtype"] == r["dtype"]]
        assert r["best window us"] == min(windows) and r["best window speedup"] == r["split us"] / min(windows)
    for r in rows:
        assert r["% copy"] == pytest.approx(100 * r["bytes"] / r["us"] / 1e3 / 100.0)
        assert r["rel err"] < MATCH_TOL[r["dtype"]], r
    for r in best:  # backward_variant's choice at its default tile (split, then each schedule's first tile)
        case = [x for x in rows if x["dtype"] == r["dtype"]]
        choice = backward_variant(True, backward.DTYPES[r["dtype"]], 2, 8, 4, 4, 1)
        rule_us = next(x["us"] for x in case if x["variant"] == choice)
        assert r["rule"] == choice and r["rule / fastest"] == rule_us / min(x["us"] for x in case)
    head = common.header(torch.device("cpu"), "python -m bench depthwise tune=backward")
    markdown = backward.to_markdown(result, head)
    assert "geomean speedup fused (default tile) vs split, bf16" in markdown
    assert "python -m bench depthwise tune=backward" in markdown


def test_tune_says_why_it_measures_nothing_without_cuda(monkeypatch, tmp_path, capsys):
    """`python -m bench depthwise tune=KIND` (bench.report) says in one line that it needs CUDA, writing nothing;
    tune= without the depthwise section, or an unknown sweep, is a one-line error."""
    from bench import report

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for kind in ("tiles", "rows", "wgrad", "backward"):
        assert report.main(["depthwise", f"tune={kind}", f"out={tmp_path}"]) == 0
        assert f"skipping depthwise tune={kind}: it times CUDA kernels" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit, match="tune= is an option of one kernel section"):
        report.main(["tune=wgrad"])
    with pytest.raises(SystemExit, match="unknown tune=taps; one of tiles, rows, wgrad, backward"):
        report.main(["depthwise", "tune=taps"])
    assert report.main(["attention", "tune=true"]) == 0
    assert "skipping attention tune=true: it times CUDA kernels" in capsys.readouterr().out
