"""An exclusive turn on a shared GPU, taken through a lock file, for runs and benchmarks started side by side."""

from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def exclusive_turn(path: str, log):
    """Holds an exclusive lock (flock) on the file `path` while the block runs; "" holds nothing. Runs started
    together on one GPU with the same `gpu_lock=` file compile in parallel on the CPU, then train one at a
    time, so each one's timings are its own (the lock is released when the process ends, even if killed)."""
    if not path:
        yield
        return
    import fcntl  # POSIX only, and only needed here

    with open(path, "a") as f:
        t0 = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        log(f"waited {time.perf_counter() - t0:.1f} s for the GPU lock {path}")
        yield
