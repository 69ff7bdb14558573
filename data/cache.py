"""The decoded-array cache: one .npz file per (source, dataset, label set).

Decoding 60,000 JPEGs takes seconds; reading their uint8 arrays back takes a fraction of one. The
file holds the arrays, the class names, the source's description and a signature of the source (every
file's path, size and modification time, plus the cache format version). A cache whose signature
differs from the source's current one is stale and is rebuilt; so is one that cannot be read. It is
loaded with allow_pickle=False, so it cannot run code, and written to a temporary file that os.replace
renames into place, so a reader never sees half a file.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CACHE_VERSION = 1  # bump when the arrays decoded from the same files change
ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def signature(files: Iterable[Path], **details) -> str:
    """Digest of each file's absolute path, size and mtime, plus `details` (layout, dataset, ...)."""
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append([str(Path(f).absolute()), st.st_size, st.st_mtime_ns])
    text = json.dumps({"version": CACHE_VERSION, "files": stats, **details}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load(path: Path, expected_signature: str):
    """(train_images, train_labels, test_images, test_labels, classes, source) from the cache at `path`, or
    None when it is missing, stale or unreadable (then the caller decodes again and overwrites it)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["signature"]) != expected_signature:
                return None
            arrays = tuple(f[k] for k in ARRAY_KEYS)
            return (*arrays, tuple(str(c) for c in f["classes"]), str(f["source"]))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # missing, truncated, or not ours (an object array refused by allow_pickle=False)


def save(path: Path, signature_: str, arrays: tuple, classes: tuple[str, ...], source: str) -> None:
    """Write the cache atomically: into a temporary file beside `path`, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object, so np.savez does not append its own ".npz"
            np.savez(
                f, **dict(zip(ARRAY_KEYS, arrays, strict=True)), classes=np.array(classes, dtype=str),
                source=np.array(source), signature=np.array(signature_),
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a cache is as readable as other files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
