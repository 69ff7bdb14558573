"""Triton depthwise conv vs PyTorch (F.conv2d, groups=C) at every depthwise layer of the CIFAR MobileNetV1 and
Xception, forward and forward+backward, both memory formats, bfloat16 and float32, batch 256 and 512.

    python3 bench/depthwise.py [PREFIX] [--quick]   -> PREFIX.json + PREFIX.md
                                                       (default bench/results/depthwise-<gpu slug>)
    python3 bench/depthwise.py --tune               -> launch configurations per kernel and shape

Each layer is a 3x3 depthwise conv without epilogue (the PyTorch baseline has none), weight (C, 1, 3, 3)
float32, read as is by the kernels (autocast-style master weights) and cast to x's dtype for PyTorch.
Forward+backward = y = f(x, w); torch.autograd.grad(y, (x, w), grad_y). PyTorch runs twice: with its
defaults (cudnn.benchmark off) and with cudnn.benchmark on (cuDNN times every algorithm per shape first).

Timing. Every case is warmed up first (Triton compiles: all cases at once, in parallel processes, before any
timing; cuDNN's algorithm search). Small layers fit in the 50 MB L2, so each timed run cycles through
several independent input sets (at least ROTATE_BYTES of inputs together) and the time is per call:
    "graph": the calls captured in one CUDA graph and replayed: GPU time, no Python or launch overhead;
             median of REPLAYS replays, timed with CUDA events;
    "eager": the same calls from Python: what an uncompiled training step pays, launches included.
(triton.testing.do_bench was not used: its L2 flush leaves ~50 MB of dirty lines that the timed kernel must
write back, which counts against small layers.) Speedups compare graph times; "vs best" divides the fastest
PyTorch time (either memory format, either cudnn.benchmark setting) by the kernel's time in the row's format.

Bandwidth counts the fewest bytes any implementation must move (x: N*C*H*W, y: N*C*OH*OW elements):
    forward:           read x + write y                                      (+ the weight, negligible)
    forward+backward:  forward + read grad_y + read x again + write grad_x   = 3 x + 2 y
"% copy" is that byte count over the time, relative to a device-to-device copy (bytes read + written)
measured in the same run. The summary's "ceiling" is PyTorch's best time over the time that byte count takes at
the copy bandwidth: the speedup no kernel can pass, and from it the % of copy the speedup target needs.
"""

import functools
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import copy_gbs as copy_bandwidth_gbs  # noqa: E402
from bench.common import fine_cell, geomean, run_script, table  # noqa: E402
from kernels import depthwise as dw  # noqa: E402
from nets.blocks import DepthwiseConv2d  # noqa: E402
from nets.registry import build  # noqa: E402

# The nets whose depthwise layers are benchmarked: row label -> registered name.
NETS = {"mobilenet_v1": "mobilenetv1", "xception": "xception"}
K = 3
BATCHES = (256, 512)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
QUICK = {"shapes": [(32, 32, 1), (128, 16, 1), (256, 8, 2), (512, 4, 1), (1024, 4, 1), (728, 8, 1)],
         "batches": (256,), "dtypes": ("bf16",)}
ROTATE_BYTES = 200 << 20  # 4x the H100's L2
MAX_SETS = 32
REPLAYS = 10
LARGEST = 3  # the summary's "largest layers": this many shapes with the most bytes
CASE_KEYS = ("net", "N", "C", "H", "stride", "dtype")
TARGETS = {"geomean fwd+bwd speedup bf16": 3.0, "min speedup": 1.0, "largest layers % copy": 50.0}


