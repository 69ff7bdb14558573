"""`python -m bench depthwise tune=tiles`: the tiles of the tile kernels, each kernel alone over candidate launch
configurations, bfloat16, batch 256, at every depthwise layer of the nets in channels_last and at a few in NCHW:
the forward and grad-input tiles (kernels.depthwise.tiles, rules.pointwise_config) and the gather weight pass
(kernels.depthwise.weight, rules.wgrad_config; only where launch_bwd_weight runs it in bfloat16, taps having its
own sweep, tune=wgrad). A candidate is (config, programs): config None is the rule's tile (TILES_CL where the
layer is listed), programs the weight pass's target program count.

Bytes: each kernel reads one of x and grad_y and writes the other (the weight pass: reads both). The per-case
table says whether the rule's tile is within 3% of the fastest candidate; a table entry that is not is one to
re-measure and replace.
"""

import time

import torch

from bench.common import copy_gbs as copy_bandwidth_gbs
from bench.common import group_rows
from bench.depthwise.layers import COMPILE_N, K, layer_table
from bench.depthwise.sweep import rule_check, sweep_markdown
from bench.depthwise.timing import graph_us, n_sets_for
from kernels.depthwise.helpers import LaunchConfig, next_pow2
from kernels.depthwise.launchers import launch_bwd_input, launch_bwd_weight, launch_fwd
from kernels.depthwise.precompile import in_processes
from kernels.depthwise.rules import WGRAD_TARGET_PROGRAMS, pointwise_config, wgrad_config, wgrad_variant

# NCHW shapes tuned besides every layer in channels_last: the nets train in channels_last (train/, bench/step.py).
TUNE_NCHW = ((32, 32, 1), (256, 8, 1), (1024, 4, 1))
BATCH = 256
CASE_KEYS = ("kind", "layout", "C", "H", "stride")
COLUMNS = ["kind", "layout", "C", "H", "stride", "config", "programs", "us", "GB/s", "% copy"]
BEST_COLUMNS = ["kind", "layout", "C", "H", "stride", "rule config", "rule us", "best config", "best programs",
                "best us", "best % copy", "rule / fastest"]  # fmt: skip


def tune_shapes(layers=None) -> list[tuple[bool, int, int, int]]:
    """(channels_last, C, H, stride) the sweep times: every layer of the nets (layer_table) in channels_last,
    then TUNE_NCHW."""
    layers = layer_table() if layers is None else layers
    return [(True, C, H, s) for _, C, H, s in layers] + [(False, *shape) for shape in TUNE_NCHW]


