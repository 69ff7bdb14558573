"""Read: the official CIFAR python layouts, loose or inside an archive, read through a restricted unpickler.

    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch   {b"data", b"labels", ...}
                           batches.meta                               {b"label_names", ...}
    cifar-100-python/      train, test                {b"data", b"fine_labels", b"coarse_labels", ...}
                           meta                       {b"fine_label_names", b"coarse_label_names"}

Each file is a python2 pickle of a dict with byte-string keys, read with encoding="bytes". b"data" is a uint8
(N, 3072) array: the R, G and B planes of a 32x32 image one after the other, each row-major, so a reshape to
(N, 3, 32, 32) gives NCHW. Labels are lists of ints, names lists of byte strings.

read_folder reads a pickle folder; read_members reads the same files among an archive's members (read into
memory by data/folders.py). Both name a bad file as the user would find it: its path, or archive:member.

Safety: unpickling can call any importable function. RestrictedUnpickler.find_class admits only the
three globals numpy needs to rebuild an array (the official files name nothing else: dicts, lists,
strings and ints are opcodes, not globals), plus the one a copy re-saved by Python 3 at protocol 2 names:
_codecs.encode(text, "latin1"), how such a pickle writes bytes (numpy's among them), which turns text into
bytes and runs no other code. It is admitted through a wrapper that refuses any other encoding or
argument when called. Anything else raises DataError before anything in the file runs.
"""

import codecs
import io
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from data.cifar import IMAGE_SHAPE, TITLES, Cifar
from data.errors import DataError, one_line

IMAGE_BYTES = 3 * 32 * 32  # one row of b"data"

DATASET_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
PICKLE_FILES = {
    "cifar10": (*CIFAR10_TRAIN_FILES, "test_batch", "batches.meta"),
    "cifar100": ("train", "test", "meta"),
}


def _numpy_reconstruct() -> Callable:
    """numpy's array-rebuilding function, where this numpy keeps it (numpy 2 renamed core to _core)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# The only globals an official CIFAR pickle names. Files written by python2's numpy say numpy.core.multiarray;
# numpy 2 writes numpy._core.multiarray. Both resolve to this numpy's function, so numpy.core (deprecated in
# numpy 2) is never imported.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


# How Python 3 pickles bytes at protocols 0-2: _codecs.encode(bytes decoded as latin-1, "latin1").
LATIN1_ENCODE = ("_codecs", "encode")
LATIN1 = ("latin1", "latin-1")


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only ALLOWED_GLOBALS and LATIN1_ENCODE (as latin1_encode); anything else
    raises DataError naming `name`."""

    def __init__(self, file: io.BufferedIOBase, name: str):
        super().__init__(file, encoding="bytes")  # python2 str -> bytes, as the official files need
        self.name = name

    def find_class(self, module: str, name: str):
        if (module, name) == LATIN1_ENCODE:
            return self.latin1_encode
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise DataError(
                f"{self.name}: refused to load the global {one_line(f'{module}.{name}')}: official "
                "CIFAR pickles name only numpy's array functions, and loading this file would call other "
                "code; it is not an official CIFAR file: delete it and copy or download the data again"
            )
        return found

    def latin1_encode(self, *args) -> bytes:
        """_codecs.encode as a Python 3 pickle calls it for bytes: (str, "latin1"), nothing else."""
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in LATIN1:
            call = one_line(f"_codecs.encode(<{type(args[0]).__name__ if args else 'nothing'}>, "
                            f"{', '.join(repr(a) for a in args[1:])})", 120)
            raise DataError(
                f"{self.name}: refused the call {call}: a pickle re-saved by Python 3 calls _codecs.encode "
                "only with text and 'latin1'; it is not an official CIFAR file: delete it and copy or "
                "download the data again"
            )
        return codecs.encode(args[0], "latin1")


