"""The depthwise 3x3 weight gradient alone, channels_last: the "gather" kernel (its default launch configuration)
against the "taps" kernel over a few candidate configurations, at every depthwise layer of the CIFAR MobileNetV1
and Xception (bench/depthwise.py's layer table), batch 256 and 512, bfloat16 and float32. (Until 2026-12-01 a
third, on kernels/depthwise_rows.py's schedule, was timed beside them; bench/results/wgrad-h200-with-rows.md has
its last figures, 0.99x taps in bf16 and 0.89x in fp32, after which it was removed.)

    python3 bench/wgrad.py [PREFIX]   -> PREFIX.json + PREFIX.md (default bench/results/wgrad-<gpu slug>)

Each call is kernels.depthwise.launch_bwd_weight as _DepthwiseConv2dFn.backward calls it, in two settings
(EPILOGUES): "fused", under a fused epilogue (a folded BatchNorm and relu: scale, shift, relu, store_grad_z=True;
float32 weight, scale and shift), where the pass recomputes the conv output z for relu's mask; and "plain", no
epilogue, as the nets call it in training (BatchNorm needs the batch's statistics, so it is not folded). It is
the weight-gradient kernel plus the small kernel that adds the partial sums (identical for every
variant). Every kernel variant is compiled first, in parallel processes (kernels.depthwise._in_processes),
and each timed call is warmed up; times are bench/depthwise.py's CUDA-graph medians over rotating input sets
(`graph_us`, `n_sets_for`: small layers would otherwise be read from the L2).

Bytes are the fewest the pass must move: read x and grad_y, and with the epilogue write grad_z
(N*C*(H*W + 2*OH*OW) elements; N*C*(H*W + OH*OW) plain);
"% copy" relates them to a device-to-device copy measured in the same run (bench.common.copy_gbs). "rel err"
is the largest ||variant - gather|| / ||gather|| over grad_weight, grad_scale, grad_shift and grad_z; "grad_z flips"
counts the grad_z elements that one kernel zeroes (relu's mask) and the other does not (see MATCH_TOL).
"""

import collections
import itertools
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import copy_gbs as copy_bandwidth_gbs  # noqa: E402
from bench.common import geomean, group_rows, run_sweep, sweep_markdown  # noqa: E402
from bench.depthwise import BATCHES, DTYPES, K, graph_us, layer_table, n_sets_for  # noqa: E402
from kernels import depthwise as dw  # noqa: E402

TAPS_BLOCK_K = (32, 64, 128)  # channels per tile, capped at C (rounded up to a power of 2)
# (BLOCK_R * BLOCK_K elements, num_warps): 8 elements per thread and tile, and 4 (16 bits' default since
# results/wgrad-occupancy.py's sweep, bench/results/wgrad-occupancy-h200.md)
TAPS_TILES = ((1024, 4), (2048, 8), (512, 4))
NARROW_TILES = ((2048, 4), (1024, 8))  # added where only one BLOCK_K fits (C = 32): the other warp counts
# ||taps - gather|| / ||gather|| allowed, as tests/test_depthwise.py's TOL: float32 sums in another order;
# bfloat16 grad_z is rounded from float32 values that differ in their last bits. A relu-mask flip (the two
# recompute a pre-activation within float32 rounding of 0 with opposite signs) moves one grad_z element by
# all of it: up to 4.8e-4 at these sizes, with both kernels as close to float64 as usual elsewhere
# (results/wgrad-flips.py, results/h200-2026-12-01j.log); rows with a flip are counted apart.
MATCH_TOL = {"bf16": 2e-2, "fp32": 1e-5}
DNAMES = tuple(DTYPES)  # "bf16", "fp32"
COMPILE_N = 16  # batch of the precompile jobs (the kernels do not specialise on it)
EPILOGUES = ("fused", "plain")  # the fused scale+shift+relu with grad_z stored, or none (see the docstring)
CASE_KEYS = ("net", "N", "C", "H", "stride", "dtype", "epilogue")
COLUMNS = ["net", "N", "C", "H", "stride", "dtype", "epilogue", "variant", "config", "us", "GB/s", "% copy",
           "speedup vs gather", "rel err", "grad_z flips"]  # fmt: skip
BEST_COLUMNS = ["net", "N", "C", "H", "stride", "dtype", "epilogue", "gather config", "gather us", "gather GB/s",
                "gather % copy", "best taps config", "taps us", "taps GB/s", "taps % copy", "speedup"]  # fmt: skip


def wgrad_bytes(N: int, C: int, H: int, stride: int, elt: int, epilogue: str = "fused") -> int:
    """Bytes the weight pass must move at an H x H input: read x and grad_y, and write grad_z when fused."""
    OH = (H - 1) // stride + 1
    return N * C * (H * H + (2 if epilogue == "fused" else 1) * OH * OH) * elt


