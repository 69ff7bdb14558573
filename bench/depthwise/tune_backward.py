"""`python -m bench depthwise tune=backward`: the depthwise 3x3 backward, channels_last, stride 1, without an
epilogue (as the nets call it in training): the two passes ("split": launch_bwd_weight, then launch_bwd_input,
each at its default kernel and tile) against the one pass of kernels.depthwise.onepass ("fused": launch_bwd_fused
on pixel tiles; "window": on whole rows down each image) over candidate tiles each, at every stride-1 depthwise
layer of the nets (bench.depthwise.layers), batch 256 and 512, bfloat16 and float32. It justifies
rules.backward_variant, rules.bwd_fused_config and rules.window_config: the per-case table names the rule's
choice (at its default tile) and its time over the fastest timed.

Each call returns (grad_x, grad_weight). Bytes are the fewest a backward must move: read grad_y and x, write
grad_x (3 N C H W elements); "% copy" relates them to a device-to-device copy measured in the same run. "rel err"
is the largest ||one pass - split|| / ||split|| over grad_x and grad_weight.
"""

import itertools
import statistics
import time

import torch

from bench.common import copy_gbs as copy_bandwidth_gbs
from bench.common import geomean, group_rows
from bench.depthwise.layers import (
    BATCHES,
    COMPILE_N,
    DNAMES,
    DTYPES,
    K,
    channels_last_inputs,
    element_size,
    layer_table,
    max_rel_err,
)
from bench.depthwise.sweep import accuracy_check, rule_check, sweep_markdown
from bench.depthwise.timing import graph_us, n_sets_for
from kernels.depthwise.helpers import LaunchConfig, next_pow2
from kernels.depthwise.launchers import launch_bwd_fused, launch_bwd_input, launch_bwd_weight
from kernels.depthwise.precompile import in_processes
from kernels.depthwise.rules import FUSED_SCHEDULE, backward_variant, bwd_fused_config, window_config

# (BLOCK_R, BLOCK_K, num_warps) tried for "fused" besides bwd_fused_config's; BLOCK_K capped at C (rounded up)
FUSED_TILES = ((16, 32, 4), (32, 32, 4), (8, 64, 4), (16, 64, 4), (64, 32, 8), (32, 64, 8))
CASE_KEYS = ("net", "N", "C", "H", "dtype")
COLUMNS = ["net", "N", "C", "H", "dtype", "variant", "config", "us", "GB/s", "% copy", "speedup vs split",
           "rel err"]  # fmt: skip
BEST_COLUMNS = ["net", "N", "C", "H", "dtype", "split us", "split % copy", "default fused us", "best fused config",
                "best fused us", "best fused % copy", "default speedup", "best speedup", "default window us",
                "best window config", "best window us", "best window % copy", "best window speedup", "rule",
                "rule / fastest"]  # fmt: skip


def backward_bytes(N: int, C: int, H: int, elt: int) -> int:
    """Read grad_y and x, write grad_x, at stride 1 (H x H maps)."""
    return 3 * N * C * H * H * elt


def fused_candidates(C: int) -> list[LaunchConfig]:
    """bwd_fused_config's tile first, then FUSED_TILES with BLOCK_K at most C rounded up to a power of 2."""
    default = bwd_fused_config(C)
    cap = max(32, next_pow2(C))
    sweep = [LaunchConfig(*t) for t in FUSED_TILES if t[1] <= cap]
    return list(dict.fromkeys([default, *sweep]))


