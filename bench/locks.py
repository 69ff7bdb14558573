"""File locks that order the processes of `python -m bench step parallel=true` on one machine."""

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