def default_taps_config(C: int, H: int, stride: int, dname: str, N: int, epilogue: str) -> dw.LaunchConfig:
    """kernels.depthwise.wgrad_taps_config's tile for a case (the fused epilogue recomputes z)."""
    return dw.wgrad_taps_config(DTYPES[dname], N, C, H, H, stride, need_z=epilogue == "fused")


def taps_candidates(C: int, H: int, stride: int, dname: str, N: int, epilogue: str) -> list[dw.LaunchConfig]:
    """The launch configurations tried for "taps" at a layer, dtype dname, batch N and epilogue:
    wgrad_taps_config's default first, then the sweep."""
    block_ks = [bk for bk in TAPS_BLOCK_K if bk <= max(TAPS_BLOCK_K[0], dw._next_pow2(C))]
    tiles = TAPS_TILES + (NARROW_TILES if len(block_ks) == 1 else ())
    sweep = [dw.LaunchConfig(elements // bk, bk, warps) for bk in block_ks for elements, warps in tiles]
    default = default_taps_config(C, H, stride, dname, N, epilogue)
    return list(dict.fromkeys([default, *sweep]))  # unique, in order


def variants(C: int, H: int, stride: int, dname: str, N: int,
             epilogue: str) -> list[tuple[str, dw.LaunchConfig | None]]:
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
    return lambda i: dw.launch_bwd_weight(gs[i], xs[i], w, sc, sh, stride, fused, fused, config=config,
                                          variant=variant)  # fmt: skip


def _inputs(N: int, C: int, H: int, stride: int, dtype: torch.dtype, device, n: int):
    """n sets of (x, grad_y), channels_last."""
    OH = (H - 1) // stride + 1
    cl = torch.channels_last
    xs = [torch.randn(N, C, H, H, device=device, dtype=dtype).to(memory_format=cl) for _ in range(n)]
    gs = [torch.randn(N, C, OH, OH, device=device, dtype=dtype).to(memory_format=cl) for _ in range(n)]
    return xs, gs


def max_rel_err(outs, refs) -> float:
    """Largest ||out - ref|| / ||ref|| over the outputs of launch_bwd_weight (empty ones skipped)."""
    errs = [((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()
            for a, b in zip(outs, refs) if b.numel()]  # fmt: skip
    return max(errs)


def _compile_job(job: tuple) -> None:
    """One (dtype, layer, epilogue, variant, config) at a small batch on the GPU (in a worker process)."""
    dname, C, H, stride, epilogue, variant, config = job
    xs, gs = _inputs(COMPILE_N, C, H, stride, DTYPES[dname], "cuda", 1)
    config = dw.LaunchConfig(*config) if config else None
    _wgrad_call(xs, gs, _epilogue_params(C, "cuda"), stride, epilogue, variant, config)(0)
    torch.cuda.synchronize()


def measure_case(net, N, C, H, stride, dname, epilogue, copy_gbs, device, time_us=graph_us) -> list[dict]:
    """One row per variant and config at one layer, batch, dtype and epilogue; time_us(call, n_sets) -> µs."""
    dtype = DTYPES[dname]
    n_bytes = wgrad_bytes(N, C, H, stride, torch.empty((), dtype=dtype).element_size(), epilogue)
    n = n_sets_for(n_bytes)
    xs, gs = _inputs(N, C, H, stride, dtype, device, n)
    params = _epilogue_params(C, device)
    gather_cfg = dw.wgrad_config(True, C, H, H, stride, K, cpu=not xs[0].is_cuda)
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


def best_rows(rows: list[dict]) -> list[dict]:
    """Per layer, batch and dtype: gather next to the fastest taps configuration."""
    out = []
    for case_rows in group_rows(rows, CASE_KEYS).values():
        gather = next(r for r in case_rows if r["variant"] == "gather")
        taps = min((r for r in case_rows if r["variant"] == "taps"), key=lambda r: r["us"])
        out.append({
            **{k: gather[k] for k in CASE_KEYS}, "gather config": gather["config"], "gather us": gather["us"],
            "gather GB/s": gather["GB/s"], "gather % copy": gather["% copy"], "best taps config": taps["config"],
            "taps us": taps["us"], "taps GB/s": taps["GB/s"], "taps % copy": taps["% copy"],
            "speedup": gather["us"] / taps["us"],
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
    summary["max rel err taps vs gather"] = max(r["rel err"] for r in rows)
    over = [r for r in rows if r["rel err"] > MATCH_TOL[r["dtype"]]]
    summary["rows with rel err over MATCH_TOL"] = len(over)
    summary["of them without a relu-mask flip in grad_z"] = sum(r["grad_z flips"] == 0 for r in over)
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
        dw._in_processes(_compile_job, list(jobs))
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
    per_case = "Best taps configuration per layer, config = (BLOCK_R, BLOCK_K, num_warps):"
    return sweep_markdown(result, header, intro, per_case, "bench/wgrad.py")


def main(argv: list[str] | None = None) -> None:
    run_sweep("wgrad", sys.argv[1:] if argv is None else argv, measure, to_markdown)


if __name__ == "__main__":
    main()
