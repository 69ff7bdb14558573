"""`python -m bench depthwise tune=wgrad`: the depthwise 3x3 weight gradient alone, channels_last: the "gather"
kernel (its default tile) against the "taps" kernel over candidate tiles (kernels.depthwise.weight), at every
depthwise layer of the nets (bench.depthwise.layers), batch 256 and 512, bfloat16 and float32. It justifies
rules.wgrad_variant and rules.wgrad_taps_config: the per-case table names the rule's choice (variant and tile)
and its time over the fastest timed.

Each call is kernels.depthwise.launchers.launch_bwd_weight as the autograd binding calls it, in two settings
(EPILOGUES): "fused", under a fused epilogue (a folded BatchNorm and relu: scale, shift, relu, store_grad_z=True;
float32 weight, scale and shift), where the pass recomputes the conv output z for relu's mask; and "plain", no
epilogue, as the nets call it in training (BatchNorm needs the batch's statistics, so it is not folded). It is
the weight-gradient kernel plus the small kernel that adds the partial sums (identical for every variant).

Bytes are the fewest the pass must move: read x and grad_y, and with the epilogue write grad_z
(N*C*(H*W + 2*OH*OW) elements; N*C*(H*W + OH*OW) plain); "% copy" relates them to a device-to-device copy
measured in the same run. "rel err" is the largest ||variant - gather|| / ||gather|| over grad_weight,
grad_scale, grad_shift and grad_z; "grad_z flips" counts the grad_z elements that one kernel zeroes (relu's
mask) and the other does not: where the two recompute a pre-activation within float32 rounding of 0 with
opposite signs, one grad_z element moves by all of it, so rows with a flip may pass MATCH_TOL.
"""

import collections
import itertools
import statistics
import sys
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
from bench.depthwise.sweep import accuracy_check, over_tolerance, rule_check, sweep_markdown
from bench.depthwise.timing import graph_us, n_sets_for
from kernels.depthwise.helpers import LaunchConfig, next_pow2
from kernels.depthwise.launchers import launch_bwd_weight
from kernels.depthwise.precompile import in_processes
from kernels.depthwise.rules import wgrad_config, wgrad_taps_config, wgrad_variant

TAPS_BLOCK_K = (32, 64, 128)  # channels per tile, capped at C (rounded up to a power of 2)
TAPS_TILES = ((1024, 4), (2048, 8), (512, 4))  # (BLOCK_R * BLOCK_K elements, num_warps): 8 and 4 per thread
NARROW_TILES = ((2048, 4), (1024, 8))  # added where only one BLOCK_K fits (C = 32): the other warp counts
EPILOGUES = ("fused", "plain")  # the fused scale+shift+relu with grad_z stored, or none (see the docstring)
CASE_KEYS = ("net", "N", "C", "H", "stride", "dtype", "epilogue")
COLUMNS = ["net", "N", "C", "H", "stride", "dtype", "epilogue", "variant", "config", "us", "GB/s", "% copy",
           "speedup vs gather", "rel err", "grad_z flips"]  # fmt: skip
BEST_COLUMNS = ["net", "N", "C", "H", "stride", "dtype", "epilogue", "gather config", "gather us", "gather GB/s",
                "gather % copy", "best taps config", "taps us", "taps GB/s", "taps % copy", "speedup", "rule",
                "rule / fastest"]  # fmt: skip


def wgrad_bytes(N: int, C: int, H: int, stride: int, elt: int, epilogue: str = "fused") -> int:
    """Bytes the weight pass must move at an H x H input: read x and grad_y, and write grad_z when fused."""
    OH = (H - 1) // stride + 1
    return N * C * (H * H + (2 if epilogue == "fused" else 1) * OH * OH) * elt


def default_taps_config(C: int, H: int, stride: int, dname: str, N: int, epilogue: str) -> LaunchConfig:
    """rules.wgrad_taps_config's tile for a case (the fused epilogue recomputes z)."""
    return wgrad_taps_config(DTYPES[dname], N, C, H, H, stride, need_z=epilogue == "fused")