def load_pickle(data: bytes, name: str) -> dict:
    """The dict pickled in `data` (the file `name` in messages), unpickled by RestrictedUnpickler."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), name).load()
    except DataError:
        raise
    except Exception as e:  # a damaged stream raises many types: UnpicklingError, EOFError, ValueError, ...
        raise DataError(
            f"{name}: cannot read this pickle ({type(e).__name__}: {one_line(e)}); the file is truncated or "
            "corrupt: copy or download it again"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{name}: holds a {type(obj).__name__}, not the dict of a CIFAR pickle; copy it "
                        "again")
    return obj


def _field(d: dict, key: bytes, name: str):
    """d[key], accepting str keys too (files re-pickled under python3); a missing key names the file."""
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise DataError(f"{name}: has no {key.decode()!r} entry, so it is not a CIFAR pickle; copy the file "
                    "again")


def _names(meta: dict, key: bytes, name: str) -> tuple[str, ...]:
    """The class names stored under `key` of a meta file, as str."""
    names = _field(meta, key, name)
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{name}: {key.decode()!r} is not a list of names; copy the file again")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _batch(data: bytes, name: str, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) of one data file, checked."""
    d = load_pickle(data, name)
    images = _field(d, b"data", name)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == IMAGE_BYTES):
        shape = getattr(images, "shape", None)
        raise DataError(
            f"{name}: 'data' is {type(images).__name__} {getattr(images, 'dtype', '')} of shape {shape}; "
            f"CIFAR needs a uint8 (N, {IMAGE_BYTES}) array (3x32x32 RGB images): copy or download the "
            "file again"
        )
    labels = np.asarray(_field(d, label_key, name))
    if labels.ndim != 1 or len(labels) != len(images) or (len(labels) and labels.dtype.kind not in "iu"):
        raise DataError(
            f"{name}: {label_key.decode()!r} is not one integer label per image ({labels.shape} labels of "
            f"kind {labels.dtype}, {len(images)} images); copy or download the file again"
        )
    labels = labels.astype(np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(
            f"{name}: label {bad[0]} is out of range 0..{num_classes - 1} ({len(bad)} such labels); the file "
            "does not match its meta file: copy or download the data again"
        )
    return images.reshape(-1, *IMAGE_SHAPE), labels


def read_official(dataset: str, labels: str, read: Callable[[str], bytes], describe: Callable[[str], str]):
    """(train_images, train_labels, test_images, test_labels, classes) of an official layout.

    read(file_name) gives the bytes of one file of the layout (and raises DataError naming it when missing);
    describe(file_name) is that file as shown in messages.
    """
    if dataset == "cifar10":
        meta_name, names_key, label_key = "batches.meta", b"label_names", b"labels"
        train_files, test_file = CIFAR10_TRAIN_FILES, "test_batch"
    else:
        meta_name, test_file, train_files = "meta", "test", ("train",)
        names_key, label_key = (b"fine_label_names", b"fine_labels") if labels == "fine" else (
            b"coarse_label_names", b"coarse_labels")
    classes = _names(load_pickle(read(meta_name), describe(meta_name)), names_key, describe(meta_name))
    train = [_batch(read(f), describe(f), label_key, len(classes)) for f in train_files]
    test_images, test_labels = _batch(read(test_file), describe(test_file), label_key, len(classes))
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return train_images, train_labels, test_images, test_labels, classes


def read_folder(folder: Path, dataset: str, labels: str) -> Cifar:
    """The official pickle folder `folder`, whose files data/locate.py has found all there."""
    read, describe = (lambda n: (folder / n).read_bytes()), (lambda n: str(folder / n))
    arrays = read_official(dataset, labels, read, describe)
    return Cifar(*arrays, f"{folder} (official {TITLES[dataset]} pickles)")


def read_members(members: Mapping[str, bytes], prefix: str, archive: Path, dataset: str, labels: str) -> Cifar:
    """The official pickles under `prefix` of an archive read into `members`; a missing file names itself."""
    title = TITLES[dataset]

    def read(name: str) -> bytes:
        if prefix + name not in members:
            raise DataError(
                f"{archive}:{prefix}{name}: missing from the archive, which holds an incomplete copy of the "
                f"{title} pickles (it needs {', '.join(PICKLE_FILES[dataset])}): copy the archive again"
            )
        return members[prefix + name]

    arrays = read_official(dataset, labels, read, lambda n: f"{archive}:{prefix}{n}")
    return Cifar(*arrays, f"{archive}:{prefix} (official {title} pickles in an archive)")


def find_official_prefix(names: Iterable[str], dataset: str) -> str | None:
    """The folder prefix ("", "dir/" or "a/b/") of an archive listing that holds `dataset`'s pickles.

    A folder qualifies when it holds any of the layout's files, so an incomplete copy is found and then
    reported by the missing file's name; the folder with the most of them wins.
    """
    wanted = set(PICKLE_FILES[dataset])
    counts: dict[str, int] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        if base in wanted and folder.count("/") < 2:
            prefix = folder + "/" if folder else ""
            counts[prefix] = counts.get(prefix, 0) + 1
    return max(counts, key=lambda p: (counts[p], -len(p))) if counts else None