def candidates(kind: str, cl: bool, C: int, H: int, stride: int) -> list[tuple]:
    """(config, programs) pairs; config None = the rule's tile, first."""
    np2 = next_pow2
    OH = (H - 1) // stride + 1
    warps = {2048: 4, 4096: 4, 8192: 8}  # by tile elements
    out = [(None, WGRAD_TARGET_PROGRAMS)]
    if kind in ("fwd", "bwd_input"):
        if cl:
            tiles = [(t // bk, bk, warps[t]) for bk in (32, 64, 128, 256) for t in warps
                     if bk <= max(32, np2(C)) and t // bk <= 256]
        else:
            plane = np2((H if kind == "bwd_input" else OH) ** 2)
            tiles = [(max(1, t // bk), bk, 4) for bk in (4, 16, 64, 256, 1024) if bk <= max(4, plane)
                     for t in (2048, 4096)]
        out += [(t, WGRAD_TARGET_PROGRAMS) for t in tiles]
    else:
        kkp = 16
        if cl:
            tiles = [(t // (kkp * bk), bk, nw) for bk in (32, 64, 128, 256) for t, nw in
                     ((2048, 2), (2048, 4), (4096, 4), (8192, 8)) if bk <= max(32, np2(C)) and t >= kkp * bk]
        else:
            tiles = [(t // (kkp * bk), bk, 4) for bk in (4, 16, 64, 256) for t in (2048, 4096, 8192)
                     if bk <= max(4, np2(OH * OH)) and t >= kkp * bk]
        out += [(t, WGRAD_TARGET_PROGRAMS) for t in tiles]
        out += [(None, p) for p in (256, 512, 2048, 4096)]
    return out


def rule_config(kind: str, cl: bool, C: int, H: int, stride: int) -> tuple:
    """The tile the rule gives a case (what config None launches on the GPU)."""
    if kind == "bwd_weight":
        return tuple(wgrad_config(cl, C, H, H, stride, K))
    return tuple(pointwise_config(kind, cl, C, H, H, stride, K))


def kernel_call(kind, xs, gs, w, stride, config, programs):
    """call(i): one kernel alone on input set i, in the tiled schedules the sweep varies."""
    if kind == "fwd":
        return lambda i: launch_fwd(xs[i], w, None, None, stride, False, config=config, variant="tiles")
    if kind == "bwd_input":
        return lambda i: launch_bwd_input(gs[i], w, xs[i], stride, config=config, variant="tiles")
    return lambda i: launch_bwd_weight(gs[i], xs[i], w, None, None, stride, False, False, config=config,
                                       programs=programs, variant="gather")  # the sweep's tiles are gather's


def tuned_kinds(channels_last: bool, N: int, C: int, H: int, stride: int) -> tuple[str, ...]:
    """The kernels the sweep times at a shape: the weight pass only where launch_bwd_weight runs "gather"."""
    gather = wgrad_variant(channels_last, torch.bfloat16, N, C, H, H, stride) == "gather"
    return ("fwd", "bwd_input") + (("bwd_weight",) if gather else ())


def _inputs(cl: bool, N: int, C: int, H: int, stride: int, device, n: int):
    fmt = torch.channels_last if cl else torch.contiguous_format
    OH = (H - 1) // stride + 1
    xs = [torch.randn(N, C, H, H, device=device, dtype=torch.bfloat16).to(memory_format=fmt) for _ in range(n)]
    gs = [torch.randn(N, C, OH, OH, device=device, dtype=torch.bfloat16).to(memory_format=fmt) for _ in range(n)]
    return xs, gs


def _compile_job(job: tuple) -> None:
    """One kernel with one launch configuration at a small batch on the GPU (in a worker process)."""
    kind, cl, C, H, stride, config, programs = job
    xs, gs = _inputs(cl, COMPILE_N, C, H, stride, "cuda", 1)
    w = torch.randn(C, 1, K, K, device="cuda")
    kernel_call(kind, xs, gs, w, stride, LaunchConfig(*config) if config else None, programs)(0)
    torch.cuda.synchronize()


def measure_shape(cl, C, H, s, copy_gbs, device, time_us=graph_us) -> list[dict]:
    """One row per kernel and candidate at one shape."""
    n = n_sets_for(BATCH * C * H * H * 2 * 2)
    xs, gs = _inputs(cl, BATCH, C, H, s, device, n)
    w = torch.randn(C, 1, K, K, device=device)
    n_bytes = xs[0].nbytes + gs[0].nbytes
    rows = []
    for kind in tuned_kinds(cl, BATCH, C, H, s):
        for cfg, programs in candidates(kind, cl, C, H, s):
            call = kernel_call(kind, xs, gs, w, s, LaunchConfig(*cfg) if cfg else None, programs)
            us = time_us(call, n)
            rows.append({"kind": kind, "layout": "channels_last" if cl else "nchw", "C": C, "H": H, "stride": s,
                         "config": str(tuple(cfg)) if cfg else "rule", "programs": programs, "us": us,
                         "GB/s": n_bytes / us / 1e3, "% copy": 100 * n_bytes / us / 1e3 / copy_gbs})
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """Per kernel and shape: the rule's tile against the fastest candidate."""
    out = []
    for (kind, layout, C, H, s), case in group_rows(rows, CASE_KEYS).items():
        rule = next(r for r in case if r["config"] == "rule" and r["programs"] == WGRAD_TARGET_PROGRAMS)
        best = min(case, key=lambda r: r["us"])
        out.append({"kind": kind, "layout": layout, "C": C, "H": H, "stride": s,
                    "rule config": str(rule_config(kind, layout == "channels_last", C, H, s)),
                    "rule us": rule["us"], "best config": best["config"], "best programs": best["programs"],
                    "best us": best["us"], "best % copy": best["% copy"], "rule / fastest": rule["us"] / best["us"]})
    return out


def measure(device: str = "cuda", layers=None, time_us=graph_us, copy_gbs: float | None = None,
            compile_ahead: bool = True) -> dict:
    """Every shape x kernel x candidate; layers: (nets, C, H, stride), default layer_table(). time_us, copy_gbs
    and compile_ahead=False let the CPU tests run it with a fake timer."""
    shapes = tune_shapes(layers)
    start = time.perf_counter()
    if compile_ahead:
        in_processes(_compile_job, [(kind, cl, C, H, s, cfg, programs) for cl, C, H, s in shapes
                                    for kind in tuned_kinds(cl, BATCH, C, H, s)
                                    for cfg, programs in candidates(kind, cl, C, H, s)])
    compile_s = time.perf_counter() - start
    copy_gbs = copy_gbs or copy_bandwidth_gbs(device)
    rows = []
    for cl, C, H, s in shapes:
        rows += measure_shape(cl, C, H, s, copy_gbs, device, time_us)
    best = best_rows(rows)
    summary = {"copy GB/s": copy_gbs, **rule_check(best, "rule's tile (pointwise_config, wgrad_config)"),
               "precompile s": compile_s, "total s": time.perf_counter() - start}
    return {"title": "Depthwise tile kernels, bf16, batch 256: the rule's tile against candidate tiles",
            "columns": COLUMNS, "rows": rows, "best_columns": BEST_COLUMNS, "best": best, "summary": summary}


def to_markdown(result: dict, header: dict) -> str:
    intro = "Summary (CUDA-graph medians; rule / fastest = the rule's time over the fastest candidate's):"
    per_case = "Per kernel and shape, config = (BLOCK_R, BLOCK_K, num_warps); programs: the weight pass's target:"
    return sweep_markdown(result, header, intro, per_case, "bench/depthwise/tune_tiles.py")
