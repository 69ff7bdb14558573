"""Locate: which copy of CIFAR-10/100 is under `root`, described without reading any of it.

`root` (the entry points' `data=`) may be:
  - a folder holding the official pickle folder (cifar-10-batches-py/ or cifar-100-python/), or that
    folder itself;
  - a folder holding an image folder: train/<class>/*.png|jpg and test/<class>/*.png|jpg;
  - a folder holding the official archive (cifar-10-python.tar.gz or cifar-100-python.tar.gz);
  - an archive file (.tar, .tar.gz, .tgz, .zip) of any of these layouts, at its top or in one folder.
Looked for in that order. When none is there and download=True, torchvision downloads the official
archive into the folder (and checks its md5); it is then read like any other copy, never through
torchvision's dataset classes (they unpickle without restriction, and their md5 checks would refuse the
synthetic files the tests write). Nothing is downloaded into a folder that holds the other dataset in one
of these layouts (the cifar10/cifar100 mix-up: a DatasetMixUp instead), and a download that fails removes
what it wrote: the partial archive, and the folders made for it (a mistyped data= leaves nothing behind).

What is found is a Found: the kind of copy, its path and every file it is read from, plain data that the
cache signs (data/cache.py) and the readers read (data/read.py). An archive is not opened here: which
layout it holds is for the reader to see. Only what must hold before the cache is consulted is rejected
here: a pickle folder with a file missing (the signature stats every file) and an image folder with stray
files or half its splits.
"""

import os
from pathlib import Path
from typing import NamedTuple

from data import folders
from data.cifar import SPLITS, TITLES, other_dataset
from data.errors import DataError, DatasetMixUp, one_line
from data.pickles import DATASET_DIRS, PICKLE_FILES

OFFICIAL_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
# The kinds of copy. The names are part of the cache signature: renaming one rebuilds every cache.
PICKLES, IMAGE_FOLDER, ARCHIVE = "pickles", "image folder", "archive"


class Found(NamedTuple):
    """A copy of `dataset`, before anything in it is decoded."""

    kind: str  # PICKLES | IMAGE_FOLDER | ARCHIVE
    path: Path  # the pickle folder, the image folder's root, or the archive file
    dataset: str
    files: tuple[Path, ...]  # every file the copy is read from: what the cache signature covers
    tree: folders.Tree | None = None  # an image folder's files by split and class, listed once


def locate(dataset: str, root: Path, download: bool) -> Found:
    """The first copy of the module doc at `root`, downloaded first when there is none and `download`."""
    found = find(dataset, root)
    if found is None and download:
        refuse_beside_other(dataset, root)
        fetch_official_archive(dataset, root)
        found = find(dataset, root)
        if found is None:
            raise DataError(f"downloading {TITLES[dataset]} into {root} left no "
                            f"{DATASET_DIRS[dataset]}/ there; copy the data there yourself and pass "
                            "data=<path>")
    if found is None:
        other = other_copy(dataset, root)
        if other is None:
            raise DataError(not_found(dataset, root))
        raise DatasetMixUp(not_found(dataset, root, other), str(other), f"holds {TITLES[other_dataset(dataset)]}")
    return found


def find(dataset: str, root: Path) -> Found | None:
    """The first layout of the module doc found at `root`, or None."""
    if root.is_file():
        if not folders.is_archive(root):
            raise DataError(f"{root}: is a file but not an archive (.tar, .tar.gz, .tgz, .zip); point "
                            f"data=<path> at a folder holding {TITLES[dataset]} or at an archive of one")
        return Found(ARCHIVE, root, dataset, (root,))
    if not root.is_dir():
        return None
    official = root / DATASET_DIRS[dataset]
    if official.is_dir():
        return official_folder(dataset, official)
    if any((root / f).is_file() for f in PICKLE_FILES[dataset]):
        return official_folder(dataset, root)  # root is the pickle folder itself
    has = {split: (root / split).is_dir() for split in SPLITS}
    if all(has.values()):
        return image_folder(dataset, root)
    if any(has.values()):
        have, missing = ("train", "test") if has["train"] else ("test", "train")
        raise DataError(f"{root}: has {have}/ but no {missing}/; an image folder needs both "
                        "train/<class>/ and test/<class>/ with the same class folders")
    archive = root / OFFICIAL_ARCHIVES[dataset]
    if archive.is_file():
        return Found(ARCHIVE, archive, dataset, (archive,))
    return None


def official_folder(dataset: str, folder: Path) -> Found:
    """The official pickle layout in `folder`; a missing file is an error that names it."""
    names = PICKLE_FILES[dataset]
    for name in names:
        if not (folder / name).is_file():
            raise DataError(
                f"{folder / name}: missing; the {TITLES[dataset]} pickle folder {folder} is incomplete "
                f"(it needs {', '.join(names)}): copy it again, or delete it and set download=true"
            )
    return Found(PICKLES, folder, dataset, tuple(folder / n for n in names))


