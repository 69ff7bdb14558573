"""Read: image folders, loose or inside an archive, and the archives themselves.

    train/<class>/<image>.png|.jpg      classes = the sorted folder names (label k = k-th name)
    test/<class>/<image>.png|.jpg       the same class folders as train/

An archive (.tar, .tar.gz, .tgz, .zip) may hold this folder at its top or inside one folder. Archives
are read member by member into memory and never extracted, so no member name can write anywhere.
Within a class, images are taken in natural file-name order (2.png before 10.png), which for
zero-padded names such as the official-order NNNN.jpg is plain sorted order. Images are decoded with
torchvision.io.decode_image and must be 3x32x32 (RGB, no alpha): anything else is rejected, not
converted. The class count is checked before the first image is decoded: a wrong dataset= then costs
no decoding (seconds for 60,000 JPEGs).
"""

import re
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from data.check import check_class_count
from data.cifar import IMAGE_SHAPE, SPLITS, Cifar
from data.errors import DataError, one_line
from data.progress import DecodeProgress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
# torchvision 0.29 warns on every decode that TorchCodec will take over its image codecs; decode_image
# still works and needs no other dependency, so the warning is silenced (once per folder, not per image).
TORCHVISION_CODEC_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"

# split -> class name -> the keys of its image files, in order
Tree = dict[str, dict[str, list[str]]]


def _hidden(name: str) -> bool:
    """Files and folders that tools leave behind (.DS_Store, ._x.png, __MACOSX/, our own cache folder)."""
    return name.startswith(".") or name == "__MACOSX"


def natural_key(name: str) -> list:
    """Sort key that orders the digit runs of a name as numbers: img2.png < img10.png."""
    parts = re.split(r"(\d+)", name, flags=re.ASCII)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def is_archive(path: Path) -> bool:
    """Whether `path` is a file to read as an archive: by its suffix, else by its first bytes."""
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    return path.is_file() and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path))


def read_archive(path: Path) -> dict[str, bytes]:
    """Every regular, non-hidden file of a tar or zip archive: {member path ("a/b/c", no "./"): bytes}."""
    members: dict[str, bytes] = {}

    def keep(name: str) -> str | None:
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        return "/".join(parts) if parts and not any(_hidden(p) for p in parts) else None

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and (name := keep(info.filename)):
                        members[name] = archive.read(info)
        else:
            with tarfile.open(path, "r:*") as archive:
                for info in archive:  # one pass in stored order: a .tar.gz is decompressed once
                    if info.isfile() and (name := keep(info.name)):
                        members[name] = archive.extractfile(info).read()
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: cannot read this archive ({type(e).__name__}: {one_line(e)}); it is truncated, "
            "corrupt or not a .tar/.tar.gz/.tgz/.zip: copy it again"
        ) from e
    return members


def find_image_prefix(names: Iterable[str], where: str) -> str | None:
    """The prefix ("" or "dir/") under which an archive listing holds train/<class>/ and test/<class>/."""
    splits_at: dict[str, set[str]] = {}
    for name in names:
        parts = name.split("/")
        for depth in (0, 1):
            if len(parts) >= depth + 3 and parts[depth] in SPLITS:
                prefix = "".join(p + "/" for p in parts[:depth])
                splits_at.setdefault(prefix, set()).add(parts[depth])
    complete = [p for p, found in splits_at.items() if found == set(SPLITS)]
    if len(complete) == 1:
        return complete[0]
    if len(complete) > 1:
        if "" in complete:
            return ""
        raise DataError(
            f"{where}: holds several image folders ({', '.join(sorted(complete))}); keep one train/ + "
            "test/ pair in the archive, or point data=<path> at the one to use"
        )
    if splits_at:  # a train/ without its test/, or the other way round
        prefix, (have,) = next(iter(splits_at.items()))
        missing = ({*SPLITS} - {have}).pop()
        raise DataError(
            f"{where}: has {prefix}{have}/<class>/ but no {prefix}{missing}/<class>/; an image folder "
            "needs both train/ and test/ with the same class folders"
        )
    return None


def tree_from_dir(root: Path) -> Tree:
    """The image files of the image folder at `root` (keys are full paths), without reading them."""
    tree: Tree = {}
    for split in SPLITS:
        split_dir = root / split
        tree[split] = {}
        for class_dir in sorted(split_dir.iterdir()):
            if not class_dir.is_dir() or _hidden(class_dir.name):
                continue  # loose files beside the class folders (a README, say) belong to no class
            files = []
            for entry in class_dir.iterdir():
                if _hidden(entry.name):
                    continue
                if not entry.is_file() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
                    raise DataError(
                        f"{entry}: unexpected {'folder' if entry.is_dir() else 'file'} in a class folder; "
                        f"class folders hold only {'/'.join(IMAGE_SUFFIXES)} images: move it out"
                    )
                files.append(entry)
            tree[split][class_dir.name] = [str(f) for f in sorted(files, key=lambda f: natural_key(f.name))]
    return tree


