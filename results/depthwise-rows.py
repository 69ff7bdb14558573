"""Device experiment for issue 4: the "rows" schedule (kernels/depthwise_rows.py) against the tiled kernels of
kernels/depthwise.py, each kernel alone, channels_last, at every depthwise layer of the nets (bench/depthwise.py's
layer_table), batch 256 and 512, bfloat16 and float32: the forward (no epilogue; cuDNN's time beside it) and the
stride-1 grad-input pass (rows with the kernel flipped); rows with and without upcast (float32 tiles at the
load). Times are bench/depthwise.py's CUDA-graph medians over rotating input sets; % copy = (input + output
bytes) / time against a copy measured in the same run.
Usage (on a GPU, from the repository root): python3 results/depthwise-rows.py OUT.json  (prints a table too)."""

import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import copy_gbs  # noqa: E402
from bench.depthwise import DTYPES, graph_us, layer_table, n_sets_for  # noqa: E402
from kernels import depthwise as dw  # noqa: E402
from kernels.depthwise_rows import launch_rows, rows_config  # noqa: E402

BATCHES = (256, 512)
UPCAST = (False, True)  # launch_rows(upcast=...): each tile converted to float32 at its load, or at each use


def rows_candidates(C: int, H: int, stride: int, dtype: torch.dtype) -> list[dw.LaunchConfig]:
    """The launch configurations tried around rows_config's: it first, then ROWS 2 and 8, the other warp count
    (4 or 8), half the channels (not below 32) and twice (up to 256 and C)."""
    base = rows_config(C, H, H, stride, dtype)
    out = [base, base._replace(block_r=2), base._replace(block_r=8),
           base._replace(num_warps=8 if base.num_warps == 4 else 4)]
    out += [base._replace(block_k=base.block_k // 2)] if base.block_k > 32 else []
    out += [base._replace(block_k=base.block_k * 2)] if base.block_k < min(256, dw._next_pow2(C)) else []
    return list(dict.fromkeys(out))


def calls(kind, xs, w, stride):
    """(name, call(i)) per timed variant of one pass."""
    if kind == "fwd":
        yield "torch", lambda i: F.conv2d(xs[i], w.to(xs[i].dtype), stride=stride, padding=1, groups=w.shape[0])
        yield "tiles", lambda i: dw.launch_fwd(xs[i], w, None, None, stride, False, variant="tiles")
        for cfg in rows_candidates(w.shape[0], xs[0].shape[2], stride, xs[0].dtype):
            for up in UPCAST:
                yield f"rows{'+upcast' * up}{tuple(cfg)}", lambda i, cfg=cfg, up=up: launch_rows(
                    xs[i], w, None, None, stride, False, config=cfg, upcast=up)
    else:  # the stride-1 grad-input pass; xs stand for grad_z (same shape as x at stride 1)
        yield "tiles", lambda i: dw.launch_bwd_input(xs[i], w, xs[i], 1, variant="tiles")
        for cfg in rows_candidates(w.shape[0], xs[0].shape[2], 1, xs[0].dtype):
            for up in UPCAST:
                yield f"rows{'+upcast' * up}{tuple(cfg)}", lambda i, cfg=cfg, up=up: launch_rows(
                    xs[i], w, None, None, 1, False, flip=True, config=cfg, upcast=up)


def cases():
    for _, C, H, stride in layer_table():
        for kind in ("fwd",) + (("bwd_input",) if stride == 1 else ()):
            for dname in DTYPES:
                yield kind, C, H, stride, dname


def _compile_job(job) -> None:
    kind, C, H, stride, dname = job
    xs = [torch.randn(2, C, H, H, device="cuda", dtype=DTYPES[dname]).to(memory_format=torch.channels_last)]
    for _, call in calls(kind, xs, torch.randn(C, 1, 3, 3, device="cuda"), stride):
        call(0)
    torch.cuda.synchronize()


def main(out: Path) -> None:
    dw._in_processes(_compile_job, list(cases()))
    copy = copy_gbs("cuda")
    rows = []
    speedups, upcast = {}, {}  # per (kind, dtype): tiles / best rows, and best plain rows / best rows+upcast
    for kind, C, H, stride, dname in cases():
        for N in BATCHES:
            OH = (H - 1) // stride + 1
            elt = torch.empty((), dtype=DTYPES[dname]).element_size()
            n_bytes = N * C * (H * H + OH * OH) * elt
            n = n_sets_for(n_bytes)
            xs = [torch.randn(N, C, H, H, device="cuda", dtype=DTYPES[dname]).to(memory_format=torch.channels_last)
                  for _ in range(n)]  # fmt: skip
            w = torch.randn(C, 1, 3, 3, device="cuda") / 3
            ref, case = None, []
            for name, call in calls(kind, xs, w, stride):
                y = call(0)
                ref = y if name == "tiles" else ref
                err = ((y.double() - ref.double()).norm() / ref.double().norm()).item() if ref is not None else 0.0
                us = graph_us(call, n)
                case.append(dict(kind=kind, C=C, H=H, stride=stride, dtype=dname, N=N, variant=name, us=us,
                                 copy_pct=100 * n_bytes / us / 1e3 / copy, rel_err=err))
            rows += case
            tiles = next(r["us"] for r in case if r["variant"] == "tiles")
            best = min((r for r in case if r["variant"].startswith("rows")), key=lambda r: r["us"])
            plain = min(r["us"] for r in case if r["variant"].startswith("rows("))
            up = min(r["us"] for r in case if r["variant"].startswith("rows+upcast("))
            speedups.setdefault((kind, dname), []).append(tiles / best["us"])
            upcast.setdefault((kind, dname), []).append(plain / up)
            torch_us = next((r["us"] for r in case if r["variant"] == "torch"), float("nan"))
            print(f"{kind:9s} C={C:4d} H={H:2d} s={stride} {dname} N={N}: torch {torch_us:7.1f} tiles {tiles:7.1f} "
                  f"rows {best['us']:7.1f} {best['variant']} ({best['copy_pct']:.0f}% copy), rows/tiles "
                  f"{tiles / best['us']:.2f}, err {max(r['rel_err'] for r in case):.1e}", flush=True)
    for title, ratios in (("rows/tiles speedup", speedups),
                          ("upcast speedup (best rows / best rows+upcast)", upcast)):
        for (kind, dname), s in ratios.items():
            print(f"geomean {title} {kind} {dname}: {statistics.geometric_mean(s):.2f} "
                  f"(min {min(s):.2f}, max {max(s):.2f})")
    out.write_text(json.dumps({"copy GB/s": copy, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