def taps_candidates(C: int, H: int, stride: int, dname: str, N: int, epilogue: str) -> list[LaunchConfig]:
    """The launch configurations tried for "taps" at a layer, dtype dname, batch N and epilogue:
    wgrad_taps_config's default first, then the sweep."""
    block_ks = [bk for bk in TAPS_BLOCK_K if bk <= max(TAPS_BLOCK_K[0], next_pow2(C))]
    tiles = TAPS_TILES + (NARROW_TILES if len(block_ks) == 1 else ())
    sweep = [LaunchConfig(elements // bk, bk, warps) for bk in block_ks for elements, warps in tiles]
    default = default_taps_config(C, H, stride, dname, N, epilogue)
    return list(dict.fromkeys([default, *sweep]))  # unique, in order


def variants(C: int, H: int, stride: int, dname: str, N: int,
             epilogue: str) -> list[tuple[str, LaunchConfig | None]]:
    """(variant, config) per timed call of a case; config None = the variant's default (gather's)."""
    return [("gather", None)] + [("taps", cfg) for cfg in taps_candidates(C, H, stride, dname, N, epilogue)]


def _epilogue_params(C: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight (C, 1, 3, 3), scale, shift (C,): float32 master weights, a folded BatchNorm near identity."""
    return (torch.randn(C, 1, K, K, device=device) / K, 1 + 0.1 * torch.randn(C, device=device),
            0.1 * torch.randn(C, device=device))  # fmt: skip


def _wgrad_call(xs, gs, params, stride: int, epilogue: str, variant: str, config):
    """call(i): the weight pass on input set i, fused (scale, shift, relu, grad_z stored) or plain."""
    w, sc, sh = params
    fused = epilogue == "fused"
    sc, sh = (sc, sh) if fused else (None, None)
    return lambda i: launch_bwd_weight(gs[i], xs[i], w, sc, sh, stride, fused, fused, config=config,
                                       variant=variant)  # fmt: skip


def _compile_job(job: tuple) -> None:
    """One (dtype, layer, epilogue, variant, config) at a small batch on the GPU (in a worker process)."""
    dname, C, H, stride, epilogue, variant, config = job
    xs, gs = channels_last_inputs(COMPILE_N, C, H, stride, DTYPES[dname], "cuda", 1)
    config = LaunchConfig(*config) if config else None
    _wgrad_call(xs, gs, _epilogue_params(C, "cuda"), stride, epilogue, variant, config)(0)
    torch.cuda.synchronize()


def measure_case(net, N, C, H, stride, dname, epilogue, copy_gbs, device, time_us=graph_us) -> list[dict]:
    """One row per variant and config at one layer, batch, dtype and epilogue; time_us(call, n_sets) -> µs."""
    dtype = DTYPES[dname]
    n_bytes = wgrad_bytes(N, C, H, stride, element_size(dname), epilogue)
    n = n_sets_for(n_bytes)
    xs, gs = channels_last_inputs(N, C, H, stride, dtype, device, n)
    params = _epilogue_params(C, device)
    gather_cfg = wgrad_config(True, C, H, H, stride, K, cpu=not xs[0].is_cuda)
    rows, ref = [], None
    for variant, cfg in variants(C, H, stride, dname, N, epilogue):
        call = _wgrad_call(xs, gs, params, stride, epilogue, variant, cfg)
        outs = call(0)  # also the warm-up of this kernel in this process
        ref = ref if ref is not None else outs  # gather's outputs, the first variant's
        us = time_us(call, n)
        rows.append({
            "net": net, "N": N, "C": C, "H": H, "stride": stride, "dtype": dname, "epilogue": epilogue,
            "variant": variant,
            "config": str(tuple(cfg or gather_cfg)), "us": us, "GB/s": n_bytes / us / 1e3,
            "% copy": 100 * n_bytes / us / 1e3 / copy_gbs, "rel err": max_rel_err(outs, ref),
            "grad_z flips": int(((outs[3] == 0) != (ref[3] == 0)).sum()),
            "bytes": n_bytes, "input sets": n,
        })  # fmt: skip
    for row in rows:
        row["speedup vs gather"] = rows[0]["us"] / row["us"]
    return rows


def rule_row(case_rows: list[dict]) -> dict:
    """The row of the rule's choice in a case: wgrad_variant's kernel at its default tile."""
    r = case_rows[0]
    variant = wgrad_variant(True, DTYPES[r["dtype"]], r["N"], r["C"], r["H"], r["H"], r["stride"])
    if variant == "gather":
        return next(row for row in case_rows if row["variant"] == "gather")
    tile = str(tuple(default_taps_config(r["C"], r["H"], r["stride"], r["dtype"], r["N"], r["epilogue"])))
    return next(row for row in case_rows if row["variant"] == "taps" and row["config"] == tile)


def best_rows(rows: list[dict]) -> list[dict]:
    """Per layer, batch, dtype and epilogue: gather next to the fastest taps configuration, and the rule's choice
    (wgrad_variant's kernel at its default tile) against the fastest of all."""
    out = []
    for case_rows in group_rows(rows, CASE_KEYS).values():
        gather = next(r for r in case_rows if r["variant"] == "gather")
        taps = min((r for r in case_rows if r["variant"] == "taps"), key=lambda r: r["us"])
        rule = rule_row(case_rows)
        out.append({
            **{k: gather[k] for k in CASE_KEYS}, "gather config": gather["config"], "gather us": gather["us"],
            "gather GB/s": gather["GB/s"], "gather % copy": gather["% copy"], "best taps config": taps["config"],
            "taps us": taps["us"], "taps GB/s": taps["GB/s"], "taps % copy": taps["% copy"],
            "speedup": gather["us"] / taps["us"], "rule": f"{rule['variant']} {rule['config']}",
            "rule / fastest": rule["us"] / min(gather["us"], taps["us"]),
        })  # fmt: skip
    return out


def summarize(rows: list[dict], best: list[dict], copy_gbs: float) -> dict:
    summary = {"copy GB/s": copy_gbs}
    for dname, epilogue in itertools.product(DNAMES, EPILOGUES):
        case = f"{dname}, {epilogue}"
        b = [r for r in best if (r["dtype"], r["epilogue"]) == (dname, epilogue)]
        if not b:
            continue
        default = [
            r
            for r in rows
            if (r["dtype"], r["epilogue"], r["variant"]) == (dname, epilogue, "taps")
            and r["config"] == str(tuple(default_taps_config(r["C"], r["H"], r["stride"], dname, r["N"], epilogue)))
        ]
        summary |= {
            f"geomean speedup, best taps config vs gather, {case}": geomean([r["speedup"] for r in b]),
            f"min / max speedup, best taps config vs gather, {case}": [
                round(min(r["speedup"] for r in b), 2), round(max(r["speedup"] for r in b), 2)],
            f"geomean speedup, default taps config (wgrad_taps_config) vs gather, {case}": geomean(
                [r["speedup vs gather"] for r in default]),
            f"cases where taps beats gather, {case}": f"{sum(r['speedup'] > 1 for r in b)} of {len(b)}",
            f"median % copy, gather / best taps, {case}": [
                round(statistics.median(r["gather % copy"] for r in b), 1),
                round(statistics.median(r["taps % copy"] for r in b), 1)],
            f"most frequent best taps configs, {case}": collections.Counter(
                r["best taps config"] for r in b).most_common(3),
        }  # fmt: skip
    summary |= rule_check(best, "the rule's choice (wgrad_variant, wgrad_taps_config)")
    summary |= accuracy_check(rows, "taps vs gather")
    summary["of them without a relu-mask flip in grad_z"] = sum(r["grad_z flips"] == 0 for r in over_tolerance(rows))
    return summary


def measure(
    device: str = "cuda",
    layers=None,
    batches=BATCHES,
    dnames=DNAMES,
    epilogues=EPILOGUES,
    time_us=graph_us,
    copy_gbs: float | None = None,
    compile_ahead: bool = True,
) -> dict:
    """Every layer x batch x dtype x epilogue x (variant, config); layers: (nets, C, H, stride), default
    layer_table().

    time_us, copy_gbs and compile_ahead=False let the CPU tests run the bookkeeping with a fake timer."""
    layers = layer_table() if layers is None else layers
    start = time.perf_counter()
    if compile_ahead:
        jobs = dict.fromkeys((d, C, H, s, e, variant, tuple(cfg) if cfg else None)  # unique: the batches share
                             for _, C, H, s in layers for d in dnames for e in epilogues for N in batches
                             for variant, cfg in variants(C, H, s, d, N, e))  # fmt: skip
        in_processes(_compile_job, list(jobs))
    compile_s = time.perf_counter() - start
    copy_gbs = copy_gbs or copy_bandwidth_gbs(device)
    rows = []
    for net, C, H, stride in layers:
        for N in batches:
            for dname, epilogue in itertools.product(dnames, epilogues):
                rows += measure_case(net, N, C, H, stride, dname, epilogue, copy_gbs, device, time_us)
        print(f"done {net} C={C} H={H} s={stride} ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
              flush=True)  # fmt: skip
    best = best_rows(rows)
    summary = summarize(rows, best, copy_gbs)
    summary["precompile s"] = compile_s
    summary["total s"] = time.perf_counter() - start
    return {
        "title": "Depthwise 3x3 weight gradient, channels_last, with scale+shift+relu (fused) and without (plain): "
                 "gather vs taps",
        "columns": COLUMNS,
        "rows": rows,
        "best_columns": BEST_COLUMNS,
        "best": best,
        "summary": summary,
    }


def to_markdown(result: dict, header: dict) -> str:
    intro = "Summary (CUDA-graph medians; speedup = gather time / taps time, same layer, batch, dtype, epilogue):"
    per_case = ("Per case: gather against the fastest taps configuration, config = (BLOCK_R, BLOCK_K, num_warps); "
                "rule: wgrad_variant's kernel at its default tile, and its time over the fastest timed:")
    return sweep_markdown(result, header, intro, per_case, "bench/depthwise/tune_wgrad.py")
