"""Cache: the decoded arrays of a copy, one .npz file per (root, dataset, label set).

Decoding 60,000 JPEGs takes seconds; reading their uint8 arrays back takes a fraction of one. The
file holds the arrays, the class names, the source's description and a signature of the source (every
file's path, size and modification time, the kind of copy, its class folders, the dataset, the label
set and the cache format version). A cache whose signature differs from the source's current one is
stale and is rebuilt; so is one that cannot be read. It is loaded with allow_pickle=False, so it cannot
run code, and written to a temporary file that os.replace renames into place, so a reader never sees
half a file. A cache that cannot be written costs time, not correctness: loading goes on, with a warning.

Where: in `.cifar-zoo-cache/` beside the data (inside a root folder, or beside a root archive) when that
folder is writable, else in $XDG_CACHE_HOME/cifar-zoo (~/.cache/cifar-zoo); `cache_dir` overrides both.
"""

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data.cifar import Cifar
from data.locate import Found

CACHE_VERSION = 1  # bump when the arrays decoded from the same files change
CACHE_DIR_NAME = ".cifar-zoo-cache"
ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


class Entry(NamedTuple):
    """One copy's cache: where it is, and the signature that a valid cache there holds."""

    path: Path
    signature: str


def entry(found: Found, labels: str, root: Path, cache_dir: str | os.PathLike | None) -> Entry:
    """The cache of `found`, located at `root` and read with `labels`."""
    extra = () if found.tree is None else tuple((s, tuple(sorted(c))) for s, c in found.tree.items())
    sig = signature(found.files, dataset=found.dataset, labels=labels, layout=found.kind, extra=extra)
    return Entry(cache_file(root, found.dataset, labels, cache_dir), sig)


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar-zoo"


def cache_file(root: Path, dataset: str, labels: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the cache of `root` lives; named for the dataset, label set and root (hashed: no clashes)."""
    if cache_dir is None:
        beside = root if root.is_dir() else root.parent
        cache_dir = beside / CACHE_DIR_NAME if os.access(beside, os.W_OK) else user_cache_dir()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{dataset}-{labels}-{root.name}-{tag}.npz"


def signature(files: Iterable[Path], **details) -> str:
    """Digest of each file's absolute path, size and mtime, plus `details` (layout, dataset, ...)."""
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append([str(Path(f).absolute()), st.st_size, st.st_mtime_ns])
    text = json.dumps({"version": CACHE_VERSION, "files": stats, **details}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load(cache: Entry) -> Cifar | None:
    """The arrays in the cache, or None when it is missing, stale or unreadable (then the caller reads the
    copy again and stores it over this one)."""
    try:
        with np.load(cache.path, allow_pickle=False) as f:
            if str(f["signature"]) != cache.signature:
                return None
            arrays = tuple(f[k] for k in ARRAY_KEYS)
            return Cifar(*arrays, tuple(str(c) for c in f["classes"]), str(f["source"]))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # missing, truncated, or not ours (an object array refused by allow_pickle=False)


def store(cache: Entry, cifar: Cifar) -> None:
    """Write the cache; one that cannot be written is a warning, since loading can go on without it."""
    try:
        save(cache.path, cache.signature, cifar)
    except OSError as e:
        warnings.warn(f"could not write the data cache {cache.path} ({e}); set cache_dir to a "
                      "writable folder", stacklevel=3)  # names load_cifar's caller


def save(path: Path, signature_: str, cifar: Cifar) -> None:
    """Write the cache atomically: into a temporary file beside `path`, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object, so np.savez does not append its own ".npz"
            np.savez(
                f, **dict(zip(ARRAY_KEYS, cifar[:4], strict=True)), classes=np.array(cifar.classes, dtype=str),
                source=np.array(cifar.source), signature=np.array(signature_),
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a cache is as readable as other files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
