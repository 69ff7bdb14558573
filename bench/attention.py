"""Fused Triton attention vs every SDPA backend at ViT-on-CIFAR shapes, forward and forward+backward.

    python -m bench attention [quick=true]   -> bench/results/attention-<gpu>.json and .md
    python -m bench attention tune=true      -> a table of launch configurations per shape (the sweep behind
                                                kernels.attention.configs)

Every implementation starts from the same qkv tensor, (B, S, 3, H, D) bf16 as a Linear(dim, 3*H*D) output
reshaped, and ends with (B, S, H*D) ready for the output projection. SDPA needs (B, H, S, D) operands, so its
timed region includes qkv.permute(2, 0, 3, 1, 4).unbind(0) before and transpose(1, 2).reshape(B, S, H*D)
after (and the backward of both). Forward times run with qkv.requires_grad (a training step's forward);
forward+backward = out = f(qkv); torch.autograd.grad(out, qkv, grad_out). Times are medians of
triton.testing.do_bench (CUDA events, L2 flushed before every run, warmed up so compilation is excluded).

Bandwidth counts the fewest bytes any implementation must move, the same for all (N = B*S*H*D elements):
    forward:           read qkv (3N) + write out (N)                               = 4N elements
    forward+backward:  forward + read qkv again (3N) + read grad_out (N)
                       + write grad_qkv (3N)                                       = 11N elements
plus the float32 logsumexp (B*H*S) written by the forward and read by the backward. The kernel moves about
this for S <= 128 (one program per head; its backward takes delta = rowsum(P * dP) instead of reading O);
for S > 128 its backward also reads O (for delta) and re-reads Q, K, V, dO per tile, mostly from L2.
"% copy" is that byte count over the GPU-only (CUDA graph) forward+backward time, relative to a
device-to-device copy measured in the same run.

Two timings of forward+backward: eager (do_bench: what a Python training loop without torch.compile sees,
host-side launch cost included where the GPU cannot hide it) and "graph" (the same calls captured in a CUDA
graph and replayed: GPU time only, no L2 flush between replays; what a compiled/graphed step approaches).
"""

import functools
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from bench.common import copy_gbs as copy_bandwidth_gbs  # noqa: E402
from bench.common import fine_cell, geomean, run_script, table  # noqa: E402
from kernels.attention import attention, reference_attention, sdpa_attention  # noqa: E402
from kernels.attention.configs import Config, bwd_config, fwd_config  # noqa: E402
from kernels.attention.launch import attention_backward, attention_forward  # noqa: E402

DTYPE = torch.bfloat16
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
# (batch, tokens, heads, head dim). 65 = 8x8 patches of 4x4 pixels + a class token (64 without it);
# 257 = 16x16 patches of 2x2 + class token. Heads x D: 3x64 (ViT-Tiny), 6x32 / 6x64, 8x64, 12x32 / 12x64.
SHAPES = [
    *[(b, 65, h, 64) for b in (256, 512) for h in (6, 8, 12)],
    (128, 65, 3, 64), (1024, 65, 8, 64), (1024, 65, 12, 64),
    *[(b, 65, h, 32) for b in (256, 512) for h in (6, 12)],
    (1024, 65, 6, 32),
    *[(b, 64, h, 64) for b in (256, 512) for h in (8, 12)],
    (512, 64, 6, 32),
    *[(b, 257, h, 64) for b in (128, 256) for h in (3, 6, 8)],
    (128, 257, 6, 32), (256, 257, 12, 32),
]
QUICK_SHAPES = [(256, 65, 8, 64), (512, 65, 12, 32), (128, 257, 6, 64)]
# The summary: the CIFAR ViTs' attention, S = 65, D = 64, batch 256-512, 6-12 heads.
SUMMARY = {"S": 65, "D": 64, "B": (256, 512), "H": (6, 8, 12)}
TARGET_SPEEDUP = 1.5  # forward+backward over the best SDPA backend, on the H100


def triton_attention(qkv: torch.Tensor) -> torch.Tensor:
    return attention(qkv, impl="triton")


def _median_us(fn, quick: bool) -> float:
    warmup, rep = (10, 30) if quick else (20, 60)  # milliseconds
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median") * 1e3


