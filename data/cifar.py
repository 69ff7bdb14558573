"""load_cifar: find CIFAR-10/100 under a path, decode it once into a cache, check it, return uint8 arrays.

`root` (the entry points' `data=`) may be:
  - a folder holding the official pickle folder (cifar-10-batches-py/ or cifar-100-python/), or that
    folder itself;
  - a folder holding an image folder: train/<class>/*.png|jpg and test/<class>/*.png|jpg;
  - a folder holding the official archive (cifar-10-python.tar.gz or cifar-100-python.tar.gz);
  - an archive file (.tar, .tar.gz, .tgz, .zip) of any of these layouts, at its top or in one folder.
Looked for in that order. When none is there and download=True, torchvision downloads the official
archive into the folder (and checks its md5); it is then read like any other copy, never through
torchvision's dataset classes (they unpickle without restriction, and their md5 checks would refuse the
synthetic files the tests write).

The decoded arrays are cached in `.cifar-zoo-cache/` beside the data (inside a root folder, or beside a
root archive) when that folder is writable, else in $XDG_CACHE_HOME/cifar-zoo (~/.cache/cifar-zoo);
`cache_dir` overrides both. See data/cache.py for when a cache is reused.
"""

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data import cache, folders, pickles
from data.errors import DataError
from data.pickles import DATASET_DIRS, IMAGE_SHAPE, PICKLE_FILES

DATASETS = ("cifar10", "cifar100")
LABEL_SETS = ("fine", "coarse")  # CIFAR-100's 100 classes, or its 20 superclasses
NUM_CLASSES = {("cifar10", "fine"): 10, ("cifar100", "fine"): 100, ("cifar100", "coarse"): 20}
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
OFFICIAL_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CACHE_DIR_NAME = ".cifar-zoo-cache"


class Cifar(NamedTuple):
    """A dataset's splits: images uint8 (N, 3, 32, 32) RGB, labels int64 (N,) indexing `classes`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str  # where the arrays came from, for logs and results files


class _Layout(NamedTuple):
    """A copy of the data found under `root`, before decoding."""

    kind: str  # "pickles" | "image folder" | "archive"
    files: tuple[Path, ...]  # what the cache signature covers
    decode: Callable[[], tuple]  # -> (train_images, train_labels, test_images, test_labels, classes, source)
    extra: tuple = ()  # more of what the signature covers (the class folders of an image folder)


def load_cifar(
    dataset: str, root: str | os.PathLike, download: bool = False, labels: str = "fine", *,
    cache_dir: str | os.PathLike | None = None,
) -> Cifar:
    """Load `dataset` ("cifar10" or "cifar100") from `root` through the cache; see the module doc."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset={dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if (dataset, labels) not in NUM_CLASSES:
        valid = ", ".join(f"labels={lab}" for d, lab in NUM_CLASSES if d == dataset)
        raise DataError(f"labels={labels!r} is not valid for dataset={dataset}; use {valid} "
                        "(coarse: CIFAR-100's 20 superclasses)")
    root = Path(root).expanduser().absolute()
    layout = _find_layout(dataset, labels, root)
    if layout is None and download:
        _download(dataset, root)
        layout = _find_layout(dataset, labels, root)
        if layout is None:
            raise DataError(f"downloading {TITLES[dataset]} into {root} left no "
                            f"{DATASET_DIRS[dataset]}/ there; copy the data there yourself and pass "
                            "data=<path>")
    if layout is None:
        raise DataError(_not_found(dataset, root))

    sig = cache.signature(layout.files, dataset=dataset, labels=labels, layout=layout.kind,
                          extra=layout.extra)
    cache_file = _cache_file(root, dataset, labels, cache_dir)
    found = cache.load(cache_file, sig)
    if found is None:
        found = layout.decode()
        _check(dataset, labels, found)
        try:
            cache.save(cache_file, sig, found[:4], found[4], found[5])
        except OSError as e:  # an unwritable cache costs time, not correctness
            warnings.warn(f"could not write the data cache {cache_file} ({e}); set cache_dir to a "
                          "writable folder", stacklevel=2)
    else:
        _check(dataset, labels, found)  # cheap, and a cache is a file like any other
    return Cifar(*found)


