"""Turns on a shared GPU, taken through lock files, for runs and benchmarks started side by side."""

from __future__ import annotations

import contextlib
import time

POLL_S = 0.5  # seconds between tries while every lock file is held


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


def slot_files(path: str, slots: int) -> list[str]:
    """The lock files of `slots` turns: `path` itself, then `path`.1, `path`.2, ..."""
    return [path] + [f"{path}.{k}" for k in range(1, slots)]


@contextlib.contextmanager
def gpu_turn(path: str, log, slots: int = 1):
    """Holds one of `slots` turns on the GPU (slot_files(path, slots)) while the block runs; "" holds nothing.
    Runs started together on one GPU with the same `gpu_lock=` file compile in parallel on the CPU, then at
    most `slots` of them train at once: with 1, one at a time, so each one's timings are its own; with more,
    they share the GPU (which pays where one run alone leaves it idle part of the time), and each one's
    timings include the others' share."""
    if not path:
        yield
        return
    t0 = time.perf_counter()
    files = slot_files(path, slots)
    with one_of(files) as k:
        log(f"waited {time.perf_counter() - t0:.1f} s for the GPU lock {files[k]}"
            + (f" (one of {slots} turns)" if slots > 1 else ""))
        yield