def tree_from_members(names: Iterable[str], prefix: str, where: str) -> Tree:
    """The image files of the image folder under `prefix` of an archive listing (keys are member names)."""
    tree: Tree = {split: {} for split in SPLITS}
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        if len(parts) < 3 or parts[0] not in SPLITS:
            continue  # files outside train/<class>/ and test/<class>/
        if len(parts) > 3 or not parts[2].lower().endswith(IMAGE_SUFFIXES):
            raise DataError(
                f"{where}:{name}: unexpected file in a class folder; class folders hold only "
                f"{'/'.join(IMAGE_SUFFIXES)} images directly: remove it from the archive"
            )
        tree[parts[0]].setdefault(parts[1], []).append(name)
    for classes in tree.values():
        for files in classes.values():
            files.sort(key=lambda n: natural_key(n.rpartition("/")[2]))
    return tree


def decode_png_jpg(data: bytes, name: str) -> np.ndarray:
    """One PNG or JPEG file's bytes -> uint8 (3, 32, 32); `name` is the file as shown in messages."""
    # Imported here: torchvision.io takes over a second to import and only image folders need it.
    from torchvision.io import ImageReadMode, decode_image

    if not data:
        raise DataError(f"{name}: the image file is empty; replace it or delete it")
    try:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = decode_image(encoded, mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as e:
        raise DataError(
            f"{name}: cannot decode this image ({one_line(e)}); it is corrupt or not a PNG/JPEG: "
            "replace it or delete it"
        ) from e
    if tuple(image.shape) != IMAGE_SHAPE:
        C, H, W = image.shape
        raise DataError(
            f"{name}: image is {H}x{W} with {C} channel(s); CIFAR images are 32x32 RGB (3 channels, "
            "no alpha): convert or remove it"
        )
    return image.numpy()


def decode_tree(tree: Tree, read: Callable[[str], bytes], describe: Callable[[str], str], where: str,
                source: str, progress: DecodeProgress):
    """(train_images, train_labels, test_images, test_labels, classes) of an image-folder tree.

    read(key) gives a file's bytes and describe(key) its name in messages; `where` is what messages put
    before train/ and test/ ("/data/", "data.tar.gz:", "data.tar.gz:top/"); `source` is the copy as
    `progress` names it. The tree is checked whole before the first image is decoded.
    """
    classes = sorted(tree["train"])
    if not classes:
        raise DataError(f"{where}train/ holds no class folders; put the images in train/<class>/ and "
                        "test/<class>/")
    if set(tree["test"]) != set(classes):
        only_train = ", ".join(sorted(set(classes) - set(tree["test"]))) or "-"
        only_test = ", ".join(sorted(set(tree["test"]) - set(classes))) or "-"
        raise DataError(
            f"{where}train/ and {where}test/ hold different class folders (only in train: {only_train}; "
            f"only in test: {only_test}); both must hold the same class folders"
        )
    splits = [split_files(tree, split, classes, where) for split in SPLITS]  # [(keys, labels)] per split
    out = []
    with progress.decoding(sum(len(keys) for keys, _ in splits), source) as advance, warnings.catch_warnings():
        warnings.filterwarnings("ignore", TORCHVISION_CODEC_DEPRECATION, DeprecationWarning)
        for keys, labels in splits:
            # One image at a time (about 0.1 ms each): a thread pool measured slower on 2 cores.
            images = np.empty((len(keys), *IMAGE_SHAPE), np.uint8)
            for i, key in enumerate(keys):
                images[i] = decode_png_jpg(read(key), describe(key))
                advance()
            out += [images, np.asarray(labels, np.int64)]
    return (*out, tuple(classes))


def split_files(tree: Tree, split: str, classes: list[str], where: str) -> tuple[list[str], list[int]]:
    """The image keys of one split, class by class, and their labels; an empty class folder is an error."""
    keys, labels = [], []
    for label, name in enumerate(classes):
        files = tree[split][name]
        if not files:
            raise DataError(f"{where}{split}/{name}/ holds no {'/'.join(IMAGE_SUFFIXES)} images; "
                            "add some or remove the folder")
        keys += files
        labels += [label] * len(files)
    return keys, labels


def read_folder(root: Path, tree: Tree, dataset: str, labels: str, progress: DecodeProgress) -> Cifar:
    """The image folder at `root`, whose files data/locate.py listed in `tree` (keys are full paths)."""
    source = f"{root} (image folder)"
    check_tree_classes(tree, dataset, labels, source)
    arrays = decode_tree(tree, lambda k: Path(k).read_bytes(), str, f"{root}/", source, progress)
    return Cifar(*arrays, source)


def read_members(members: Mapping[str, bytes], prefix: str, archive: Path, dataset: str, labels: str,
                 progress: DecodeProgress) -> Cifar:
    """The image folder under `prefix` of an archive read into `members` (find_image_prefix found it)."""
    tree = tree_from_members(members, prefix, str(archive))
    source = f"{archive}:{prefix} (image folder in an archive)"
    check_tree_classes(tree, dataset, labels, source)
    arrays = decode_tree(tree, members.__getitem__, lambda k: f"{archive}:{k}", f"{archive}:{prefix}", source,
                         progress)
    return Cifar(*arrays, source)


def check_tree_classes(tree: Tree, dataset: str, labels: str, source: str) -> None:
    """The class count of `tree`, checked before anything is decoded; an empty train/ is left to decode_tree,
    whose message says what to put there."""
    if tree["train"]:
        check_class_count(dataset, labels, sorted(tree["train"]), source)