def _find_layout(dataset: str, labels: str, root: Path) -> _Layout | None:
    """The first layout of the module doc found at `root`, or None."""
    title = TITLES[dataset]
    if root.is_file():
        if not folders.is_archive(root):
            raise DataError(f"{root}: is a file but not an archive (.tar, .tar.gz, .tgz, .zip); point "
                            f"data=<path> at a folder holding {title} or at an archive of one")
        return _Layout("archive", (root,), lambda: _decode_archive(dataset, labels, root))
    if not root.is_dir():
        return None
    official = root / DATASET_DIRS[dataset]
    if official.is_dir():
        return _official_dir(dataset, labels, official)
    if any((root / f).is_file() for f in PICKLE_FILES[dataset]):
        return _official_dir(dataset, labels, root)  # root is the pickle folder itself
    has = {split: (root / split).is_dir() for split in folders.SPLITS}
    if all(has.values()):
        tree = folders.tree_from_dir(root)
        if tree["train"]:  # checked before decoding; an empty train/ is reported by decode_tree
            _check_classes(dataset, labels, sorted(tree["train"]), f"{root} (image folder)")
        files = tuple(Path(f) for classes in tree.values() for fs in classes.values() for f in fs)
        return _Layout(
            "image folder", files, extra=tuple((s, tuple(sorted(c))) for s, c in tree.items()),
            decode=lambda: (*folders.decode_tree(tree, lambda k: Path(k).read_bytes(), str, f"{root}/"),
                            f"{root} (image folder)"),
        )
    if any(has.values()):
        have, missing = ("train", "test") if has["train"] else ("test", "train")
        raise DataError(f"{root}: has {have}/ but no {missing}/; an image folder needs both "
                        "train/<class>/ and test/<class>/ with the same class folders")
    archive = root / OFFICIAL_ARCHIVES[dataset]
    if archive.is_file():
        return _Layout("archive", (archive,), lambda: _decode_archive(dataset, labels, archive))
    return None


def _official_dir(dataset: str, labels: str, folder: Path) -> _Layout:
    """The official pickle layout in `folder`; a missing file is an error that names it."""
    names = PICKLE_FILES[dataset]
    for name in names:
        if not (folder / name).is_file():
            raise DataError(
                f"{folder / name}: missing; the {TITLES[dataset]} pickle folder {folder} is incomplete "
                f"(it needs {', '.join(names)}): copy it again, or delete it and set download=true"
            )
    def decode() -> tuple:
        read, describe = (lambda n: (folder / n).read_bytes()), (lambda n: str(folder / n))
        arrays = pickles.read_official(dataset, labels, read, describe)
        return (*arrays, f"{folder} (official {TITLES[dataset]} pickles)")

    return _Layout("pickles", tuple(folder / n for n in names), decode)


def _decode_archive(dataset: str, labels: str, path: Path) -> tuple:
    """Read an archive and decode whichever layout it holds."""
    title, members = TITLES[dataset], folders.read_archive(path)
    prefix = pickles.find_official_prefix(members, dataset)
    if prefix is not None:
        def read(name: str) -> bytes:
            if prefix + name not in members:
                raise DataError(
                    f"{path}:{prefix}{name}: missing from the archive, which holds an incomplete copy of the "
                    f"{title} pickles (it needs {', '.join(PICKLE_FILES[dataset])}): copy the archive again"
                )
            return members[prefix + name]

        arrays = pickles.read_official(dataset, labels, read, lambda n: f"{path}:{prefix}{n}")
        return (*arrays, f"{path}:{prefix} (official {title} pickles in an archive)")
    prefix = folders.find_image_prefix(members, str(path))
    if prefix is not None:
        tree = folders.tree_from_members(members, prefix, str(path))
        source = f"{path}:{prefix} (image folder in an archive)"
        if tree["train"]:
            _check_classes(dataset, labels, sorted(tree["train"]), source)
        arrays = folders.decode_tree(tree, members.__getitem__, lambda k: f"{path}:{k}", f"{path}:{prefix}")
        return (*arrays, source)
    other = next(d for d in DATASETS if d != dataset)
    hint = (f"; it holds the {TITLES[other]} pickles: did you mean dataset={other}?"
            if pickles.find_official_prefix(members, other) is not None else "")
    raise DataError(
        f"{path}: holds neither the official {title} pickles ({DATASET_DIRS[dataset]}/ with "
        f"{', '.join(PICKLE_FILES[dataset])}) nor an image folder (train/<class>/*.png|jpg and "
        f"test/<class>/..., at its top or inside one folder){hint}"
    )


