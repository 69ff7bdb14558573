"""What every benchmark shares: timing, the copy-bandwidth ceiling, the device description, the report.

A section is a function `measure(device, quick) -> {"title", "columns", "rows", "summary"}`; `report`
turns one into markdown under a header naming the device, versions, date and command.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

COPY_BYTES = 1 << 30  # 512 MiB each way: far past the H100's 50 MB L2, so the copy measures HBM
COPY_BYTES_CPU = 1 << 28  # 128 MiB each way: past the last-level caches of the CPUs we run on, in a tenth of the time


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Seconds per call of `calls` back-to-back calls, in steady state. On CUDA, one untimed call is queued
    first and CUDA events time the calls queued after it: timing starts with the GPU already busy, as it is
    throughout a training loop, so the CPU's time to queue a first call after a synchronisation is not counted
    (a CPU-bound fn still shows its CPU time: the GPU waits for it between the events). Elsewhere, wall time,
    synchronised before and after."""
    if device.type == "cuda":
        sync(device)
        fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls  # elapsed_time: milliseconds
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def alternating_medians(fns: dict[str, Callable[[], object]], device, calls: int, rounds: int) -> dict:
    """Median seconds per call of each fn, timed in alternation round after round, so that drifts of a noisy
    machine (clocks, neighbours) hit every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds_per_call(fn, device, calls))
    return {name: statistics.median(t) for name, t in times.items()}


def geomean(xs) -> float:
    """Geometric mean of positive numbers (speedups, ratios); nan for none."""
    xs = list(xs)
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else float("nan")


def copy_gbs(device: torch.device | str, n_bytes: int = COPY_BYTES) -> float:
    """Device-to-device copy of `n_bytes`, bytes read + written per second (GB/s): the memory ceiling of a run.
    Median of triton.testing.do_bench on CUDA; of ten synchronised copies elsewhere."""
    device = torch.device(device)
    n_bytes = n_bytes if device.type == "cuda" else min(n_bytes, COPY_BYTES_CPU)
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device).fill_(1)  # any values copy alike
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    if device.type == "cuda":
        import triton.testing

        seconds = 1e-3 * triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")
    else:
        seconds = statistics.median(seconds_per_call(lambda: dst.copy_(src), device, 1) for _ in range(10))
    return 2 * n_bytes / seconds / 1e9


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; the CPU -> 'cpu'."""
    if device.type != "cuda":
        return "cpu"
    match = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", torch.cuda.get_device_name(device))
    return match.group(1).lower() if match else "gpu"


def header(device: torch.device, command: str | None = None) -> dict[str, str]:
    import triton  # a dependency on Linux; only named here

    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": getattr(triton, "__version__", "?"),
        "cuda": torch.version.cuda or "none",
        "date": datetime.date.today().isoformat(),
        "command": command or _command_line(),
    }


def script_header(script: str, argv: list[str], device: torch.device | None = None) -> dict[str, str]:
    """The header of a results file written by a standalone script, `script` its path from the repository root
    (`python3 bench/<name>.py ...`)."""
    device = device or torch.device("cuda")
    return {**header(device, f"python3 {script} " + " ".join(argv)), "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def results_prefix(argv: list[str], name: str, device: torch.device | None = None):
    """Where a standalone script writes: the first non-flag argument, else bench/results/<name>-<device>."""
    paths = [a for a in argv if not a.startswith("--")]
    return Path(paths[0]) if paths else Path("bench/results") / f"{name}-{device_slug(device or torch.device('cuda'))}"


def write_report(prefix, result: dict, head: dict, markdown: str) -> None:
    """<prefix>.json (header and result) and <prefix>.md, side by side."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps({**head, **result}, indent=1))
    Path(f"{prefix}.md").write_text(markdown)


def publish(prefix, result: dict, head: dict, to_markdown) -> None:
    """Write <prefix>.json and <prefix>.md (via the script's own `to_markdown(result, head)`) and print it."""
    markdown = to_markdown(result, head)
    write_report(prefix, result, head, markdown)
    print(markdown)


def _command_line() -> str:
    """How this process was started, as typed: `python3 -m bench ...` rather than the __main__.py path."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "-m " + argv[0].rsplit("/", 2)[-2]
    return " ".join([sys.executable.rsplit("/", 1)[-1], *argv])


def cell(v) -> str:
    """A table cell for throughputs: thousands separated, two decimals below 100."""
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return "n/a" if v is None else str(v)


def fine_cell(v) -> str:
    """A table cell for times, errors and ratios: small values in scientific notation."""
    if isinstance(v, float):
        return f"{v:.2e}" if v < 0.01 else f"{v:.2f}" if v < 10 else f"{v:.0f}"
    return "n/a" if v is None else str(v)


def group_rows(rows: list[dict], keys) -> dict[tuple, list[dict]]:
    """rows by the values of `keys` (a case), in order of first appearance, each case's rows in order."""
    cases: dict[tuple, list[dict]] = {}
    for row in rows:
        cases.setdefault(tuple(row[k] for k in keys), []).append(row)
    return cases


def table(columns: list[str], rows: list[dict], fmt=cell) -> list[str]:
    """The lines of a markdown table of `rows` (dicts) in `columns`; a missing key is n/a."""
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows])


def run_script(name: str, argv: list[str], measure, tune, to_markdown) -> None:
    """A standalone GPU benchmark `python3 bench/<name>.py [--quick] [--tune] [prefix]`: `--tune` runs the
    launch-configuration sweep; otherwise `measure(quick, prefix)` -> result, published at prefix."""
    if "--tune" in argv:
        tune()
        return
    prefix = results_prefix(argv, name)
    result = measure("--quick" in argv, prefix)
    publish(prefix, result, script_header(f"bench/{name}.py", argv), to_markdown)


def to_markdown(result: dict) -> str:
    # A members result of whole runs alone (e2e=only) has no step rows: its whole runs' table stands alone.
    alone = not result["rows"] and result.get("end_to_end")
    lines = [] if alone else [f"### {result['title']}", ""] + table(result["columns"], result["rows"])
    if result.get("summary"):
        lines += ["", "Summary: " + "; ".join(f"{k} {cell(v)}" for k, v in result["summary"].items())]
    if result.get("end_to_end"):  # bench/members.py's whole runs: every key any row has, in first-seen order
        rows = result["end_to_end"]
        lines += [*([""] if lines else []), "End to end, wall seconds (compile included):", ""]
        lines += table(list(dict.fromkeys(key for row in rows for key in row)), rows)
    notes = result.get("notes")
    return "\n".join(lines + ([""] + notes if notes else []) + [""])
