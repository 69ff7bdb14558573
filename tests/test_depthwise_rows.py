"""The rows schedule (kernels/depthwise/rows.py) against the float64 reference: the forward with and without
its epilogue, stride 1 and 2, and the flipped stride-1 pass against autograd's grad_x; its argument checks, the
launchers' choice of it (through the launchers, tests/test_depthwise.py checks it with the autograd binding), and
the CPU-side bookkeeping of its sweep, `python -m bench depthwise tune=rows`, with a fake timer.
In Triton's interpreter without CUDA (tests/conftest.py sets TRITON_INTERPRET); the shapes are tiny.
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
from kernels.depthwise import LaunchConfig, launchers, reference_depthwise_conv2d
from kernels.depthwise.launchers import launch_bwd_input, launch_fwd
from kernels.depthwise.rows import launch_rows
from kernels.depthwise.rules import ROWS_TILES, ROWS_TILES_FP32, pointwise_variant, rows_config

# (N, C, H, W, stride, epilogue, config): odd sizes (7 rows: not a multiple of ROWS; 5 and 7 columns: off the
# power-of-2 row tile), batch 1, C = 20 off BLOCK_K = 8 (three channel blocks, the last partial).
CASES = [
    (2, 20, 7, 5, 1, "scale,shift,relu", LaunchConfig(4, 8, 1)),
    (1, 20, 7, 5, 2, "scale,shift,relu", LaunchConfig(2, 8, 1)),
    (2, 6, 6, 7, 2, None, None),
    (1, 12, 5, 6, 1, "shift", LaunchConfig(8, 16, 1)),
]


@needs_triton
@pytest.mark.parametrize(("dtype", "upcast"), [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)],
                         ids=["fp32", "bf16", "bf16-upcast"])  # upcast converts 16-bit tiles only
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v).replace(" ", "") for v in c))
def test_rows_forward_equals_the_float64_reference(case, dtype, upcast):
    N, C, H, W, stride, epilogue, config = case
    ep = epilogue or ""
    x, w, sc, sh = make_inputs(N, C, H, W, 3, dtype, "channels_last", "scale" in ep, "shift" in ep)
    y = launch_rows(x.detach(), w.detach(), sc, sh, stride, "relu" in ep, config=config, upcast=upcast)
    x64, w64, sc64, sh64 = float64_twins((x, w, sc, sh))
    ref = reference_depthwise_conv2d(x64, w64, stride, sc64, sh64, "relu" in ep)
    assert y.shape == ref.shape and y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, ref) < TOL[dtype]


@needs_triton
@pytest.mark.parametrize("shape", [(2, 20, 7, 5), (1, 8, 4, 4)])
def test_rows_flipped_is_the_stride_1_input_gradient(shape):
    N, C, H, W = shape
    x, w, _, _ = make_inputs(N, C, H, W, 3, torch.float32, "channels_last")
    grad_z = torch.randn(N, C, H, W, device=DEVICE).to(memory_format=torch.channels_last)
    dx = launch_rows(grad_z, w.detach(), None, None, 1, False, flip=True, config=LaunchConfig(4, 8, 1))
    x64, w64 = float64_twins((x, w))
    (ref,) = torch.autograd.grad(reference_depthwise_conv2d(x64, w64, 1), x64, grad_z.double().cpu())
    assert rel_err(dx, ref) < TOL[torch.float32]


def test_rows_rejects_what_it_does_not_take():
    w = torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="channels_last x and a 3x3"):
        launch_rows(torch.randn(1, 4, 5, 5), w, None, None, 1, False)  # NCHW
    x = torch.randn(1, 4, 5, 5).to(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="channels_last x and a 3x3"):
        launch_rows(x, torch.randn(4, 1, 5, 5), None, None, 1, False)
    with pytest.raises(ValueError, match="stride 1 and no scale"):
        launch_rows(x, w, None, None, 2, False, flip=True)


def test_launchers_pick_rows_where_it_measured_faster():
    """pointwise_variant as its docstring states it: channels_last 3x3 only, the grad-input pass at stride 1 only,
    float32 forwards at 32x32 inputs left to the tiles."""
    bf16, f32 = torch.bfloat16, torch.float32
    assert pointwise_variant("fwd", True, bf16, 32, 32, 1) == "rows"
    assert pointwise_variant("fwd", True, bf16, 32, 32, 2) == "rows"
    assert pointwise_variant("fwd", True, f32, 32, 32, 1) == "tiles"
    assert pointwise_variant("fwd", True, f32, 16, 16, 1) == "rows"
    assert pointwise_variant("bwd_input", True, f32, 32, 32, 1) == "rows"
    assert pointwise_variant("bwd_input", True, bf16, 16, 16, 2) == "tiles"
    assert pointwise_variant("fwd", False, bf16, 8, 8, 1) == "tiles"
    assert pointwise_variant("fwd", True, bf16, 8, 8, 1, K=5) == "tiles"


def test_rows_tiles_follow_the_dtype():
    """16-bit and float32 inputs have their own tiles (rules.ROWS_TILES, ROWS_TILES_FP32): no float32 tile holds
    more than 2048 elements a row (BLOCK_W x BLOCK_K), half the largest 16-bit one; off the tables, the rule;
    the interpreter's tile on the CPU."""
    assert rows_config(256, 32, 32, 1, torch.bfloat16) == rows_config(256, 32, 32, 1, torch.float16) == (4, 128, 4)
    assert rows_config(256, 32, 32, 1, torch.float32) == (4, 64, 8)
    for table, limit in ((ROWS_TILES, 4096), (ROWS_TILES_FP32, 2048)):
        for (C, H, stride), (rows, block_k, warps) in table.items():
            block_w = 1 << ((H - 1) // stride).bit_length()  # next power of 2 of the output width
            assert block_w * block_k <= limit and rows in (2, 4, 8) and warps in (4, 8), (C, H, stride)
    assert rows_config(96, 12, 12, 1, torch.float32) == rows_config(96, 12, 12, 1) == (4, 64, 4)
    assert rows_config(256, 32, 32, 1, torch.float32, cpu=True) == (8, 64, 1)


def test_launchers_take_the_schedule_the_rule_names(monkeypatch):
    """launch_fwd and launch_bwd_input run the rows schedule exactly where pointwise_variant names it, the tiles
    elsewhere, and the tiles for an explicit config without a variant (the tuner's tiles)."""
    ran = []
    monkeypatch.setattr(launchers, "launch_rows", lambda *a, **k: ran.append("rows"))
    monkeypatch.setattr(launchers, "fwd_tiles", lambda *a, **k: ran.append("tiles"))
    monkeypatch.setattr(launchers, "bwd_input_tiles", lambda *a, **k: ran.append("tiles"))
    w = torch.randn(4, 1, 3, 3)
    for dtype, H, layout, stride in itertools.product((torch.float32, torch.bfloat16), (8, 32),
                                                      (torch.channels_last, torch.contiguous_format), (1, 2)):
        x = torch.randn(1, 4, H, H, dtype=dtype).to(memory_format=layout)
        cl = layout == torch.channels_last
        launch_fwd(x, w, None, None, stride, False)
        launch_bwd_input(x[:, :, ::stride, ::stride], w, x, stride)
        assert ran == [pointwise_variant("fwd", cl, dtype, H, H, stride),
                       pointwise_variant("bwd_input", cl, dtype, H, H, stride)], (dtype, H, cl, stride)
        ran.clear()
    x = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    launch_fwd(x, w, None, None, 1, False, config=LaunchConfig(8, 8, 1))
    assert ran == ["tiles"]


@needs_triton
def test_launchers_reject_a_variant_they_do_not_have():
    x = torch.randn(1, 4, 6, 6).to(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="variant must be one of"):
        launch_fwd(x, w, None, None, 1, False, variant="row")
    with pytest.raises(ValueError, match="at stride 1 only"):
        launch_bwd_input(torch.randn(1, 4, 3, 3).to(memory_format=torch.channels_last), w, x, 2, variant="rows")


# ---------------------------------------------------------------------------------------------------------
# `python -m bench depthwise tune=rows` without a GPU


def test_bench_rows_candidates():
    from bench.depthwise import layers, tune_rows

    for (_, C, H, s), dtype in itertools.product(layers.layer_table(), (torch.bfloat16, torch.float32)):
        tiles = tune_rows.rows_candidates(C, H, s, dtype)
        assert tiles[0] == rows_config(C, H, H, s, dtype) and len(set(tiles)) == len(tiles) >= 3
        assert all(32 <= t.block_k <= max(256, C) and t.block_r in (2, 4, 8) for t in tiles)


@needs_triton
def test_bench_rows_measure_with_fake_timer(monkeypatch):
    """The whole sweep on two tiny layers (interpreted without CUDA): the forward at both, the grad-input pass at
    the stride-1 one; rows, the per-case table with the rule's choice and its time over the fastest, the summary
    and its text. One rows tile (with and without upcast), to stay quick in the interpreter."""
    from bench import common
    from bench.depthwise import sweep, tune_rows

    candidates = tune_rows.rows_candidates
    monkeypatch.setattr(tune_rows, "rows_candidates", lambda *case: candidates(*case)[:1])
    timed = []

    fake_us = fake_timer(timed)

    layers = [("tiny", 8, 4, 1), ("tiny", 8, 5, 2)]
    result = tune_rows.measure(DEVICE, layers, batches=(2,), time_us=fake_us, copy_gbs=100.0, compile_ahead=False)
    rows, best = result["rows"], result["best"]
    # per dtype: the forward at both layers (torch, tiles, rows, rows+upcast), the grad-input at one (no torch)
    assert len(rows) == len(timed) == 2 * (2 * 4 + 3) and len(best) == 2 * 3
    for r in best:
        case = [x for x in rows if all(x[k] == r[k] for k in tune_rows.CASE_KEYS)]
        ours = min(x["us"] for x in case if x["variant"] != "torch")
        rule = r["tiles us"] if r["rule"] == "tiles" else r["default rows us"]
        assert r["rule"] == pointwise_variant(r["kind"], True, tune_rows.DTYPES[r["dtype"]], r["H"], r["H"],
                                              r["stride"])
        assert r["rule / fastest"] == rule / ours and (r["torch us"] is None) == (r["kind"] == "bwd_input")
    for r in rows:
        assert r["rel err"] < MATCH_TOL[r["dtype"]], r
    checked = sum(r["rule / fastest"] <= sweep.RULE_TOL for r in best)
    assert result["summary"]["the rule's choice (pointwise_variant, rows_config): cases within 3% of the fastest"] == (
        f"{checked} of {len(best)}")
    markdown = tune_rows.to_markdown(result, common.header(torch.device("cpu"), "python -m bench depthwise tune=rows"))
    assert "geomean speedup, rows (best tile) vs tiles, bwd_input bf16" in markdown
    assert "python -m bench depthwise tune=rows" in markdown