def _not_found(dataset: str, root: Path) -> str:
    """The one-line message for data that is not there: what was looked for, and the two ways to fix it."""
    title, other = TITLES[dataset], next(d for d in DATASETS if d != dataset)
    where = f"at {root} (no such file or folder)" if not root.exists() else f"in {root}"
    hint = (f"; {root / DATASET_DIRS[other]} holds {TITLES[other]}: did you mean dataset={other}?"
            if (root / DATASET_DIRS[other]).is_dir() else "")
    return (
        f"no {title} data {where}: looked for the official pickles {root / DATASET_DIRS[dataset]}/ "
        f"({', '.join(PICKLE_FILES[dataset])}), an image folder {root}/train/<class>/ + "
        f"{root}/test/<class>/ (.png/.jpg), and the official archive {root / OFFICIAL_ARCHIVES[dataset]}; "
        f"point data=<path> at a copy (one of these folders, the pickle folder itself, or a "
        f".tar/.tar.gz/.tgz/.zip archive of one) or set download=true to fetch {title}{hint}"
    )


def _download(dataset: str, root: Path) -> None:
    """Fetch the official archive into `root` through torchvision, which checks its md5.

    Only the archive is fetched: it is then read like any local copy, through the restricted unpickler,
    never by torchvision's dataset classes (which would unpickle it with the unrestricted pickle module).
    """
    from torchvision.datasets import CIFAR10, CIFAR100, utils  # imported here: only downloads need it

    official = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset]
    try:
        root.mkdir(parents=True, exist_ok=True)
        utils.download_url(official.url, str(root), filename=official.filename, md5=official.tgz_md5)
    except Exception as e:  # network, disk and checksum failures all mean the same here
        raise DataError(
            f"downloading {TITLES[dataset]} into {root} failed ({type(e).__name__}: "
            f"{pickles.one_line(e)}); check the network, or copy the data there yourself and pass "
            "data=<path>"
        ) from e


def _user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar-zoo"


def _cache_file(root: Path, dataset: str, labels: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the cache of `root` lives; named for the dataset, label set and root (hashed: no clashes)."""
    if cache_dir is None:
        beside = root if root.is_dir() else root.parent
        cache_dir = beside / CACHE_DIR_NAME if os.access(beside, os.W_OK) else _user_cache_dir()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{dataset}-{labels}-{root.name}-{tag}.npz"


def _check_classes(dataset: str, labels: str, classes: tuple[str, ...] | list[str], source: str) -> None:
    """Reject a class count that is not the dataset's (10 class folders for dataset=cifar100, say)."""
    want = NUM_CLASSES[(dataset, labels)]
    if len(classes) != want:
        setting = f"dataset={dataset}" + (f" labels={labels}" if dataset == "cifar100" else "")
        guess = {10: "dataset=cifar10", 100: "dataset=cifar100 labels=fine",
                 20: "dataset=cifar100 labels=coarse"}.get(len(classes))
        fix = f"did you mean {guess}?" if guess else f"point data=<path> at a copy of {TITLES[dataset]}"
        raise DataError(f"{source}: has {len(classes)} classes but {setting} has {want}; {fix}")


def _check(dataset: str, labels: str, found: tuple) -> None:
    """Reject arrays that are not `dataset`: the class count, image shapes and label ranges."""
    *arrays, classes, source = found
    _check_classes(dataset, labels, classes, source)
    want = NUM_CLASSES[(dataset, labels)]
    for split, (images, labels_) in zip(folders.SPLITS, (arrays[:2], arrays[2:]), strict=True):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or not len(images):
            raise DataError(f"{source}: {split} images are {images.dtype} {images.shape}, not uint8 "
                            "(N, 3, 32, 32) with N > 0; copy the data again")
        if labels_.shape != (len(images),) or labels_.dtype != np.int64:
            raise DataError(f"{source}: {split} labels are {labels_.dtype} {labels_.shape}, not int64 "
                            f"({len(images)},); copy the data again")
        if labels_.min() < 0 or labels_.max() >= want:
            raise DataError(f"{source}: a {split} label is out of range 0..{want - 1}; copy the data again")