def time_impl(fn, qkv: torch.Tensor, grad_out: torch.Tensor, quick: bool) -> tuple:
    """(fwd, fwd+bwd, fwd+bwd GPU-only) median µs of fn(qkv) [+ the gradient of qkv]. The first two are
    eager (host launch cost included where the GPU cannot hide it); the third replays a CUDA graph (None if
    the capture fails). Raises if fn cannot run this shape."""
    x = qkv.detach().requires_grad_(True)

    def fwd_bwd():
        torch.autograd.grad(fn(x), x, grad_out)

    fwd_bwd()  # fail early (an SDPA backend that rejects the shape raises here)
    torch.cuda.synchronize()
    fwd_us, fwd_bwd_us = _median_us(lambda: fn(x), quick), _median_us(fwd_bwd, quick)
    try:
        graph_us = _gpu_us(fwd_bwd)
    except Exception as exc:  # a backend that cannot be captured in a graph
        print(f"  CUDA graph capture failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
        graph_us = None
    return fwd_us, fwd_bwd_us, graph_us


def min_bytes(B: int, S: int, H: int, D: int, elt: int = 2) -> tuple[int, int]:
    """(forward, forward+backward) bytes any implementation must move; see the module docstring."""
    N, lse = B * S * H * D, 4 * B * H * S
    return 4 * N * elt + lse, 11 * N * elt + 2 * lse


def measure(device: str = "cuda", quick: bool = False) -> dict:
    """Time the kernel and each SDPA backend over SHAPES (QUICK_SHAPES if quick): µs, GB/s, speedups."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise RuntimeError("bench.attention.measure needs a CUDA device")
    copy_gbs = copy_bandwidth_gbs(device)
    rows = []
    for B, S, H, D in QUICK_SHAPES if quick else SHAPES:
        qkv = torch.randn(B, S, 3, H, D, device=device, dtype=DTYPE)
        grad_out = torch.randn(B, S, H * D, device=device, dtype=DTYPE)
        row = {"B": B, "S": S, "H": H, "D": D}
        ref = reference_attention(qkv).float()
        row["out rel err"] = ((attention(qkv, impl="triton").float() - ref).norm() / ref.norm()).item()
        del ref
        row["triton fwd us"], row["triton fwd+bwd us"], row["triton graph fwd+bwd us"] = time_impl(
            triton_attention, qkv, grad_out, quick)
        for name, backend in BACKENDS.items():
            try:
                with sdpa_kernel(backend), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row[f"{name} fwd us"], row[f"{name} fwd+bwd us"], row[f"{name} graph fwd+bwd us"] = (
                        time_impl(sdpa_attention, qkv, grad_out, quick))
            except RuntimeError:  # this backend does not take this shape / dtype / GPU
                row[f"{name} fwd us"] = row[f"{name} fwd+bwd us"] = row[f"{name} graph fwd+bwd us"] = None
        for phase in ("fwd", "fwd+bwd", "graph fwd+bwd"):
            times = {n: row[f"{n} {phase} us"] for n in BACKENDS if row[f"{n} {phase} us"] is not None}
            best = min(times, key=times.get) if times else None
            row[f"best {phase}"] = best
            ours = row[f"triton {phase} us"]
            row[f"speedup {phase}"] = times[best] / ours if best and ours else None
        fwd_bytes, fwdbwd_bytes = min_bytes(B, S, H, D)
        row["triton fwd GB/s"] = fwd_bytes / row["triton fwd us"] / 1e3
        row["triton fwd+bwd GB/s"] = fwdbwd_bytes / row["triton fwd+bwd us"] / 1e3
        gpu_us = row["triton graph fwd+bwd us"] or row["triton fwd+bwd us"]  # GPU-only time where captured
        row["triton fwd+bwd % copy"] = 100 * fwdbwd_bytes / gpu_us / 1e3 / copy_gbs
        rows.append(row)
        print(_format_row(row), flush=True)
        del qkv, grad_out
        torch.cuda.empty_cache()

    picked = [r for r in rows if r["S"] == SUMMARY["S"] and r["D"] == SUMMARY["D"]
              and r["B"] in SUMMARY["B"] and r["H"] in SUMMARY["H"]]
    summary = {"copy GB/s": copy_gbs, "shapes": len(picked), "target fwd+bwd speedup": TARGET_SPEEDUP}
    for phase in ("fwd", "fwd+bwd", "graph fwd+bwd"):
        speedups = [r[f"speedup {phase}"] for r in picked if r[f"speedup {phase}"] is not None]
        if speedups:
            summary[f"min {phase} speedup"] = min(speedups)
            summary[f"geomean {phase} speedup"] = geomean(speedups)
    for phase in ("fwd+bwd", "graph fwd+bwd"):
        if f"min {phase} speedup" in summary:
            summary[f"target met ({phase})"] = summary[f"min {phase} speedup"] >= TARGET_SPEEDUP
    columns = ["B", "S", "H", "D", "triton fwd us", "triton fwd+bwd us", "triton graph fwd+bwd us",
               *[f"{n} {p} us" for n in BACKENDS for p in ("fwd", "fwd+bwd", "graph fwd+bwd")],
               "best fwd", "speedup fwd", "best fwd+bwd", "speedup fwd+bwd",
               "best graph fwd+bwd", "speedup graph fwd+bwd",
               "triton fwd GB/s", "triton fwd+bwd GB/s", "triton fwd+bwd % copy", "out rel err"]
    return {
        "title": f"Fused attention vs SDPA backends, {str(DTYPE).removeprefix('torch.')}, "
                 "qkv (B, S, 3, H, D) -> (B, S, H*D), µs (median)",
        "columns": columns,
        "rows": rows,
        "summary": summary,
    }


def _format_row(row: dict) -> str:
    def t(key, fmt=".0f"):
        return "n/a" if row.get(key) is None else f"{row[key]:{fmt}}"

    backends = "  ".join(f"{n} {t(f'{n} fwd us')}/{t(f'{n} fwd+bwd us')}/{t(f'{n} graph fwd+bwd us')}"
                         for n in BACKENDS)
    return (f"B={row['B']:5d} S={row['S']:3d} H={row['H']:2d} D={row['D']:2d}  fwd/fwd+bwd/graph fwd+bwd us: "
            f"triton {t('triton fwd us')}/{t('triton fwd+bwd us')}/{t('triton graph fwd+bwd us')}  {backends}"
            f"  speedup {t('speedup fwd', '.2f')}x/{t('speedup fwd+bwd', '.2f')}x/"
            f"{t('speedup graph fwd+bwd', '.2f')}x")


# ---------------------------------------------------------------------------------------------------------
# Launch-configuration sweep: the source of kernels.attention.configs.fwd_config / bwd_config.

TUNE_SHAPES = [(256, 65, 8, 64), (512, 65, 6, 32), (256, 64, 8, 64), (256, 257, 6, 64)]


def _candidate_configs(S: int) -> tuple[list[Config], list[Config]]:
    """(forward, backward) launch configurations worth timing at S tokens."""
    if S <= 128:  # one program per (b, h): (block_m, 0, num_warps, num_stages), then the tiled path
        fwd = [Config(m, 0, w, st) for m, w, st in
               [(16, 4, 1), (16, 4, 2), (32, 4, 1), (32, 4, 2), (32, 8, 2), (64, 4, 2), (64, 8, 2)]]
        bwd = [Config(m, 0, w, st) for m, w, st in
               [(16, 4, 1), (16, 4, 2), (16, 8, 1), (32, 4, 1), (32, 4, 2), (32, 8, 1), (64, 4, 1),
                (64, 8, 1)]]
        fwd += [Config(64, 64, 4, 2, tiled=True)]
        bwd += [Config(64, 64, 4, 2, tiled=True), Config(32, 64, 4, 2, tiled=True)]
    else:  # (block_m, block_n, num_warps, num_stages)
        fwd = [Config(*c) for c in [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3),
                                     (64, 32, 4, 3), (128, 32, 4, 3)]]
        # 2 stages gave run-to-run different gradients on the H100 (kernels/attention/configs.py):
        # a "diff vs default" far above the others' flags that again
        bwd = [Config(*c) for c in [(64, 64, 4, 1), (32, 64, 4, 1), (64, 32, 4, 1), (64, 64, 8, 1),
                                     (64, 64, 4, 2)]]
    return fwd, bwd


def _gpu_us(fn) -> float:
    """GPU time of fn in µs: median over replays of a CUDA graph (no launch overhead, no L2 flush)."""
    return triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median") * 1e3


def _warm_up_gpu(seconds: float = 1.0) -> None:
    """Run matrix products for a while so that clocks are up before the first timing."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


class _DirectAttention(torch.autograd.Function):
    """The same kernels without the triton_op layer: measures what that dispatch costs in eager mode."""

    @staticmethod
    def forward(qkv):
        return attention_forward(qkv)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], *output)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        qkv, out, lse = ctx.saved_tensors
        return attention_backward(grad_out, qkv, out, lse)