@functools.cache
def net_layers(name: str) -> tuple[tuple[int, int, int], ...]:
    """(C, H, stride) of every depthwise convolution of the registered net `name` on a 32x32 input, in order
    (C = channels, H = input height and width): read from a forward pass of its architecture on the meta
    device, so the benchmark follows the nets as they are (a hand-written list went stale when the CIFAR
    strides of MobileNetV1 and Xception changed)."""
    module = build(name, kernels="reference").module
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[1], args[0].shape[2], m.stride[0])))
             for m in module.modules() if isinstance(m, DepthwiseConv2d)]
    try:
        with torch.no_grad():
            module(torch.empty(1, 3, 32, 32, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return tuple(seen)


def layer_table() -> list[tuple[str, int, int, int]]:
    """(nets, C, H, stride) of every distinct depthwise layer of NETS, in order of first appearance; identical
    shapes merged ("mobilenet_v1+xception")."""
    nets: dict[tuple[int, int, int], list[str]] = {}
    for label, name in NETS.items():
        for shape in dict.fromkeys(net_layers(name)):
            nets.setdefault(shape, []).append(label)
    return [("+".join(v), *shape) for shape, v in nets.items()]


def torch_depthwise(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    return F.conv2d(x, w.to(x.dtype), stride=stride, padding=K // 2, groups=x.shape[1])


def triton_depthwise(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    return dw.depthwise_conv2d(x, w, stride, impl="triton")


# ---------------------------------------------------------------------------------------------------------
# Timing

def _events_median_us(run, calls: int) -> float:
    times = []
    for _ in range(REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(times)[len(times) // 2]


def graph_us(call, n_sets: int) -> float:
    """Median µs per call of call(i) for i in range(n_sets), captured in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as autograd inside a capture needs
        for _ in range(2):
            for i in range(n_sets):
                call(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n_sets):
            call(i)
    us = _events_median_us(graph.replay, n_sets)
    del graph
    return us


def eager_us(call, n_sets: int) -> float:
    """Median µs per call of call(i) for i in range(n_sets), launched from Python."""
    for i in range(n_sets):
        call(i)

    def run():
        for i in range(n_sets):
            call(i)

    return _events_median_us(run, n_sets)


def n_sets_for(bytes_per_call: int) -> int:
    return max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / bytes_per_call)))


def min_bytes(N: int, C: int, H: int, stride: int, elt: int) -> tuple[int, int]:
    """(forward, forward+backward) bytes any implementation must move; see the module docstring."""
    OH = (H - 1) // stride + 1
    x, y, w = N * C * H * H * elt, N * C * OH * OH * elt, C * K * K * 4
    return x + y + w, 3 * x + 2 * y + 2 * w


# ---------------------------------------------------------------------------------------------------------
# Compile ahead, in parallel (kernels.depthwise.precompile): Triton compiles at first launch, about a second
# per kernel variant, and every (C, H, stride, dtype, layout) is one.

def _compile_job(job: tuple) -> None:
    """For tune(): one kernel with one launch configuration, at batch 16 (in a worker process)."""
    kind, channels_last, C, H, stride, config, programs = job
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    N, OH = 16, (H - 1) // stride + 1
    x = torch.randn(N, C, H, H, device="cuda", dtype=torch.bfloat16).to(memory_format=fmt)
    g = torch.randn(N, C, OH, OH, device="cuda", dtype=torch.bfloat16).to(memory_format=fmt)
    w = torch.randn(C, 1, K, K, device="cuda")
    _kernel_call(kind, [x], [g], w, stride, dw.LaunchConfig(*config) if config else None, programs)(0)
    torch.cuda.synchronize()


def _timed_s(fn, *args) -> float:
    t0 = time.time()
    fn(*args)
    return time.time() - t0


# ---------------------------------------------------------------------------------------------------------
# The comparison

def time_case(fn, xs, w, grads, stride, only_fwd_bwd_graph: bool = False) -> dict:
    """Median µs per call: forward (graph), forward+backward (graph and eager)."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    wg = w.detach().requires_grad_(True)

    def fwd(i):
        fn(xs[i], wg, stride)

    def fwd_bwd(i):
        torch.autograd.grad(fn(xs[i], wg, stride), (xs[i], wg), grads[i])

    n = len(xs)
    if only_fwd_bwd_graph:
        return {"fwd+bwd us": graph_us(fwd_bwd, n)}
    return {"fwd us": graph_us(fwd, n), "fwd+bwd us": graph_us(fwd_bwd, n),
            "fwd+bwd eager us": eager_us(fwd_bwd, n)}


def torch_depthwise_bn_relu(x, w, stride, sc, sh):
    """The unfused PyTorch equivalent of the kernels' epilogue: conv, per-channel affine, relu."""
    C = x.shape[1]
    y = torch_depthwise(x, w, stride)
    return torch.relu(y * sc.to(y.dtype).view(1, C, 1, 1) + sh.to(y.dtype).view(1, C, 1, 1))


def triton_depthwise_bn_relu(x, w, stride, sc, sh):
    return dw.depthwise_conv2d(x, w, stride, sc, sh, True, impl="triton")


def _epilogue_fwd_bwd_us(fn, xs, gs, w, sc, sh, stride) -> float:
    def call(i):
        torch.autograd.grad(fn(xs[i], w, stride, sc, sh), (xs[i], w, sc, sh), gs[i])

    return graph_us(call, len(xs))


def measure_epilogue(layers, N: int, device: str) -> list[dict]:
    """Forward+backward (graph) with scale, shift and relu: fused kernels vs conv + elementwise PyTorch."""
    rows = []
    for _, C, H, stride in layers:
        OH = (H - 1) // stride + 1
        n = n_sets_for(min_bytes(N, C, H, stride, 2)[1] // 2)
        xs = [torch.randn(N, C, H, H, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
              .requires_grad_() for _ in range(n)]
        gs = [torch.randn(N, C, OH, OH, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
              for _ in range(n)]
        params = [torch.randn(C, 1, K, K, device=device) / K, 1 + 0.1 * torch.randn(C, device=device),
                  0.1 * torch.randn(C, device=device)]
        w, sc, sh = (p.requires_grad_() for p in params)
        row = {"C": C, "H": H, "stride": stride, "N": N}
        for name, fn in (("torch", torch_depthwise_bn_relu), ("triton", triton_depthwise_bn_relu)):
            row[f"{name} fwd+bwd us"] = _epilogue_fwd_bwd_us(fn, xs, gs, w, sc, sh, stride)
        row["speedup"] = row["torch fwd+bwd us"] / row["triton fwd+bwd us"]
        rows.append(row)
    return rows


def measure(device: str = "cuda", quick: bool = False, checkpoint: Path | None = None) -> dict:
    """Time both implementations over every layer, batch, dtype and layout: µs, GB/s, speedups.

    checkpoint: a JSON file rewritten with the rows so far after each layer (a cut-off run keeps them)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise RuntimeError("bench.depthwise.measure needs a CUDA device")
    layers = [row for row in layer_table() if not quick or tuple(row[1:]) in QUICK["shapes"]]
    batches = QUICK["batches"] if quick else BATCHES
    dnames = QUICK["dtypes"] if quick else tuple(DTYPES)
    epilogue_layers = [row for row in layers if (row[2] - 1) // row[3] + 1 >= 8]  # where cuDNN wins unfused
    compile_s = _timed_s(dw.precompile, [
        dw.Layer(C, H, H, s, K, str(DTYPES[d]).removeprefix("torch."), lay == "channels_last")
        for _, C, H, s in layers for d in dnames for lay in LAYOUTS] + [
        dw.Layer(C, H, H, s, K, "bfloat16", True, True, True, True) for _, C, H, s in epilogue_layers])
    copy_gbs = copy_bandwidth_gbs(device)
    rows = []
    for net, C, H, stride in layers:
        for N in batches:
            for dname in dnames:
                rows += _measure_case(net, N, C, H, stride, dname, copy_gbs, device)
        print(f"done {net} C={C} H={H} s={stride}", file=sys.stderr, flush=True)
        if checkpoint is not None:
            checkpoint.write_text(json.dumps({"copy GB/s": copy_gbs, "rows": rows}, indent=1))
    torch.backends.cudnn.benchmark = False
    epilogue_rows = measure_epilogue(epilogue_layers, batches[0], device)
    summary = summarize(rows, copy_gbs)
    summary["geomean fwd+bwd speedup with scale+shift+relu (bf16 channels_last, layers with >= 8x8 outputs)"] = (
        geomean([r["speedup"] for r in epilogue_rows]))
    summary["precompile s"] = compile_s
    return {"title": "Depthwise 3x3 conv: Triton vs PyTorch (F.conv2d groups=C)", "columns": COLUMNS,
            "rows": rows, "summary": summary, "epilogue_rows": epilogue_rows}


def _measure_case(net, N, C, H, stride, dname, copy_gbs, device) -> list[dict]:
    dtype = DTYPES[dname]
    OH = (H - 1) // stride + 1
    fwd_bytes, fwdbwd_bytes = min_bytes(N, C, H, stride, torch.empty((), dtype=dtype).element_size())
    n = n_sets_for(fwdbwd_bytes // 2)
    w = torch.randn(C, 1, K, K, device=device) / K
    xs = [torch.randn(N, C, H, H, device=device, dtype=dtype) for _ in range(n)]
    gs = [torch.randn(N, C, OH, OH, device=device, dtype=dtype) for _ in range(n)]
    timed = {}
    for lname, fmt in LAYOUTS.items():
        x_l = [x.to(memory_format=fmt) for x in xs]
        g_l = [g.to(memory_format=fmt) for g in gs]
        ref = torch_depthwise(x_l[0].float(), w, stride)
        err = ((triton_depthwise(x_l[0], w, stride).float() - ref).norm() / ref.norm()).item()
        torch.backends.cudnn.benchmark = False
        pt = time_case(torch_depthwise, x_l, w, g_l, stride)
        torch.backends.cudnn.benchmark = True
        ptb = time_case(torch_depthwise, x_l, w, g_l, stride, only_fwd_bwd_graph=True)
        torch.backends.cudnn.benchmark = False
        tt = time_case(triton_depthwise, x_l, w, g_l, stride)
        timed[lname] = {"torch": pt, "torch_bench": ptb, "triton": tt, "err": err}
        del x_l, g_l
    best = {"fwd": min(timed[lay]["torch"]["fwd us"] for lay in LAYOUTS),
            "fwd+bwd": min(timed[lay][impl]["fwd+bwd us"] for lay in LAYOUTS
                           for impl in ("torch", "torch_bench"))}
    best_eager = min(timed[lay]["torch"]["fwd+bwd eager us"] for lay in LAYOUTS)
    rows = []
    for lname in LAYOUTS:
        tt, pt, ptb = timed[lname]["triton"], timed[lname]["torch"], timed[lname]["torch_bench"]
        rows.append({
            "net": net, "N": N, "C": C, "H": H, "stride": stride, "dtype": dname, "layout": lname,
            "torch fwd us": pt["fwd us"], "triton fwd us": tt["fwd us"],
            "fwd speedup vs best": best["fwd"] / tt["fwd us"],
            "torch fwd+bwd us": pt["fwd+bwd us"], "torch[bench] fwd+bwd us": ptb["fwd+bwd us"],
            "triton fwd+bwd us": tt["fwd+bwd us"],
            "fwd+bwd speedup vs best": best["fwd+bwd"] / tt["fwd+bwd us"],
            "fwd+bwd speedup vs default": min(timed[lay]["torch"]["fwd+bwd us"] for lay in LAYOUTS)
            / tt["fwd+bwd us"],
            "torch fwd+bwd eager us": pt["fwd+bwd eager us"],
            "triton fwd+bwd eager us": tt["fwd+bwd eager us"],
            "eager fwd+bwd speedup vs best": best_eager / tt["fwd+bwd eager us"],
            "triton fwd GB/s": fwd_bytes / tt["fwd us"] / 1e3,
            "triton fwd+bwd GB/s": fwdbwd_bytes / tt["fwd+bwd us"] / 1e3,
            "triton fwd % copy": 100 * fwd_bytes / tt["fwd us"] / 1e3 / copy_gbs,
            "triton fwd+bwd % copy": 100 * fwdbwd_bytes / tt["fwd+bwd us"] / 1e3 / copy_gbs,
            "bytes fwd+bwd": fwdbwd_bytes, "input sets": n, "out rel err": timed[lname]["err"],
        })  # fmt: skip
    return rows


def summarize(rows: list[dict], copy_gbs: float) -> dict:
    bf16_cl = [r for r in rows if r["dtype"] == "bf16" and r["layout"] == "channels_last"]
    largest = sorted({r["bytes fwd+bwd"] for r in bf16_cl}, reverse=True)[:LARGEST]
    big = [r for r in bf16_cl if r["bytes fwd+bwd"] in largest]
    slowest = min(rows, key=lambda r: r["fwd+bwd speedup vs best"])
    torch_pct = [100 * _copy_us(r, copy_gbs) / _best_us(r) for r in bf16_cl]
    ceiling = 100 / geomean(torch_pct)  # the geometric mean of PyTorch's best time over the time at 100% copy
    return {
        "copy GB/s": copy_gbs,
        "geomean fwd+bwd speedup bf16 channels_last vs best": geomean(
            [r["fwd+bwd speedup vs best"] for r in bf16_cl]),
        "geomean fwd+bwd speedup bf16 channels_last vs default": geomean(
            [r["fwd+bwd speedup vs default"] for r in bf16_cl]),
        "geomean fwd speedup bf16 channels_last vs best": geomean(
            [r["fwd speedup vs best"] for r in bf16_cl]),
        "geomean fwd+bwd speedup all rows vs best": geomean([r["fwd+bwd speedup vs best"] for r in rows]),
        "geomean eager fwd+bwd speedup bf16 channels_last vs best": geomean(
            [r["eager fwd+bwd speedup vs best"] for r in bf16_cl]),
        "min fwd+bwd speedup vs best": slowest["fwd+bwd speedup vs best"],
        "min fwd+bwd speedup at": {k: slowest[k] for k in CASE_KEYS + ("layout",)},
        "min fwd speedup vs best": min(r["fwd speedup vs best"] for r in rows),
        "rows with fwd+bwd slower than best PyTorch": sum(r["fwd+bwd speedup vs best"] < 1 for r in rows),
        "largest layers (bf16 channels_last)": [f"N={r['N']} C={r['C']} H={r['H']}" for r in big],
        "largest layers fwd+bwd % copy": [round(r["triton fwd+bwd % copy"], 1) for r in big],
        "largest layers fwd % copy": [round(r["triton fwd % copy"], 1) for r in big],
        "geomean fwd+bwd speedup vs PyTorch in the same layout, nchw": geomean(
            [_torch_same_layout_us(r) / r["triton fwd+bwd us"] for r in rows if r["layout"] == "nchw"]),
        "geomean fwd+bwd speedup vs PyTorch in the same layout, channels_last": geomean(
            [_torch_same_layout_us(r) / r["triton fwd+bwd us"] for r in rows if r["layout"] == "channels_last"]),
        # What any implementation could reach: the fewest bytes moved at the copy bandwidth, against PyTorch.
        "ceiling: geomean fwd+bwd speedup vs best at 100% copy, bf16 channels_last": ceiling,
        "ceiling: geomean fwd+bwd % copy the speedup target needs, bf16 channels_last": (
            100 * TARGETS["geomean fwd+bwd speedup bf16"] / ceiling),
        "best PyTorch fwd+bwd % copy, bf16 channels_last: geomean, min, max": [
            geomean(torch_pct), min(torch_pct), max(torch_pct)],
        "impl=auto: geomean fwd+bwd speedup vs best, bf16 channels_last": geomean(
            [_best_us(r) / _auto_us(r) for r in bf16_cl]),
        "impl=auto: min fwd+bwd speedup vs PyTorch in the same layout": min(
            _torch_same_layout_us(r) / _auto_us(r) for r in rows),
        "max out rel err": max(r["out rel err"] for r in rows),
        "targets (H100)": TARGETS,
    }  # fmt: skip


def _torch_same_layout_us(r: dict) -> float:
    return min(r["torch fwd+bwd us"], r["torch[bench] fwd+bwd us"])


def _best_us(r: dict) -> float:
    return r["fwd+bwd speedup vs best"] * r["triton fwd+bwd us"]


def _copy_us(r: dict, copy_gbs: float) -> float:
    """µs to move the row's fewest forward+backward bytes (min_bytes) at the copy bandwidth: no kernel is faster."""
    return r["bytes fwd+bwd"] / copy_gbs / 1e3


def _auto_us(r: dict) -> float:
    """The forward+backward time of impl="auto" (no epilogue), per kernels.depthwise.triton_preferred."""
    preferred = dw.triton_preferred(r["layout"] == "channels_last", DTYPES[r["dtype"]], r["H"], r["H"],
                                    r["stride"], fused=False)
    return r["triton fwd+bwd us"] if preferred else _torch_same_layout_us(r)


COLUMNS = ["net", "N", "C", "H", "stride", "dtype", "layout", "torch fwd us", "triton fwd us",
           "fwd speedup vs best", "torch fwd+bwd us", "torch[bench] fwd+bwd us",
           "triton fwd+bwd us", "fwd+bwd speedup vs best", "fwd+bwd speedup vs default",
           "torch fwd+bwd eager us", "triton fwd+bwd eager us", "eager fwd+bwd speedup vs best",
           "triton fwd GB/s", "triton fwd+bwd GB/s", "triton fwd % copy", "triton fwd+bwd % copy",
           "out rel err"]


# ---------------------------------------------------------------------------------------------------------
# Tuning: time each kernel alone over candidate launch configurations (bf16, batch 256).

# NCHW shapes tuned besides every layer in channels_last: the nets train in channels_last (train/, bench/step.py).
TUNE_NCHW = ((32, 32, 1), (256, 8, 1), (1024, 4, 1))


def tune_shapes() -> list[tuple[bool, int, int, int]]:
    """(channels_last, C, H, stride) the tuner sweeps: every layer of the nets (layer_table) in channels_last,
    then TUNE_NCHW (a hand-written list had gone stale with the nets, as the benchmark's own had)."""
    return [(True, C, H, s) for _, C, H, s in layer_table()] + [(False, *shape) for shape in TUNE_NCHW]


def _candidates(kind: str, cl: bool, C: int, H: int, stride: int) -> list[tuple]:
    """(config, programs) pairs; config None = the current heuristic."""
    np2 = dw._next_pow2
    OH = (H - 1) // stride + 1
    warps = {2048: 4, 4096: 4, 8192: 8}  # by tile elements
    out = [(None, dw._WGRAD_TARGET_PROGRAMS)]
    if kind in ("fwd", "bwd_input"):
        if cl:
            tiles = [(t // bk, bk, warps[t]) for bk in (32, 64, 128, 256) for t in warps
                     if bk <= max(32, np2(C)) and t // bk <= 256]
        else:
            plane = np2((H if kind == "bwd_input" else OH) ** 2)
            tiles = [(max(1, t // bk), bk, 4) for bk in (4, 16, 64, 256, 1024) if bk <= max(4, plane)
                     for t in (2048, 4096)]
        out += [(t, dw._WGRAD_TARGET_PROGRAMS) for t in tiles]
    else:
        kkp = 16
        if cl:
            tiles = [(t // (kkp * bk), bk, nw) for bk in (32, 64, 128, 256) for t, nw in
                     ((2048, 2), (2048, 4), (4096, 4), (8192, 8)) if bk <= max(32, np2(C)) and t >= kkp * bk]
        else:
            tiles = [(t // (kkp * bk), bk, 4) for bk in (4, 16, 64, 256) for t in (2048, 4096, 8192)
                     if bk <= max(4, np2(OH * OH)) and t >= kkp * bk]
        out += [(t, dw._WGRAD_TARGET_PROGRAMS) for t in tiles]
        out += [(None, p) for p in (256, 512, 2048, 4096)]
    return out


def _kernel_call(kind, xs, gs, w, stride, config, programs):
    """call(i): one kernel alone on input set i, in the tiled schedules the tuner sweeps."""
    if kind == "fwd":
        return lambda i: dw.launch_fwd(xs[i], w, None, None, stride, False, config=config, variant="tiles")
    if kind == "bwd_input":
        return lambda i: dw.launch_bwd_input(gs[i], w, xs[i], stride, config=config, variant="tiles")
    return lambda i: dw.launch_bwd_weight(gs[i], xs[i], w, None, None, stride, False, False, config=config,
                                          programs=programs, variant="gather")  # the tuner's tiles are gather's


def tuned_kinds(channels_last: bool, N: int, C: int, H: int, stride: int) -> tuple[str, ...]:
    """The kernels tune() sweeps at a shape: the weight pass only where launch_bwd_weight runs "gather" (whose
    tiles the sweep varies) in bfloat16; "taps" has its own sweep, bench/wgrad.py."""
    gather = dw.wgrad_variant(channels_last, torch.bfloat16, N, C, H, H, stride) == "gather"
    return ("fwd", "bwd_input") + (("bwd_weight",) if gather else ())


def tune(device: str = "cuda") -> list[dict]:
    """Time fwd / bwd_input / bwd_weight alone per candidate config; print the best per shape."""
    jobs, plan, N = [], [], 256
    shapes = tune_shapes()
    for cl, C, H, s in shapes:
        for kind in tuned_kinds(cl, N, C, H, s):
            for cfg, programs in _candidates(kind, cl, C, H, s):
                jobs.append((kind, cl, C, H, s, cfg, programs))
                plan.append((kind, cl, C, H, s, cfg, programs))
    print(f"tune: {len(plan)} candidates, precompile {_timed_s(dw._in_processes, _compile_job, jobs):.0f} s",
          flush=True)
    results = []
    for cl, C, H, s in shapes:
        fmt = torch.channels_last if cl else torch.contiguous_format
        OH = (H - 1) // s + 1
        n = n_sets_for(N * C * H * H * 2 * 2)
        xs = [torch.randn(N, C, H, H, device=device, dtype=torch.bfloat16).to(memory_format=fmt)
              for _ in range(n)]
        gs = [torch.randn(N, C, OH, OH, device=device, dtype=torch.bfloat16).to(memory_format=fmt)
              for _ in range(n)]
        w = torch.randn(C, 1, K, K, device=device)
        for kind, cl_, C_, H_, s_, cfg, programs in plan:
            if (cl_, C_, H_, s_) != (cl, C, H, s):
                continue
            call = _kernel_call(kind, xs, gs, w, s, dw.LaunchConfig(*cfg) if cfg else None, programs)
            us = graph_us(call, n)
            results.append({"kind": kind, "channels_last": cl, "C": C, "H": H, "stride": s, "config": cfg,
                            "programs": programs, "us": us})
        for kind in tuned_kinds(cl, N, C, H, s):  # print as we go: a cut-off run keeps its lines
            rs = [r for r in results if (r["kind"], r["channels_last"], r["C"], r["H"], r["stride"])
                  == (kind, cl, C, H, s)]
            default = next(r for r in rs if r["config"] is None and r["programs"] == dw._WGRAD_TARGET_PROGRAMS)
            best = sorted(rs, key=lambda r: r["us"])[:3]
            gbs = (xs[0].nbytes + gs[0].nbytes) / best[0]["us"] / 1e3  # each kernel reads one, writes the other
            print(f"{kind:10s} cl={int(cl)} C={C:4d} H={H:2d} s={s}: default {default['us']:7.1f} us; best "
                  + ", ".join(f"{r['config']}/{r['programs']} {r['us']:.1f}" for r in best)
                  + f" ({gbs:.0f} GB/s)", flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------
# Output

def to_markdown(result: dict, header: dict) -> str:
    cell = fine_cell
    lines = [f"# {result['title']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "Summary (speedups from CUDA-graph times; 'best' = fastest PyTorch over both memory formats "
              "and both cudnn.benchmark settings; 'default' = cudnn.benchmark off):", ""]
    lines += [f"- {k}: {cell(v)}" for k, v in result["summary"].items()]
    lines += [""] + table(result["columns"], result["rows"], cell)
    ep = result.get("epilogue_rows") or []
    if ep:
        lines += ["", "Fused epilogue: y = relu(conv(x) * scale + shift), bf16 channels_last, forward+backward "
                  "(graph), vs PyTorch conv + elementwise ops:", ""]
        lines += table(list(ep[0]), ep, cell)
    lines += ["", "Times in µs per call (median); see the docstring of bench/depthwise.py for what is timed "
              "and the bytes counted.", ""]
    return "\n".join(lines)


def measure_to(quick: bool, prefix: Path) -> dict:
    """measure on CUDA, keeping partial results in <prefix>.partial.json until it is done."""
    partial = Path(f"{prefix}.partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    result = measure("cuda", quick=quick, checkpoint=partial)
    partial.unlink(missing_ok=True)
    return result


def main(argv: list[str] | None = None) -> None:
    run_script("depthwise", sys.argv[1:] if argv is None else argv, measure_to, tune, to_markdown)


if __name__ == "__main__":
    main()
