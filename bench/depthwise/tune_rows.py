"""`python -m bench depthwise tune=rows`: the rows schedule (kernels.depthwise.rows) against the tiles
(kernels.depthwise.tiles), each kernel alone, channels_last, at every depthwise layer of the nets
(bench.depthwise.layers), batch 256 and 512, bfloat16 and float32: the forward (no epilogue; PyTorch's time
beside it) and the stride-1 grad-input pass (rows with the kernel flipped), the rows over candidate tiles around
rules.rows_config's, with and without upcast (16-bit tiles converted to float32 at the load). It justifies
rules.pointwise_variant and rules.rows_config: the per-case table names the rule's choice (the schedule
pointwise_variant picks, at its default tile) and its time over the fastest of our kernels timed.

Bytes: read the input, write the output (N*C*(H*H + OH*OH) elements); "% copy" relates them to a
device-to-device copy measured in the same run. "rel err" is ||variant - tiles|| / ||tiles||.
"""

import itertools
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import copy_gbs as copy_bandwidth_gbs
from bench.common import geomean, group_rows
from bench.depthwise.layers import (
    BATCHES,
    COMPILE_N,
    DNAMES,
    DTYPES,
    K,
    element_size,
    layer_table,
    max_rel_err,
)
from bench.depthwise.sweep import accuracy_check, rule_check, sweep_markdown
from bench.depthwise.timing import graph_us, n_sets_for
from kernels.depthwise.helpers import LaunchConfig, next_pow2
from kernels.depthwise.launchers import launch_bwd_input, launch_fwd
from kernels.depthwise.precompile import in_processes
from kernels.depthwise.rows import launch_rows
from kernels.depthwise.rules import pointwise_config, pointwise_variant, rows_config

UPCAST = (False, True)  # launch_rows(upcast=...): each tile converted to float32 at its load, or at each use
KINDS = ("fwd", "bwd_input")
CASE_KEYS = ("kind", "net", "N", "C", "H", "stride", "dtype")
COLUMNS = ["kind", "net", "N", "C", "H", "stride", "dtype", "variant", "config", "us", "GB/s", "% copy",
           "rel err"]  # fmt: skip
BEST_COLUMNS = ["kind", "net", "N", "C", "H", "stride", "dtype", "torch us", "tiles us", "default rows us",
                "best rows config", "best rows us", "best rows % copy", "rows speedup", "upcast speedup", "rule",
                "rule / fastest"]  # fmt: skip


