"""load_cifar: CIFAR-10/100 from a path in one pass: locate, read, check, cache, each step in the module
that owns it.

    check_settings   data/check.py    a known dataset and label set, before anything is looked for
    locate           data/locate.py   which copy is under `root` (pickles, image folder, archive), or the
                                      download when there is none: a description, nothing read yet
    cache.load       data/cache.py    the arrays decoded earlier from that same copy, when still valid
    read             data/read.py     else decode the copy (data/pickles.py, data/folders.py); an image
                                      folder's decode reports through `log` (data/progress.py)
    check_cifar      data/check.py    shapes, dtypes, label ranges, class counts, cached or not
    cache.store      data/cache.py    keep what was read, for the next load

The layouts accepted, their order and the download are described in data/locate.py; where the cache
lives and when it is reused, in data/cache.py.
"""

import os
from collections.abc import Callable
from pathlib import Path

from data import cache
from data.check import check_cifar, check_settings
from data.cifar import Cifar
from data.locate import locate
from data.progress import DecodeProgress
from data.read import read


def load_cifar(
    dataset: str, root: str | os.PathLike, download: bool = False, labels: str = "fine", *,
    cache_dir: str | os.PathLike | None = None, log: Callable[[str], object] | None = None, bar: bool = True,
) -> Cifar:
    """Load `dataset` ("cifar10" or "cifar100") from `root` through the cache; see the module doc. `log` hears
    what a first decode of images reports, before, during and after (None: nothing); `bar`: a tqdm bar on
    stderr instead of the lines during it, when stderr is a terminal (data/progress.py)."""
    check_settings(dataset, labels)
    root = Path(root).expanduser().absolute()
    found = locate(dataset, root, download)
    entry = cache.entry(found, labels, root, cache_dir)
    cifar = cache.load(entry)
    fresh = cifar is None
    if fresh:
        cifar = read(found, labels, DecodeProgress(log, entry.path, bar))
    check_cifar(cifar, dataset, labels)  # a cache too: it is a file like any other
    if fresh:
        cache.store(entry, cifar)
    return cifar
