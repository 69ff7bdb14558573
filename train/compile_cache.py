"""Compiled work kept between runs, whether a compile found it, and a heartbeat while compiling.

torch.compile's slow part is Inductor's: generating and building the Triton and C++ kernels of each graph. It
keeps them in an on-disk cache (its FX-graph cache, and AOTAutograd's cache of the joint forward/backward
graphs) under `TORCHINDUCTOR_CACHE_DIR`, by default `/tmp/torchinductor_<user>`, which many machines empty at
reboot. `python -m train` points it at `$XDG_CACHE_HOME/cifar-zoo/compile` (`~/.cache/...`) instead, unless
the user set the variable: a second run of the same net, batch and precision then loads its graphs rather
than building them (ResNet-18 on an H100: a cold compile of 71-117 s against 19 s from the cache). Dynamo's
tracing is not cached and is paid by every run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
HEARTBEAT_S = 30.0  # seconds between "still compiling" lines: a log that stays silent for minutes looks hung


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar-zoo" / "compile"


def keep_compiled_work() -> str:
    """Sets Inductor's cache folder to default_cache_dir() unless the user chose one; returns the folder used.
    Called by the entry point before anything is compiled (Inductor reads the variable when it first caches)."""
    if not os.environ.get(CACHE_VARIABLE):
        os.environ[CACHE_VARIABLE] = str(default_cache_dir())
    return os.environ[CACHE_VARIABLE]


def cache_counts() -> dict[str, int]:
    """Graphs loaded from and written to Inductor's FX-graph cache so far in this process."""
    from torch._dynamo.utils import counters

    return {"hits": counters["inductor"]["fxgraph_cache_hit"], "misses": counters["inductor"]["fxgraph_cache_miss"]}


def describe(before: dict[str, int], after: dict[str, int]) -> str:
    """'cold' when any graph was built, 'cached' when every graph came from the cache, with the counts."""
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    if misses:
        return f"cold: {misses} of {hits + misses} graphs built, kept for the next run"
    return f"cached: {hits} graphs from the compile cache" if hits else "no graph reached Inductor's cache"


@contextlib.contextmanager
def heartbeat(log, what: str, every_s: float = HEARTBEAT_S):
    """Logs '<what>... N s' every `every_s` seconds while the block runs (from a daemon thread)."""
    done, t0 = threading.Event(), time.perf_counter()

    def beat() -> None:
        while not done.wait(every_s):
            log(f"{what}... {time.perf_counter() - t0:.0f} s")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