def rows_candidates(C: int, H: int, stride: int, dtype: torch.dtype) -> list[LaunchConfig]:
    """The tiles tried around rows_config's: it first, then ROWS 2 and 8, the other warp count (4 or 8), half the
    channels (not below 32) and twice (up to 256 and C)."""
    base = rows_config(C, H, H, stride, dtype)
    out = [base, base._replace(block_r=2), base._replace(block_r=8),
           base._replace(num_warps=8 if base.num_warps == 4 else 4)]
    out += [base._replace(block_k=base.block_k // 2)] if base.block_k > 32 else []
    out += [base._replace(block_k=base.block_k * 2)] if base.block_k < min(256, next_pow2(C)) else []
    return list(dict.fromkeys(out))


def calls(kind: str, xs, w, stride: int):
    """(variant, config, call(i)) per timed call of one pass; xs stand for grad_z in the grad-input pass (the
    shape of x at stride 1). The tiles run at pointwise_config's tile."""
    C, H = w.shape[0], xs[0].shape[2]
    tile = pointwise_config(kind, True, C, H, H, stride)
    if kind == "fwd":
        yield "torch", "", lambda i: F.conv2d(xs[i], w.to(xs[i].dtype), stride=stride, padding=1, groups=C)
        yield "tiles", str(tuple(tile)), lambda i: launch_fwd(xs[i], w, None, None, stride, False, variant="tiles")
    else:
        yield "tiles", str(tuple(tile)), lambda i: launch_bwd_input(xs[i], w, xs[i], 1, variant="tiles")
    for cfg, up in itertools.product(rows_candidates(C, H, stride, xs[0].dtype), UPCAST):
        yield ("rows+upcast" if up else "rows"), str(tuple(cfg)), lambda i, cfg=cfg, up=up: launch_rows(
            xs[i], w, None, None, stride, False, flip=kind == "bwd_input", config=cfg, upcast=up)


def cases(layers, dnames):
    """(kind, net, C, H, stride, dname): the forward at every layer, the grad-input pass at the stride-1 ones."""
    for (net, C, H, stride), dname in itertools.product(layers, dnames):
        for kind in KINDS[:1] + (KINDS[1:] if stride == 1 else ()):
            yield kind, net, C, H, stride, dname


def _inputs(N, C, H, dname, device, n):
    return [torch.randn(N, C, H, H, device=device, dtype=DTYPES[dname]).to(memory_format=torch.channels_last)
            for _ in range(n)]  # fmt: skip


def _compile_job(job: tuple) -> None:
    """Every call of one (kind, layer, dtype) at a small batch on the GPU (in a worker process)."""
    kind, C, H, stride, dname = job
    xs = _inputs(COMPILE_N, C, H, dname, "cuda", 1)
    for _, _, call in calls(kind, xs, torch.randn(C, 1, K, K, device="cuda"), stride):
        call(0)
    torch.cuda.synchronize()


def measure_case(kind, net, N, C, H, stride, dname, copy_gbs, device, time_us=graph_us) -> list[dict]:
    """One row per variant and tile at one pass, layer, batch and dtype; time_us(call, n_sets) -> µs."""
    OH = (H - 1) // stride + 1
    n_bytes = N * C * (H * H + OH * OH) * element_size(dname)
    n = n_sets_for(n_bytes)
    xs = _inputs(N, C, H, dname, device, n)
    w = torch.randn(C, 1, K, K, device=device) / K
    rows, ref = [], None
    for variant, config, call in calls(kind, xs, w, stride):
        y = call(0)  # also the warm-up of this kernel in this process
        ref = y if variant == "tiles" else ref
        us = time_us(call, n)
        rows.append({"kind": kind, "net": net, "N": N, "C": C, "H": H, "stride": stride, "dtype": dname,
                     "variant": variant, "config": config, "us": us, "GB/s": n_bytes / us / 1e3,
                     "% copy": 100 * n_bytes / us / 1e3 / copy_gbs,
                     "rel err": max_rel_err([y], [ref]) if ref is not None else 0.0})
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """Per pass, layer, batch and dtype: the tiles, rows_config's tile and the fastest rows tile, upcast's best
    against plain rows' best, and pointwise_variant's choice at its default tile against our fastest kernel."""
    out = []
    for case in group_rows(rows, CASE_KEYS).values():
        r0 = case[0]
        tiles = next(r for r in case if r["variant"] == "tiles")
        plain = [r for r in case if r["variant"] == "rows"]
        ours = [r for r in case if r["variant"] != "torch"]
        default = plain[0]  # rows_candidates: rows_config's tile first
        best = min((r for r in ours if r["variant"] != "tiles"), key=lambda r: r["us"])
        upcast = min(r["us"] for r in case if r["variant"] == "rows+upcast")
        choice = pointwise_variant(r0["kind"], True, DTYPES[r0["dtype"]], r0["H"], r0["H"], r0["stride"])
        rule = tiles if choice == "tiles" else default
        out.append({
            **{k: r0[k] for k in CASE_KEYS}, "torch us": next((r["us"] for r in case if r["variant"] == "torch"), None),
            "tiles us": tiles["us"], "default rows us": default["us"], "best rows config": f"{best['variant']} "
            f"{best['config']}", "best rows us": best["us"], "best rows % copy": best["% copy"],
            "rows speedup": tiles["us"] / best["us"], "upcast speedup": min(r["us"] for r in plain) / upcast,
            "rule": choice, "rule / fastest": rule["us"] / min(r["us"] for r in ours),
        })  # fmt: skip
    return out


def summarize(rows: list[dict], best: list[dict], copy_gbs: float) -> dict:
    summary = {"copy GB/s": copy_gbs}
    for kind, dname in itertools.product(KINDS, DNAMES):
        b = [r for r in best if (r["kind"], r["dtype"]) == (kind, dname)]
        if not b:
            continue
        summary |= {
            f"geomean speedup, rows (best tile) vs tiles, {kind} {dname}": geomean(r["rows speedup"] for r in b),
            f"geomean speedup, rows (rows_config's tile) vs tiles, {kind} {dname}": geomean(
                r["tiles us"] / r["default rows us"] for r in b),
            f"geomean speedup, upcast vs plain rows (best tiles), {kind} {dname}": geomean(
                r["upcast speedup"] for r in b),
            f"median % copy, best rows, {kind} {dname}": statistics.median(r["best rows % copy"] for r in b),
        }  # fmt: skip
    summary |= rule_check(best, "the rule's choice (pointwise_variant, rows_config)")
    summary |= accuracy_check(rows, "vs tiles")
    return summary


def measure(device: str = "cuda", layers=None, batches=BATCHES, dnames=DNAMES, time_us=graph_us,
            copy_gbs: float | None = None, compile_ahead: bool = True) -> dict:
    """Every pass x layer x batch x dtype x (variant, tile); layers: (nets, C, H, stride), default layer_table().
    time_us, copy_gbs and compile_ahead=False let the CPU tests run it with a fake timer."""
    layers = layer_table() if layers is None else layers
    start = time.perf_counter()
    if compile_ahead:
        in_processes(_compile_job, [(kind, C, H, s, d) for kind, _, C, H, s, d in cases(layers, dnames)])
    compile_s = time.perf_counter() - start
    copy_gbs = copy_gbs or copy_bandwidth_gbs(device)
    rows = []
    for (kind, net, C, H, stride, dname), N in itertools.product(cases(layers, dnames), batches):
        rows += measure_case(kind, net, N, C, H, stride, dname, copy_gbs, device, time_us)
    best = best_rows(rows)
    summary = summarize(rows, best, copy_gbs)
    summary["precompile s"] = compile_s
    summary["total s"] = time.perf_counter() - start
    return {"title": "Depthwise 3x3 forward and stride-1 grad-input, channels_last: rows vs tiles",
            "columns": COLUMNS, "rows": rows, "best_columns": BEST_COLUMNS, "best": best, "summary": summary}


def to_markdown(result: dict, header: dict) -> str:
    intro = "Summary (CUDA-graph medians; speedup = tiles time / rows time, same pass, layer, batch, dtype):"
    per_case = ("Per case, config = (ROWS, BLOCK_K, num_warps); rule: pointwise_variant's schedule at its default "
                "tile, and its time over the fastest of our kernels timed:")
    return sweep_markdown(result, header, intro, per_case, "bench/depthwise/tune_rows.py")
