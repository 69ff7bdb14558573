"""Compile in parallel processes, time one at a time: what `parallel=true` does for `python -m bench step` and
`python -m bench members`.

A section splits its work into jobs (argument lists). `run_jobs` starts one process per job, `python -m <module>
<tmp> <index> <count> <slots> <job...>`, whose `__main__` calls `work` with the section's two halves: `prepare`
(build and compile, holding one of a few compile slots) and `measure` (time, holding the machine's one GPU lock
after every job is ready), so each job is timed alone on an otherwise idle machine while the compiles, which are
mostly CPU, overlap. Minutes instead of a quarter hour for the 8 families of bench/step.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

POLL_S = 0.5  # seconds between tries while every lock file is held, or while jobs are still compiling
# Seconds kept per job at the end of the deadline for its timing: bench/members.py times 3-5 steps of 10 calls
# in 5 rounds (a few seconds on an H100); the rest is slack for the processes' exit.
TIMING_RESERVE_S = 15
# GPU memory per job alive at once (run_jobs' waves): `python -m bench step parallel=true` with all 11 jobs of
# the 8 families alive together ran out of memory on an H100 (79 GiB): the processes held 2-23 GiB each, about
# 85 GiB in all. At one job per 16 GiB a wave of the four largest (23, 17, 9, 9 GiB) still fits.
GIB_PER_JOB = 16


@contextlib.contextmanager
def one_of(paths: list[str]):
    """Holds an exclusive lock (flock) on the first free file of `paths`, polling while all are held, and
    yields its index. A lock is released when the block ends or the process dies, even if killed."""
    import fcntl  # POSIX only, and only needed here

    while True:
        for k, path in enumerate(paths):
            f = open(path, "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                yield k
            finally:
                f.close()
            return
        time.sleep(POLL_S)


def compile_slots(jobs: int) -> tuple[int, int]:
    """(processes compiling at once, Inductor compile threads each). One Inductor compile is mostly one busy
    thread plus bursts of parallel Triton builds: 4 threads each, and as many processes as that fills the
    cores. (`python -m bench step parallel=true` without this limit on a 16-core H100 machine: all 11 jobs of
    the 8 families at once, 1 thread each, did not finish compiling within 545 s; 6 jobs of 2 threads took
    205 s in all.)"""
    cpus = os.cpu_count() or 2
    slots = max(1, min(jobs, cpus // 4))
    return slots, max(1, cpus // slots)


def compile_slot(tmp: Path, slots: int):
    """Holds one of `slots` lock files (the first free one, polling) while the block runs."""
    return one_of([str(tmp / f"compile-slot-{k}.lock") for k in range(slots)])


def gpu_turn(tmp: Path):
    """The GPU lock: held by the one process that is timing (or running a memory-hungry warm-up)."""
    return one_of([str(tmp / "gpu.lock")])


def jobs_at_once(jobs: int) -> int:
    """How many of `jobs` run_jobs keeps alive together: a ready job holds its compiled graphs and their memory
    while it waits for its turn to be timed. One job per GIB_PER_JOB of the GPU's memory (all jobs off CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return jobs
    return max(1, min(jobs, torch.cuda.get_device_properties(0).total_memory // (GIB_PER_JOB << 30)))


def run_jobs(module: str, jobs: list[list[str]], deadline_s: float) -> tuple[list[list[dict] | None], list[str]]:
    """Each job's rows (None for a job that failed or missed the deadline) and one note per such job, the jobs
    run in waves of jobs_at_once, in their order (so the ones that matter most go first): each wave as
    run_wave runs it, within its share of the time left (its jobs' share of the jobs left). A job stopped
    while still compiling gets a second try with the time the waves leave (they often end early): it compiles
    again, from the kernels its first try left in the compile caches on disk."""
    start, results, problems, late = time.monotonic(), [None] * len(jobs), {}, []
    at_once = jobs_at_once(len(jobs))
    for first in range(0, len(jobs), at_once):
        wave = list(range(first, min(first + at_once, len(jobs))))
        left = deadline_s - (time.monotonic() - start)
        late += run_wave(module, jobs, wave, left * len(wave) / (len(jobs) - first), results, problems)
    for first in range(0, len(late), at_once):
        wave = late[first:first + at_once]
        left = deadline_s - (time.monotonic() - start)
        if left > TIMING_RESERVE_S * (len(wave) + 1):  # more than the timings' reserve to compile in
            tried = {i: problems.pop(i) for i in wave}
            run_wave(module, jobs, wave, left * len(wave) / (len(late) - first), results, problems)
            problems.update({i: f"{tried[i]}; tried again: {problems[i].split(': ', 1)[1]}"
                             for i in wave if i in problems})
    return results, [problems[i] for i in sorted(problems)]


def run_wave(module: str, jobs: list[list[str]], wave: list[int], deadline_s: float, results: list,
             problems: dict) -> list[int]:
    """Runs the jobs at indices `wave`, all alive together, into results[i] (their rows) or problems[i] (a
    note), and returns the indices of those stopped while still compiling. Jobs take compile slots in their
    order. Every job waits for the others to be ready before it is timed, so one slow compile would hold back
    the rows of all: a job still compiling TIMING_RESERVE_S per job before the deadline is stopped and named,
    and the ready ones are timed; jobs not done at the deadline are stopped too."""
    start, late = time.monotonic(), []
    slots, threads = compile_slots(len(wave))
    cutoff = deadline_s - TIMING_RESERVE_S * len(wave)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(threads)}
        procs = {i: subprocess.Popen([sys.executable, "-m", module, tmp, str(k), str(len(wave)), str(slots),
                                      *jobs[i]], env=env, stderr=subprocess.PIPE, text=True)
                 for k, i in enumerate(wave)}
        ready = {i: Path(tmp) / f"{k}.ready" for k, i in enumerate(wave)}
        while not all(r.exists() for r in ready.values()) and time.monotonic() - start < cutoff:
            time.sleep(POLL_S)
        for i, proc in procs.items():
            if not ready[i].exists():
                proc.kill()
                ready[i].touch()  # the others no longer wait for it
                late.append(i)
                problems[i] = (f"{' '.join(jobs[i])}: not compiled within {cutoff:.0f} s of the {deadline_s:.0f} s "
                               "deadline")
        for k, (i, proc) in enumerate(procs.items()):
            try:
                _, err = proc.communicate(timeout=max(1.0, deadline_s - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                problems[i] = f"{' '.join(jobs[i])}: not measured within the {deadline_s:.0f} s deadline"
                continue
            if i in late:
                continue
            result = Path(tmp) / f"{k}.json"
            if proc.returncode or not result.exists():
                problems[i] = (f"{' '.join(jobs[i])}: failed (exit {proc.returncode}): "
                               f"{err.strip().splitlines()[-1] if err.strip() else '?'}")
                continue
            results[i] = json.loads(result.read_text())
    return late


def work(argv: list[str], prepare: Callable[..., object], measure: Callable[[object], list[dict]]) -> None:
    """One job's process (argv: tmp index count slots job...): `prepare(*job, turn=...)` in a compile slot
    (`turn()` takes the GPU lock, for a warm-up that needs much memory), signal ready, wait for every job (a
    job timed while others still compile is disturbed: a members run's K=1 ViT step timed so on an H100 ran at
    21.9k images/s, alone at 33.9k), then `measure(prepared)` under the GPU lock; its rows go to
    <tmp>/<index>.json."""
    tmp, index, count, slots, *job = argv
    tmp = Path(tmp)
    try:
        with compile_slot(tmp, int(slots)):
            prepared = prepare(*job, turn=lambda: gpu_turn(tmp))
    finally:
        (tmp / f"{index}.ready").touch()  # also on failure, so the others do not wait for this one
    while len(list(tmp.glob("*.ready"))) < int(count):
        time.sleep(POLL_S)
    with gpu_turn(tmp):
        rows = measure(prepared)
    (tmp / f"{index}.json").write_text(json.dumps(rows))