def image_folder(dataset: str, root: Path) -> Found:
    """The image folder at `root`, its files listed (a stray file in a class folder is an error)."""
    tree = folders.tree_from_dir(root)
    files = tuple(Path(f) for classes in tree.values() for fs in classes.values() for f in fs)
    return Found(IMAGE_FOLDER, root, dataset, files, tree)


def other_copy(dataset: str, root: Path) -> Path | None:
    """The other dataset's copy in the folder `root`, where find looks for `dataset`'s: its pickle folder, `root`
    as that folder, or its official archive; else None. (An image folder or an archive is found for either
    dataset, and its class count or contents tell which it is.)"""
    if not root.is_dir():
        return None
    other = other_dataset(dataset)
    if (root / DATASET_DIRS[other]).is_dir():
        return root / DATASET_DIRS[other]
    if any((root / f).is_file() for f in PICKLE_FILES[other]):
        return root
    archive = root / OFFICIAL_ARCHIVES[other]
    return archive if archive.is_file() else None


def not_found(dataset: str, root: Path, other_copy: Path | None = None) -> str:
    """The one-line message for data that is not there: what was looked for, and the two ways to fix it (and
    the dataset=, when `other_copy` is the other dataset's copy at `root`)."""
    title, other = TITLES[dataset], other_dataset(dataset)
    where = f"at {root} (no such file or folder)" if not root.exists() else f"in {root}"
    hint = f"; {other_copy} holds {TITLES[other]}: did you mean dataset={other}?" if other_copy else ""
    into = " into a new folder" if other_copy else ""  # never beside the other dataset: refuse_beside_other
    return (
        f"no {title} data {where}: looked for the official pickles {root / DATASET_DIRS[dataset]}/ "
        f"({', '.join(PICKLE_FILES[dataset])}), an image folder {root}/train/<class>/ + "
        f"{root}/test/<class>/ (.png/.jpg), and the official archive {root / OFFICIAL_ARCHIVES[dataset]}; "
        f"point data=<path> at a copy (one of these folders, the pickle folder itself, or a "
        f".tar/.tar.gz/.tgz/.zip archive of one) or set download=true to fetch {title}{into}{hint}"
    )


def refuse_beside_other(dataset: str, root: Path) -> None:
    """Before a download: a folder holding the other dataset is a mix-up, never a place to fetch `dataset` into."""
    found = other_copy(dataset, root)
    if found is not None:
        title, other = TITLES[dataset], other_dataset(dataset)
        raise DatasetMixUp(
            f"{found} holds {TITLES[other]}, not {title}: did you mean dataset={other}? {title} is never "
            f"downloaded into a folder holding another dataset: to download it, point data=<path> at a new folder",
            str(found), f"holds {TITLES[other]}",
        )


def fetch_official_archive(dataset: str, root: Path) -> None:
    """Fetch the official archive into `root` through torchvision, which checks its md5; on failure (or Ctrl-C),
    remove what the download wrote: the partial archive and the folders made for it.

    Only the archive is fetched: it is then read like any local copy, through the restricted unpickler,
    never by torchvision's dataset classes (which would unpickle it with the unrestricted pickle module).
    """
    from torchvision.datasets import CIFAR10, CIFAR100, utils  # imported here: only downloads need it

    official = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset]
    archive = root / official.filename
    made = missing_folders(root)
    wrote_archive = not os.path.lexists(archive)
    try:
        root.mkdir(parents=True, exist_ok=True)
        utils.download_url(official.url, str(root), filename=official.filename, md5=official.tgz_md5)
    except BaseException as e:
        remove_download(archive if wrote_archive else None, made)
        if not isinstance(e, Exception):
            raise  # Ctrl-C: stopped, and nothing half-written is left
        # Network, disk and checksum failures all mean the same here.
        raise DataError(download_failed(dataset, root, e, typo=bool(made))) from e


def missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist, deepest first: what mkdir(parents=True) makes."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def remove_download(archive: Path | None, made: list[Path]) -> None:
    """Remove a failed download's archive (when it wrote one) and the folders made for it, deepest first; a
    folder that something else has since put a file in is kept."""
    try:
        if archive is not None:
            archive.unlink(missing_ok=True)
        for folder in made:
            folder.rmdir()
    except OSError:
        pass  # kept: not ours alone, or not removable; the error about the download matters more


def download_failed(dataset: str, root: Path, e: BaseException, typo: bool) -> str:
    """The one-line message for a failed download into `root`; `typo`: `root` did not exist (a mistyped data=?)."""
    title, why = TITLES[dataset], f"{type(e).__name__}: {one_line(e)}"
    if typo:
        return (f"no {title} data at {root} (no such file or folder), and downloading {title} there failed "
                f"({why}); if data= is mistyped, point data=<path> at your copy (with download=false a wrong "
                "path fails at once, fetching nothing); else check the network")
    return (f"downloading {title} into {root} failed ({why}); check the network, or copy the data there "
            "yourself and pass data=<path> (download=false reads local copies only, never fetching)")
