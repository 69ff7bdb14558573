"""`python -m bench depthwise [quick=true]`: the Triton depthwise kernels against PyTorch (F.conv2d, groups=C) at
every depthwise layer of the CIFAR MobileNetV1 and Xception (bench.depthwise.layers), forward and
forward+backward, both memory formats, bfloat16 and float32, batch 256 and 512.

Each layer is a 3x3 depthwise conv without epilogue (the PyTorch baseline has none), weight (C, 1, 3, 3)
float32, read as is by the kernels (autocast-style master weights) and cast to x's dtype for PyTorch.
Forward+backward = y = f(x, w); torch.autograd.grad(y, (x, w), grad_y). PyTorch runs twice: with its
defaults (cudnn.benchmark off) and with cudnn.benchmark on (cuDNN times every algorithm per shape first).
A second table times the fused scale+shift+relu epilogue against PyTorch's conv and elementwise ops.

Timing (bench.depthwise.timing): every kernel variant is compiled first, in parallel processes; speedups compare
CUDA-graph times; "vs best" divides the fastest PyTorch time (either memory format, either cudnn.benchmark
setting) by the kernel's time in the row's format.

Bandwidth counts the fewest bytes any implementation must move (x: N*C*H*W, y: N*C*OH*OW elements):
    forward:           read x + write y                                      (+ the weight, negligible)
    forward+backward:  forward + read grad_y + read x again + write grad_x   = 3 x + 2 y
"% copy" is that byte count over the time, relative to a device-to-device copy (bytes read + written)
measured in the same run. The summary's "ceiling" is PyTorch's best time over the time that byte count takes at
the copy bandwidth: the speedup no kernel can pass, and from it the % of copy the speedup target needs.
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import copy_gbs as copy_bandwidth_gbs
from bench.common import fine_cell, geomean, table
from bench.depthwise.layers import BATCHES, DTYPES, LAYOUTS, K, layer_table
from bench.depthwise.timing import eager_us, graph_us, n_sets_for
from kernels.depthwise import Layer, depthwise_conv2d, precompile, triton_preferred

QUICK = {"shapes": [(32, 32, 1), (128, 16, 1), (256, 8, 2), (512, 4, 1), (1024, 4, 1), (728, 8, 1)],
         "batches": (256,), "dtypes": ("bf16",)}
LARGEST = 3  # the summary's "largest layers": this many shapes with the most bytes
CASE_KEYS = ("net", "N", "C", "H", "stride", "dtype")
TARGETS = {"geomean fwd+bwd speedup bf16": 3.0, "min speedup": 1.0, "largest layers % copy": 50.0}


def torch_depthwise(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    return F.conv2d(x, w.to(x.dtype), stride=stride, padding=K // 2, groups=x.shape[1])


def triton_depthwise(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    return depthwise_conv2d(x, w, stride, impl="triton")


def min_bytes(N: int, C: int, H: int, stride: int, elt: int) -> tuple[int, int]:
    """(forward, forward+backward) bytes any implementation must move; see the module docstring."""
    OH = (H - 1) // stride + 1
    x, y, w = N * C * H * H * elt, N * C * OH * OH * elt, C * K * K * 4
    return x + y + w, 3 * x + 2 * y + 2 * w


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
    return depthwise_conv2d(x, w, stride, sc, sh, True, impl="triton")


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
    compile_s = _timed_s(precompile, [
        Layer(C, H, H, s, K, str(DTYPES[d]).removeprefix("torch."), lay == "channels_last")
        for _, C, H, s in layers for d in dnames for lay in LAYOUTS] + [
        Layer(C, H, H, s, K, "bfloat16", True, True, True, True) for _, C, H, s in epilogue_layers])
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
            "rows": rows, "summary": summary, "epilogue_rows": epilogue_rows, "notes": epilogue_notes(epilogue_rows)}


def epilogue_notes(epilogue_rows: list[dict]) -> list[str]:
    """The fused-epilogue table, as markdown lines under the main one."""
    if not epilogue_rows:
        return []
    return ["Fused epilogue: y = relu(conv(x) * scale + shift), bf16 channels_last, forward+backward (graph), vs "
            "PyTorch conv + elementwise ops:", ""] + table(list(epilogue_rows[0]), epilogue_rows, fine_cell)


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
    preferred = triton_preferred(r["layout"] == "channels_last", DTYPES[r["dtype"]], r["H"], r["H"],
                                    r["stride"], fused=False)
    return r["triton fwd+bwd us"] if preferred else _torch_same_layout_us(r)


COLUMNS = ["net", "N", "C", "H", "stride", "dtype", "layout", "torch fwd us", "triton fwd us",
           "fwd speedup vs best", "torch fwd+bwd us", "torch[bench] fwd+bwd us",
           "triton fwd+bwd us", "fwd+bwd speedup vs best", "fwd+bwd speedup vs default",
           "torch fwd+bwd eager us", "triton fwd+bwd eager us", "eager fwd+bwd speedup vs best",
           "triton fwd GB/s", "triton fwd+bwd GB/s", "triton fwd % copy", "triton fwd+bwd % copy",
           "out rel err"]