def window_candidates(C: int, H: int, dtype: torch.dtype) -> list[LaunchConfig]:
    """window_config's (ROWS, BLOCK_K, num_warps) for the dtype first, then five tiles around it: whole images
    (up to 32 rows) in row tiles of about 512 elements, 8 and 4 rows a chunk, and twice the channels with 4 and
    with 8 warps (BLOCK_K at most C rounded up, and 16 or more)."""
    whole = LaunchConfig(min(H, 32), max(16, min(next_pow2(C), 512 // next_pow2(H))), 4)
    wide = min(2 * whole.block_k, max(16, next_pow2(C)))
    sweep = [whole, whole._replace(block_r=min(8, H)), whole._replace(block_r=min(4, H)),
             whole._replace(block_k=wide), whole._replace(block_k=wide, num_warps=8)]
    return list(dict.fromkeys([window_config(C, H, H, dtype), *sweep]))


def variants(C: int, H: int, dtype: torch.dtype) -> list[tuple[str, LaunchConfig | None]]:
    return ([("split", None)] + [("fused", cfg) for cfg in fused_candidates(C)]
            + [("window", cfg) for cfg in window_candidates(C, H, dtype)])


def _call(xs, gs, w, variant: str, config):
    """call(i) -> (grad_x, grad_weight) on input set i."""
    if variant == "split":
        return lambda i: (launch_bwd_input(gs[i], w, xs[i], 1),
                          launch_bwd_weight(gs[i], xs[i], w, None, None, 1, False, False)[0])
    schedule = FUSED_SCHEDULE[variant]
    return lambda i: launch_bwd_fused(gs[i], xs[i], w, None, config=config, schedule=schedule)[:2]


def _compile_job(job: tuple) -> None:
    """One (dtype, layer, variant, config) at a small batch on the GPU (in a worker process)."""
    dname, C, H, variant, config = job
    xs, gs = channels_last_inputs(COMPILE_N, C, H, 1, DTYPES[dname], "cuda", 1)
    _call(xs, gs, torch.randn(C, 1, K, K, device="cuda"), variant, config and LaunchConfig(*config))(0)
    torch.cuda.synchronize()


def measure_case(net, N, C, H, dname, copy_gbs, device, time_us=graph_us) -> list[dict]:
    """One row per variant and tile at one layer, batch and dtype; time_us(call, n_sets) -> µs."""
    dtype = DTYPES[dname]
    n_bytes = backward_bytes(N, C, H, element_size(dname))
    n = n_sets_for(n_bytes)
    xs, gs = channels_last_inputs(N, C, H, 1, dtype, device, n)
    w = torch.randn(C, 1, K, K, device=device) / K
    rows, ref = [], None
    for variant, cfg in variants(C, H, dtype):
        call = _call(xs, gs, w, variant, cfg)
        outs = call(0)  # also the warm-up of this kernel in this process
        ref = ref if ref is not None else outs  # split's outputs, the first variant's
        us = time_us(call, n)
        rows.append({
            "net": net, "N": N, "C": C, "H": H, "dtype": dname, "variant": variant,
            "config": str(tuple(cfg)) if cfg else "defaults", "us": us, "GB/s": n_bytes / us / 1e3,
            "% copy": 100 * n_bytes / us / 1e3 / copy_gbs, "rel err": max_rel_err(outs, ref), "bytes": n_bytes,
            "input sets": n,
        })  # fmt: skip
    for row in rows:
        row["speedup vs split"] = rows[0]["us"] / row["us"]
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """Per layer, batch and dtype: split, bwd_fused_config's tile, the fastest fused tile, window_config's tile,
    the fastest window tile, and backward_variant's choice at its default tile against the fastest of all."""
    out = []
    for case_rows in group_rows(rows, CASE_KEYS).values():
        split, default = case_rows[0], case_rows[1]  # variants(): split, then the default tile
        best = min((r for r in case_rows if r["variant"] == "fused"), key=lambda r: r["us"])
        windows = [r for r in case_rows if r["variant"] == "window"]
        best_window = min(windows, key=lambda r: r["us"])
        choice = backward_variant(True, DTYPES[split["dtype"]], split["N"], split["C"], split["H"], split["H"], 1)
        rule = {"split": split, "fused": default, "window": windows[0]}[choice]  # at its default tile
        out.append({
            **{k: split[k] for k in CASE_KEYS}, "split us": split["us"], "split % copy": split["% copy"],
            "default fused us": default["us"], "best fused config": best["config"], "best fused us": best["us"],
            "best fused % copy": best["% copy"], "default speedup": split["us"] / default["us"],
            "best speedup": split["us"] / best["us"], "default window us": windows[0]["us"],
            "best window config": best_window["config"], "best window us": best_window["us"],
            "best window % copy": best_window["% copy"], "best window speedup": split["us"] / best_window["us"],
            "rule": choice, "rule / fastest": rule["us"] / min(r["us"] for r in case_rows),
        })  # fmt: skip
    return out


def summarize(rows: list[dict], best: list[dict], copy_gbs: float) -> dict:
    summary = {"copy GB/s": copy_gbs}
    for dname in DNAMES:
        b = [r for r in best if r["dtype"] == dname]
        if not b:
            continue
        summary |= {
            f"geomean speedup fused (default tile) vs split, {dname}": geomean([r["default speedup"] for r in b]),
            f"geomean speedup fused (best tile) vs split, {dname}": geomean([r["best speedup"] for r in b]),
            f"min / max speedup fused (default tile) vs split, {dname}": [
                round(min(r["default speedup"] for r in b), 2), round(max(r["default speedup"] for r in b), 2)],
            f"cases where fused (default tile) beats split, {dname}": (
                f"{sum(r['default speedup'] > 1 for r in b)} of {len(b)}"),
            f"median % copy, split / best fused, {dname}": [
                round(statistics.median(r["split % copy"] for r in b), 1),
                round(statistics.median(r["best fused % copy"] for r in b), 1)],
            f"geomean speedup window (default tile) vs split, {dname}": geomean(
                [r["split us"] / r["default window us"] for r in b]),
            f"geomean speedup window (best tile) vs split, {dname}": geomean([r["best window speedup"] for r in b]),
            f"geomean speedup window (best tile) vs fused (best tile), {dname}": geomean(
                [r["best fused us"] / r["best window us"] for r in b]),
            f"cases where window (best tile) beats fused (best tile) and split, {dname}": (
                f"{sum(r['best window us'] < min(r['best fused us'], r['split us']) for r in b)} of {len(b)}"),
        }  # fmt: skip
    summary |= rule_check(best, "the rule's choice (backward_variant at its default tile)")
    summary |= accuracy_check(rows, "fused vs split")
    return summary


def measure(device: str = "cuda", layers=None, batches=BATCHES, dnames=DNAMES, time_us=graph_us,
            copy_gbs: float | None = None, compile_ahead: bool = True) -> dict:
    """Every stride-1 layer x batch x dtype x (variant, tile); layers: (nets, C, H, stride), default
    layer_table(). time_us, copy_gbs and compile_ahead=False let the CPU tests run it with a fake timer."""
    layers = [layer for layer in (layer_table() if layers is None else layers) if layer[3] == 1]
    start = time.perf_counter()
    if compile_ahead:
        jobs = dict.fromkeys((d, C, H, variant, tuple(cfg) if cfg else None) for _, C, H, _ in layers
                             for d in dnames for variant, cfg in variants(C, H, DTYPES[d]))  # fmt: skip
        in_processes(_compile_job, list(jobs))
    compile_s = time.perf_counter() - start
    copy_gbs = copy_gbs or copy_bandwidth_gbs(device)
    rows = []
    for (net, C, H, _), N, dname in itertools.product(layers, batches, dnames):
        rows += measure_case(net, N, C, H, dname, copy_gbs, device, time_us)
    best = best_rows(rows)
    summary = summarize(rows, best, copy_gbs)
    summary["precompile s"] = compile_s
    summary["total s"] = time.perf_counter() - start
    return {"title": "Depthwise 3x3 backward, channels_last, stride 1, no epilogue: two passes (split) vs one (fused, "
                     "window)",
            "columns": COLUMNS, "rows": rows, "best_columns": BEST_COLUMNS, "best": best, "summary": summary}


def to_markdown(result: dict, header: dict) -> str:
    intro = "Summary (CUDA-graph medians; speedup = split time / one-pass time, same layer, batch, dtype):"
    per_case = ("Per case, config = (BLOCK_R, BLOCK_K, num_warps) for fused, (ROWS, BLOCK_K, num_warps) for window; "
                "rule: backward_variant's choice at its default tile, and its time over the fastest timed:")
    return sweep_markdown(result, header, intro, per_case, "bench/depthwise/tune_backward.py")
