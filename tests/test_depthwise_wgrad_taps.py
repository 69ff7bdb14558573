"""The "taps" weight gradient (kernels/depthwise/weight.py) against the "gather" kernel and the float64 reference,
their argument checks, the rules that pick them, and the CPU-side bookkeeping of their sweep,
`python -m bench depthwise tune=wgrad` (shapes, bytes, configs, and the whole measurement with a fake timer).

Without CUDA the kernels run in Triton's interpreter (tests/conftest.py and test_depthwise set TRITON_INTERPRET
before triton is imported); the shapes are tiny for it.
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
from kernels.depthwise import LaunchConfig, reference_depthwise_conv2d
from kernels.depthwise.launchers import launch_bwd_weight
from kernels.depthwise.rules import wgrad_taps_config, wgrad_variant

OUTPUTS = ("grad_weight", "grad_scale", "grad_shift", "grad_z")
# (N, C, H, W, stride, epilogue, config, programs): odd sizes (5x7: 35 or 12 output pixels, off BLOCK_R),
# batch 1, C = 20 off BLOCK_K = 8; config None = wgrad_taps_config's interpreter tile; programs = 3 with
# 3 channel blocks gives one program per channel block, looping over 3 steps (the last one partial).
CASES = [
    (2, 20, 5, 7, 1, "scale,shift,relu", (32, 8, 1), 3),
    (1, 20, 5, 7, 2, "scale,shift,relu", None, 1024),
    (2, 20, 5, 7, 2, None, (8, 8, 1), 1024),
    (1, 8, 6, 5, 1, "shift", None, 1024),
    (2, 12, 5, 7, 1, "scale", (16, 16, 1), 2),
]


def reference_wgrad(x, w, sc, sh, stride, relu, grad_y):
    """Float64 (grad_weight, grad_scale, grad_shift, grad_z) by autograd, z being the conv output."""
    x, w, sc, sh = float64_twins((x, w, sc, sh))
    C = x.shape[1]
    z = reference_depthwise_conv2d(x, w, stride)
    y = z * sc.view(1, C, 1, 1) if sc is not None else z  # the epilogue of reference_depthwise_conv2d
    y = y + sh.view(1, C, 1, 1) if sh is not None else y
    y = torch.relu(y) if relu else y
    wrt = [t for t in (w, sc, sh, z) if t is not None]
    grads = iter(torch.autograd.grad(y, wrt, grad_y.double().cpu()))
    return [next(grads) if t is not None else None for t in (w, sc, sh, z)]


def _case_id(case) -> str:
    return "-".join(str(v).replace(" ", "") for v in case)


@needs_triton
@pytest.mark.parametrize(("dtype", "store_grad_z"), [(torch.float32, True), (torch.float32, False),
                                                     (torch.bfloat16, True)],
                         ids=["fp32-gz", "fp32-no-gz", "bf16-gz"])  # STORE_GZ's branch does not depend on dtype
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_taps_matches_gather_and_reference(case, dtype, store_grad_z):
    N, C, H, W, stride, epilogue, config, programs = case
    epilogue = epilogue or ""
    relu = "relu" in epilogue
    x, w, sc, sh = (t.detach() if t is not None else None
                    for t in make_inputs(N, C, H, W, 3, dtype, "channels_last", "scale" in epilogue,
                                         "shift" in epilogue))  # fmt: skip
    OH, OW = (H - 1) // stride + 1, (W - 1) // stride + 1
    grad_y = torch.randn(N, C, OH, OW, device=DEVICE, dtype=dtype).to(memory_format=torch.channels_last)
    args = (grad_y, x, w, sc, sh, stride, relu, store_grad_z)
    taps = launch_bwd_weight(*args, config=config and LaunchConfig(*config), programs=programs, variant="taps")
    gather = launch_bwd_weight(*args, variant="gather")  # its own default configuration
    ref = reference_wgrad(x, w, sc, sh, stride, relu, grad_y)
    # grad_z is written only where the epilogue changes it (relu or scale), as the nets' backward asks for it
    has_gz = store_grad_z and (relu or sc is not None)
    for name, t, g, r, present in zip(OUTPUTS, taps, gather, ref, (True, sc is not None, sh is not None, has_gz)):
        if not present:
            continue
        assert t.shape == g.shape == r.shape and t.dtype == g.dtype, name
        assert rel_err(t, r) < TOL[dtype], f"{name} vs float64: {rel_err(t, r):.2e}"
        assert rel_err(t, g) < TOL[dtype], f"{name} vs gather: {rel_err(t, g):.2e}"
    if has_gz:
        assert taps[3].is_contiguous(memory_format=torch.channels_last)


def test_taps_rejects_what_it_does_not_take():
    """NCHW x, a 5x5 kernel or an unknown variant: a ValueError before any launch."""
    g, x = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="channels_last"):
        launch_bwd_weight(g, x, torch.randn(4, 1, 3, 3), None, None, 1, False, False, variant="taps")
    x_cl, g_cl = (t.to(memory_format=torch.channels_last) for t in (x, g))
    with pytest.raises(ValueError, match="3x3"):
        launch_bwd_weight(g_cl, x_cl, torch.randn(4, 1, 5, 5), None, None, 1, False, False, variant="taps")
    with pytest.raises(ValueError, match="variant"):
        launch_bwd_weight(g_cl, x_cl, torch.randn(4, 1, 3, 3), None, None, 1, False, False, variant="tap")


def test_taps_config():
    """32-channel slices at most, with 4 warps on the GPU: 512-element tiles in 16 bits where the pass
    recomputes z, and without it below 2**23 output elements; in float32 where it does not and the slices are
    full; 1024 elsewhere; one warp in the interpreter."""
    for C, H, stride in ((32, 32, 1), (64, 32, 2), (728, 8, 1), (1024, 2, 1), (20, 5, 1)):
        for N, dtype, need_z in itertools.product((1, 4096), (torch.float32, torch.bfloat16, torch.float16),
                                                  (False, True)):
            cfg = wgrad_taps_config(dtype, N, C, H, H, stride, need_z)
            assert cfg.block_k == min(32, 1 << (C - 1).bit_length()) and cfg.num_warps == 4
            OH = (H - 1) // stride + 1
            if dtype == torch.float32:
                small = not need_z and C in (32, 64, 1024)  # 728 and 20 leave a slice part-empty
            else:
                small = need_z or N * C * OH * OH < 2**23
            assert cfg.block_r * cfg.block_k == (512 if small else 1024), (C, H, stride, N, dtype, need_z)
    # the line, at the nets' 256 channels 16x16: batch 128 is 2**23 output elements, batch 127 just under
    assert wgrad_taps_config(torch.bfloat16, 128, 256, 16, 16, 1, False).block_r == 32
    assert wgrad_taps_config(torch.bfloat16, 127, 256, 16, 16, 1, False).block_r == 16
    assert wgrad_taps_config(torch.float32, 512, 728, 8, 8, 1, False).block_r == 32  # 16 at 736 channels
    assert wgrad_taps_config(torch.float32, 512, 736, 8, 8, 1, False).block_r == 16
    assert wgrad_taps_config(torch.bfloat16, 32, 32, 32, 32, 1, True, cpu=True).num_warps == 1


def test_wgrad_variant_rule():
    """taps only where it can run (channels_last, 3x3); there in float32 always, in 16 bits from 2**21 output
    elements (N x C x OH x OW), as rules.wgrad_variant states it."""
    fp32, bf16, fp16 = torch.float32, torch.bfloat16, torch.float16
    assert wgrad_variant(False, fp32, 512, 32, 32, 32, 1) == "gather"  # taps is channels_last only
    assert wgrad_variant(True, fp32, 512, 32, 32, 32, 1, K=5) == "gather"  # and 3x3 only
    assert wgrad_variant(True, fp32, 1, 8, 4, 4, 2) == "taps"
    assert wgrad_variant(True, bf16, 128, 256, 16, 16, 2) == "taps"  # 128 x 256 x 8 x 8 = 2**21
    assert wgrad_variant(True, fp16, 127, 256, 16, 16, 2) == "gather"


# ---------------------------------------------------------------------------------------------------------
# `python -m bench depthwise tune=wgrad` without a GPU


def test_bench_shapes_bytes_and_configs():
    from bench.depthwise import layers as bench_layers
    from bench.depthwise import tune_wgrad as wgrad

    layers = bench_layers.layer_table()  # the nets' own layers: tests/test_bench.py checks them
    # x (N, C, H, H) + grad_y and grad_z (N, C, OH, OH), in bytes: 2 * 64 * (32*32 + 2*16*16) * 2
    assert wgrad.wgrad_bytes(2, 64, 32, 2, 2) == 2 * 64 * (1024 + 512) * 2
    assert wgrad.wgrad_bytes(1, 3, 5, 1, 4) == 3 * 75 * 4
    assert wgrad.wgrad_bytes(1, 3, 5, 1, 4, "plain") == 3 * 50 * 4  # no grad_z written
    for (_, C, H, s), dname, N, epilogue in itertools.product(layers, wgrad.DNAMES, (256, 512), wgrad.EPILOGUES):
        configs = wgrad.taps_candidates(C, H, s, dname, N, epilogue)
        assert 5 <= len(configs) <= 9 and len(set(configs)) == len(configs)
        assert configs[0] == wgrad_taps_config(wgrad.DTYPES[dname], N, C, H, H, s, need_z=epilogue == "fused")
        for cfg in configs:
            assert cfg.block_k in wgrad.TAPS_BLOCK_K and cfg.block_k <= max(32, C)
            assert cfg.block_r * cfg.block_k in (512, 1024, 2048) and cfg.num_warps in (4, 8)


@needs_triton
def test_bench_measure_with_fake_timer(monkeypatch):
    """The whole measurement on two tiny layers (interpreted without CUDA): rows, best configs, the rule's choice
    against the fastest, summary, text. Two taps configurations, to stay quick in the interpreter (the sweeps' own
    lists are checked by test_bench_shapes_bytes_and_configs)."""
    from bench import common
    from bench.depthwise import tune_wgrad as wgrad

    taps = wgrad.taps_candidates
    monkeypatch.setattr(wgrad, "taps_candidates", lambda *shape: taps(*shape)[:2])
    timed = []

    fake_us = fake_timer(timed)

    layers = [("tiny", 8, 4, 1), ("tiny", 8, 5, 2)]
    result = wgrad.measure(DEVICE, layers, batches=(2,), time_us=fake_us, copy_gbs=100.0, compile_ahead=False)
    rows, best = result["rows"], result["best"]
    per_case = [len(wgrad.variants(C, H, s, d, 2, e)) for _, C, H, s in layers for d in wgrad.DNAMES
                for e in wgrad.EPILOGUES]  # fmt: skip
    assert len(rows) == len(timed) == sum(per_case)
    assert len(best) == 8 and all(r["speedup"] == r["gather us"] / r["taps us"] for r in best)  # 2 x 2 x 2
    plain = [r for r in rows if r["epilogue"] == "plain"]
    assert plain and all(r["grad_z flips"] == 0 for r in plain)  # no grad_z: nothing to flip
    for r in rows:
        assert r["GB/s"] == pytest.approx(r["bytes"] / r["us"] / 1e3)
        assert r["% copy"] == pytest.approx(100 * r["GB/s"] / 100.0)
        assert r["rel err"] < MATCH_TOL[r["dtype"]], r
    assert result["summary"]["rows with rel err over MATCH_TOL"] == 0
    for r in best:  # the rule's choice: wgrad_variant's kernel at its default tile, over the fastest timed
        case = [x for x in rows if all(x[k] == r[k] for k in wgrad.CASE_KEYS)]
        variant = wgrad_variant(True, wgrad.DTYPES[r["dtype"]], r["N"], r["C"], r["H"], r["H"], r["stride"])
        tile = case[0]["config"] if variant == "gather" else str(tuple(wgrad.default_taps_config(
            r["C"], r["H"], r["stride"], r["dtype"], r["N"], r["epilogue"])))
        rule_us = next(x["us"] for x in case if x["variant"] == variant and x["config"] == tile)
        assert r["rule"] == f"{variant} {tile}" and r["rule / fastest"] == rule_us / min(x["us"] for x in case)
    head = common.header(torch.device("cpu"), "python -m bench depthwise tune=wgrad")
    markdown = wgrad.to_markdown(result, head)
    assert "geomean speedup, best taps config vs gather, bf16, plain" in markdown
    assert "geomean speedup, best taps config vs gather, fp32, fused" in markdown
    assert "the rule's choice (wgrad_variant, wgrad_taps_config): cases within 3% of the fastest" in markdown
    assert "python -m bench depthwise tune=wgrad" in markdown
