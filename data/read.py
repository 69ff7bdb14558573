"""Read: decode the copy that data/locate.py found into uint8 arrays, through the module that owns its format.

    pickles       data/pickles.py read_folder    the restricted unpickler, file by file
    image folder  data/folders.py read_folder    PNG/JPEG, class by class
    archive       data/folders.py read_archive   every member into memory (never extracted), then
                  data/pickles.py read_members   the official pickles, at the top or up to two folders down,
                  data/folders.py read_members   else an image folder, at the top or in one folder

An archive says which layout it holds only once it is read, so that choice is made here; one that holds
neither is an error listing both (and the other dataset's pickles, when those are what it holds).
"""

from collections.abc import Mapping
from pathlib import Path

from data import folders, pickles
from data.cifar import TITLES, Cifar, other_dataset
from data.errors import DataError
from data.locate import IMAGE_FOLDER, PICKLES, Found
from data.pickles import DATASET_DIRS, PICKLE_FILES


def read(found: Found, labels: str) -> Cifar:
    """The arrays, class names and source of `found`, with `labels` CIFAR-100's fine or coarse label set."""
    if found.kind == PICKLES:
        return pickles.read_folder(found.path, found.dataset, labels)
    if found.kind == IMAGE_FOLDER:
        return folders.read_folder(found.path, found.tree, found.dataset, labels)
    return read_archive_copy(found.path, found.dataset, labels)


def read_archive_copy(path: Path, dataset: str, labels: str) -> Cifar:
    """Read an archive and decode whichever layout it holds: the official pickles first."""
    members = folders.read_archive(path)
    prefix = pickles.find_official_prefix(members, dataset)
    if prefix is not None:
        return pickles.read_members(members, prefix, path, dataset, labels)
    prefix = folders.find_image_prefix(members, str(path))
    if prefix is not None:
        return folders.read_members(members, prefix, path, dataset, labels)
    raise DataError(neither_layout(path, dataset, members))


def neither_layout(path: Path, dataset: str, members: Mapping[str, bytes]) -> str:
    """The one-line message for an archive holding no copy of `dataset`, naming the other dataset if it is that."""
    other = other_dataset(dataset)
    hint = (f"; it holds the {TITLES[other]} pickles: did you mean dataset={other}?"
            if pickles.find_official_prefix(members, other) is not None else "")
    return (
        f"{path}: holds neither the official {TITLES[dataset]} pickles ({DATASET_DIRS[dataset]}/ with "
        f"{', '.join(PICKLE_FILES[dataset])}) nor an image folder (train/<class>/*.png|jpg and "
        f"test/<class>/..., at its top or inside one folder){hint}"
    )