def launch_overheads() -> dict:
    """Eager fwd+bwd wall time per call at a tiny shape (GPU work ~ 0): the host-side cost of each path."""
    qkv = torch.randn(1, 16, 3, 1, 16, device="cuda", dtype=DTYPE)
    grad_out = torch.randn(1, 16, 16, device="cuda", dtype=DTYPE)
    paths = {
        "attention()": triton_attention,
        "autograd.Function, no triton_op": lambda x: _DirectAttention.apply(x)[0],
        "sdpa + permutes (cudnn)": sdpa_attention,
    }
    result = {}
    for name, fn in paths.items():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            x = qkv.detach().requires_grad_(True)
            for _ in range(50):
                torch.autograd.grad(fn(x), x, grad_out)
            torch.cuda.synchronize()
            n, t0 = 500, time.perf_counter()
            for _ in range(n):
                torch.autograd.grad(fn(x), x, grad_out)
            torch.cuda.synchronize()
            result[name] = (time.perf_counter() - t0) / n * 1e6
            print(f"host overhead fwd+bwd {name:36s} {result[name]:6.1f} us/call", flush=True)
    return result


def tune(device: str = "cuda", shapes=None) -> list[dict]:
    """GPU time of each candidate launch configuration (forward alone, backward alone) at each shape."""
    _warm_up_gpu()
    launch_overheads()
    rows = []
    for B, S, H, D in shapes or TUNE_SHAPES:
        qkv = torch.randn(B, S, 3, H, D, device=device, dtype=DTYPE)
        grad_out = torch.randn(B, S, H * D, device=device, dtype=DTYPE)
        out, lse = attention_forward(qkv)
        ref_grad = attention_backward(grad_out, qkv, out, lse).float()
        fwd_bytes, fwdbwd_bytes = min_bytes(B, S, H, D)
        fwd_cfgs, bwd_cfgs = _candidate_configs(S)
        for phase, cfgs, default, nbytes in (("fwd", fwd_cfgs, fwd_config(S, D), fwd_bytes),
                                              ("bwd", bwd_cfgs, bwd_config(S, D), fwdbwd_bytes - fwd_bytes)):
            for cfg in cfgs:
                if phase == "fwd":
                    fn = functools.partial(attention_forward, qkv, cfg)
                else:
                    fn = functools.partial(attention_backward, grad_out, qkv, out, lse, cfg)
                t0 = time.perf_counter()
                try:
                    result = fn()
                    reference = out if phase == "fwd" else ref_grad  # configs must agree with each other
                    got = (result[0] if phase == "fwd" else result).float()
                    err = ((got - reference.float()).norm() / reference.float().norm()).item()
                    us = _gpu_us(fn)
                except Exception as exc:  # out of resources etc.: record and go on
                    us, err = None, None
                    print(f"  {cfg}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}", flush=True)
                row = {"B": B, "S": S, "H": H, "D": D, "phase": phase, **cfg._asdict(),
                       "default": cfg == default, "us": us, "GB/s": nbytes / us / 1e3 if us else None,
                       "diff vs default": err, "compile+first s": time.perf_counter() - t0}
                rows.append(row)
                timing = "n/a" if us is None else f"{us:7.1f} us {row['GB/s']:6.0f} GB/s  diff {err:.1e}"
                mark = "*" if row["default"] else " "
                print(f"B={B} S={S} H={H} D={D} {phase:3s} {tuple(cfg)} {mark} {timing}", flush=True)
        del qkv, grad_out, out, lse, ref_grad
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------------------


def to_markdown(result: dict, header: dict) -> str:
    shown = ["B", "S", "H", "D", "triton fwd us", "triton fwd+bwd us",
             *[f"{n} fwd+bwd us" for n in BACKENDS], "best fwd", "speedup fwd", "best fwd+bwd",
             "speedup fwd+bwd", "triton graph fwd+bwd us", "best graph fwd+bwd", "speedup graph fwd+bwd",
             "triton fwd GB/s", "triton fwd+bwd GB/s", "triton fwd+bwd % copy", "out rel err"]

    cell = fine_cell
    lines = [f"# {result['title']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "Summary (" + ", ".join(f"{k}={v}" for k, v in SUMMARY.items()) + "):", ""]
    lines += [f"- {k}: {cell(v) if isinstance(v, float) else v}" for k, v in result["summary"].items()]
    lines += [""] + table(shown, result["rows"], cell)
    lines += ["", "Forward-only times of every backend are in the JSON file. Bytes counted: see the "
              "docstring of bench/attention.py.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    run_script("attention", sys.argv[1:] if argv is None else argv,
               lambda quick, prefix: measure("cuda", quick=quick), tune, to_markdown)


if __name__ == "__main__":
    main()
