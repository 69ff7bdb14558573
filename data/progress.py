"""Progress of the one slow step, the first decode of an image folder (about 25 s for 60,000 JPEGs on 2 cores),
told through the caller's `log`: data/ prints nothing by itself.

    decoding 60,000 images of <source> once; cached in <cache file>
    decoded 20,000/60,000 images (33%) in 8 s      every LINE_IMAGES images or LINE_SECONDS, whichever first
    decoded 60,000 images in 25.1 s

On a terminal (stderr a tty, and `bar`), a tqdm bar on stderr stands in for the lines in between; it is taken
off when the decode ends or fails. Without a log, nothing at all: the default of load_cifar.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LINE_SECONDS = 10.0  # at most this long between two progress lines in a log
LINE_IMAGES = 10_000  # and at most this many images


class DecodeProgress:
    """What load_cifar tells `log` (None: nothing) about a decode whose arrays go to `cache_file`."""

    def __init__(self, log: Callable[[str], object] | None, cache_file: Path, bar: bool = True):
        self.log, self.cache_file, self.bar = log, cache_file, bar

    @contextlib.contextmanager
    def decoding(self, total: int, source: str) -> Iterator[Callable[[], None]]:
        """Around the decode of `total` images of `source`: yields the function to call after each image."""
        if self.log is None:
            yield lambda: None
            return
        log = self.log
        log(f"decoding {total:,} images of {source} once; cached in {self.cache_file}")
        started = time.perf_counter()
        if self.bar and sys.stderr.isatty():
            from tqdm import tqdm  # here: only a terminal needs it

            with tqdm(total=total, desc="decoding", unit="img", leave=False, file=sys.stderr) as bar:
                yield bar.update
        else:
            done, done_at_line, line_at = 0, 0, started

            def advance() -> None:
                nonlocal done, done_at_line, line_at
                done += 1
                now = time.perf_counter()
                if done < total and (done - done_at_line >= LINE_IMAGES or now - line_at >= LINE_SECONDS):
                    log(f"decoded {done:,}/{total:,} images ({100 * done // total}%) in {now - started:.0f} s")
                    done_at_line, line_at = done, now

            yield advance
        log(f"decoded {total:,} images in {time.perf_counter() - started:.1f} s")
