"""Read: decode the copy that data/locate.py found into uint8 arrays, through the module that owns its format.

    pickles       data/pickles.py read_folder    the restricted unpickler, file by file
    image folder  data/folders.py read_folder    PNG/JPEG, class by class
    archive       data/folders.py read_archive   every member into memory (never extracted), then
                  data/pickles.py read_members   the official pickles, at the top or up to two folders down,
                  data/folders.py read_members   else an image folder, at the top or in one folder

An archive says which layout it holds only once it is read, so that choice is made here; one that holds
neither is an error listing both (and the other dataset's pickles, when those are what it holds).
"""

from pathlib import Path

from data import folders, pickles
from data.cifar import TITLES, Cifar, other_dataset
from data.errors import DataError, DatasetMixUp
from data.locate import IMAGE_FOLDER, PICKLES, Found
from data.pickles import DATASET_DIRS, PICKLE_FILES
from data.progress import DecodeProgress


def read(found: Found, labels: str, progress: DecodeProgress) -> Cifar:
    """The arrays, class names and source of `found`, with `labels` CIFAR-100's fine or coarse label set;
    decoding images reports to `progress`."""
    if found.kind == PICKLES:
        return pickles.read_folder(found.path, found.dataset, labels)
    if found.kind == IMAGE_FOLDER:
        return folders.read_folder(found.path, found.tree, found.dataset, labels, progress)
    return read_archive_copy(found.path, found.dataset, labels, progress)


def read_archive_copy(path: Path, dataset: str, labels: str, progress: DecodeProgress) -> Cifar:
    """Read an archive and decode whichever layout it holds: the official pickles first."""
    members = folders.read_archive(path)
    prefix = pickles.find_official_prefix(members, dataset)
    if prefix is not None:
        return pickles.read_members(members, prefix, path, dataset, labels)
    prefix = folders.find_image_prefix(members, str(path))
    if prefix is not None:
        return folders.read_members(members, prefix, path, dataset, labels, progress)
    other = other_dataset(dataset)
    if pickles.find_official_prefix(members, other) is not None:
        raise DatasetMixUp(neither_layout(path, dataset, other), str(path), f"holds the {TITLES[other]} pickles")
    raise DataError(neither_layout(path, dataset))


def neither_layout(path: Path, dataset: str, other: str | None = None) -> str:
    """The one-line message for an archive holding no copy of `dataset`; `other`: the other dataset's pickles,
    which it holds."""
    hint = f"; it holds the {TITLES[other]} pickles: did you mean dataset={other}?" if other else ""
    return (
        f"{path}: holds neither the official {TITLES[dataset]} pickles ({DATASET_DIRS[dataset]}/ with "
        f"{', '.join(PICKLE_FILES[dataset])}) nor an image folder (train/<class>/*.png|jpg and "
        f"test/<class>/..., at its top or inside one folder){hint}"
    )
