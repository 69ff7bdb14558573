"""The "rows" schedule (kernels/depthwise_rows.py) against the float64 reference: the forward with and without
its epilogue, stride 1 and 2, and the flipped stride-1 pass against autograd's grad_x; its argument checks and
the launchers' choice of it (through the launchers, tests/test_depthwise.py checks it with the autograd binding).
In Triton's interpreter without CUDA (tests/conftest.py sets TRITON_INTERPRET); the shapes are tiny.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from test_depthwise import (  # noqa: F401 (one_cpu_thread: an autouse fixture, active where imported)
    DEVICE,
    TOL,
    float64_twins,
    make_inputs,
    needs_triton,
    one_cpu_thread,
    rel_err,
)

from kernels import depthwise_rows
from kernels.depthwise import LaunchConfig, launch_bwd_input, launch_fwd, pointwise_variant, reference_depthwise_conv2d
from kernels.depthwise_rows import launch_rows, rows_config

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
    """pointwise_variant as its docstring states the H200 measurement: channels_last 3x3 only, the grad-input
    pass at stride 1 only, float32 forwards at 32x32 inputs left to the tiles."""
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
    """16-bit and float32 inputs have their own measured tiles (kernels/depthwise_rows.py's tables): at 256
    channels 32x32 float32 measured 444 µs at BLOCK_K 128, the bf16 tile, against 367 at 64 (H200). No
    float32 tile holds more than 2048 elements a row (BLOCK_W x BLOCK_K), half the largest 16-bit one; off
    the tables, the rule; the interpreter's tile on the CPU."""
    assert rows_config(256, 32, 32, 1, torch.bfloat16) == rows_config(256, 32, 32, 1, torch.float16) == (4, 128, 4)
    assert rows_config(256, 32, 32, 1, torch.float32) == (4, 64, 8)
    for table, limit in ((depthwise_rows._MEASURED, 4096), (depthwise_rows._MEASURED_FP32, 2048)):
        for (C, H, stride), (rows, block_k, warps) in table.items():
            block_w = 1 << ((H - 1) // stride).bit_length()  # next power of 2 of the output width
            assert block_w * block_k <= limit and rows in (2, 4, 8) and warps in (4, 8), (C, H, stride)
    assert rows_config(96, 12, 12, 1, torch.float32) == rows_config(96, 12, 12, 1) == (4, 64, 4)
    assert rows_config(256, 32, 32, 1, torch.float32, cpu=True) == (8, 64, 1)


def test_rows_tiles_follow_the_committed_sweep():
    """At every layer and dtype of the committed H200 sweep (bench/results/depthwise-rows-h200.json, from
    results/depthwise-rows.py), the table's tile was timed and is within 10% of the best tile timed there, in
    geometric mean over both batches and both passes: the run of 2026-12-01 21:27 found at most 7.3%
    (float32, 64 channels 32x32 stride 2), and no 16-bit layer more than 3.7%."""
    measured = json.loads((Path(__file__).parents[1] / "bench/results/depthwise-rows-h200.json").read_text())
    times: dict[tuple, dict[tuple, dict[str, float]]] = {}  # layer -> (pass, batch) -> tile -> µs
    for r in measured["rows"]:
        if r["variant"].startswith("rows("):
            layer = (r["C"], r["H"], r["stride"], r["dtype"])
            times.setdefault(layer, {}).setdefault((r["kind"], r["N"]), {})[r["variant"][4:]] = r["us"]
    assert len(times) == 30  # the 15 layers of bench/depthwise.py, bf16 and fp32
    for (C, H, stride, dname), cases in times.items():
        tiles = set.intersection(*(set(t) for t in cases.values()))

        def mean_us(tile, cases=cases):
            return math.exp(sum(math.log(t[tile]) for t in cases.values()) / len(cases))

        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dname]
        ours = str(tuple(rows_config(C, H, H, stride, dtype)))
        assert ours in tiles and mean_us(ours) <= 1.1 * min(map(mean_us, tiles)), (C, H, stride, dname)


@needs_triton
def test_launchers_reject_a_variant_they_do_not_have():
    x = torch.randn(1, 4, 6, 6).to(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="variant must be one of"):
        launch_fwd(x, w, None, None, 1, False, variant="row")
    with pytest.raises(ValueError, match="at stride 1 only"):
        launch_bwd_input(torch.randn(1, 4, 3, 3).to(memory_format=torch.channels_last), w, x, 2, variant="rows")
