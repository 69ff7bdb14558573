"""Tiny synthetic CIFAR data written in the real file formats, for the data tests and end-to-end tests.

Images are learnable: every class has a prototype (a flat colour of its own plus a stripe pattern whose
direction and period depend on the class) and each image is its class prototype plus Gaussian noise, so
a small net beats chance within a few dozen SGD steps, with or without crops and flips. Prototypes depend
on the class only; the noise and the label order depend on the seed.

Every writer draws its arrays from synthetic_cifar(...) with the same arguments, so a test recomputes the
arrays it expects to load by calling synthetic_cifar itself:

    train (seed), test (seed + TEST_SEED_OFFSET)
    pickles: labels shuffled by the seed (as in the official files); image folders: sorted by class, file
    names numbered in that order, so the loaded order (class folders sorted, files in name order) is the
    generated order.
"""

import io
import pickle
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_FINE_PER_COARSE = 5  # synthetic superclasses: coarse = fine // 5 (the real grouping is not that)
IMAGE_SHAPE = (3, 32, 32)
N_TRAIN_PER_CLASS = 20  # the session fixtures' sizes (tests/conftest.py)
N_TEST_PER_CLASS = 10
TEST_SEED_OFFSET = 1000  # test images use seed + this, so they never repeat training noise
PROTOTYPE_SEED = 12345  # the class prototypes' generator: fixed, so train and test share prototypes
COLOUR_RANGE = (48.0, 208.0)  # pixel levels of a prototype's flat colour
STRIPE_AMPLITUDE = 40.0  # pixel levels
NOISE_STD = 24.0  # pixel levels of the per-image Gaussian noise
JPEG_QUALITY = 95


def class_prototype(k: int) -> np.ndarray:
    """float64 (3, 32, 32): class k's flat colour plus stripes (direction k % 4, period by k // 4)."""
    colour = np.random.default_rng(PROTOTYPE_SEED + k).uniform(*COLOUR_RANGE, size=(3, 1, 1))
    y, x = np.mgrid[0:32, 0:32]
    coordinate = (y, x, x + y, x - y)[k % 4]  # horizontal, vertical or diagonal stripes
    period = 4 + 2 * ((k // 4) % 4)  # pixels
    return colour + STRIPE_AMPLITUDE * np.sin(2 * np.pi * coordinate / period)


def make_images(labels, seed: int) -> np.ndarray:
    """uint8 (N, 3, 32, 32): for each label its class prototype plus noise drawn from `seed`."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return np.zeros((0, *IMAGE_SHAPE), np.uint8)
    prototypes = np.stack([class_prototype(k) for k in range(labels.max() + 1)])  # (K, 3, 32, 32)
    noise = np.random.default_rng(seed).normal(0.0, NOISE_STD, size=(len(labels), *IMAGE_SHAPE))
    return np.clip(np.rint(prototypes[labels] + noise), 0, 255).astype(np.uint8)


def synthetic_cifar(num_classes: int, n_per_class_train: int, n_per_class_test: int, seed: int = 0,
                    shuffle: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels): n_per_class images of every class, labels
    int64 shuffled by the seed (shuffle=True) or sorted by class (shuffle=False)."""
    out = []
    for n, split_seed in ((n_per_class_train, seed), (n_per_class_test, seed + TEST_SEED_OFFSET)):
        labels = np.repeat(np.arange(num_classes, dtype=np.int64), n)
        if shuffle:
            labels = np.random.default_rng(split_seed).permutation(labels)
        out += [make_images(labels, split_seed), labels]
    return tuple(out)


class _Python2Pickler(pickle._Pickler):
    """Writes pickles as python2's cPickle wrote the official files: bytes as python2 str opcodes
    (SHORT_BINSTRING/BINSTRING, read back as bytes with encoding="bytes"; python3's protocol 2 would call
    _codecs.encode instead) and numpy's array function under its python2 name numpy.core.multiarray."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if getattr(obj, "__name__", None) == "_reconstruct" and module.endswith("multiarray"):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def python2_pickle_bytes(obj) -> bytes:
    """`obj` pickled as the official CIFAR files are: protocol 2, python2 opcodes for bytes."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _write_pickle(obj, path: Path) -> None:
    path.write_bytes(python2_pickle_bytes(obj))


def _batch(images: np.ndarray, labels: np.ndarray, label_keys: tuple[bytes, ...], batch_label: str,
           extra: dict | None = None) -> dict:
    """One official data dict: b"data" uint8 (N, 3072), labels as lists of ints, names as bytes."""
    d = {b"batch_label": batch_label.encode(), b"data": images.reshape(len(images), -1)}
    for key in label_keys:
        d[key] = labels.tolist()
    d.update(extra or {})
    d[b"filenames"] = [f"synthetic_{i:05d}.png".encode() for i in range(len(images))]
    return d


def write_cifar10_pickles(root, n_per_class_train: int = N_TRAIN_PER_CLASS,
                          n_per_class_test: int = N_TEST_PER_CLASS, seed: int = 0) -> Path:
    """Write root/cifar-10-batches-py/ in the official format (5 data batches, test_batch, batches.meta);
    returns root, the path to pass as data=. Arrays: synthetic_cifar(10, ..., seed, shuffle=True)."""
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y, test_x, test_y = synthetic_cifar(10, n_per_class_train, n_per_class_test, seed)
    for i, part in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        batch = _batch(train_x[part], train_y[part], (b"labels",), f"training batch {i} of 5")
        _write_pickle(batch, folder / f"data_batch_{i}")
    _write_pickle(_batch(test_x, test_y, (b"labels",), "testing batch 1 of 1"), folder / "test_batch")
    meta = {b"num_cases_per_batch": len(train_y) // 5, b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072}
    _write_pickle(meta, folder / "batches.meta")
    return root


def cifar100_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fine names "fine_00".."fine_99", coarse names "coarse_00".."coarse_19")."""
    coarse = 100 // CIFAR100_FINE_PER_COARSE
    return tuple(f"fine_{k:02d}" for k in range(100)), tuple(f"coarse_{k:02d}" for k in range(coarse))


def write_cifar100_pickles(root, n_per_class_train: int = N_TRAIN_PER_CLASS,
                           n_per_class_test: int = N_TEST_PER_CLASS, seed: int = 0) -> Path:
    """Write root/cifar-100-python/{train,test,meta} in the official format, coarse = fine // 5; returns
    root. Arrays: synthetic_cifar(100, ..., seed, shuffle=True) with the fine labels."""
    root = Path(root)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y, test_x, test_y = synthetic_cifar(100, n_per_class_train, n_per_class_test, seed)
    for name, images, fine in (("train", train_x, train_y), ("test", test_x, test_y)):
        coarse = {b"coarse_labels": (fine // CIFAR100_FINE_PER_COARSE).tolist()}
        _write_pickle(_batch(images, fine, (b"fine_labels",), name, coarse), folder / name)
    fine_names, coarse_names = cifar100_names()
    meta = {b"fine_label_names": [n.encode() for n in fine_names],
            b"coarse_label_names": [n.encode() for n in coarse_names]}
    _write_pickle(meta, folder / "meta")
    return root


def encode_image(image: np.ndarray, ext: str) -> bytes:
    """uint8 (3, H, W) -> PNG or JPEG (quality JPEG_QUALITY) bytes."""
    from torchvision.io import encode_jpeg, encode_png

    tensor = torch.from_numpy(np.ascontiguousarray(image))
    with warnings.catch_warnings():  # torchvision 0.29 announces TorchCodec on every call
        warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
        encoded = encode_png(tensor) if ext == "png" else encode_jpeg(tensor, quality=JPEG_QUALITY)
    return encoded.numpy().tobytes()


def write_image_folder(root, classes, n_per_class_train: int = N_TRAIN_PER_CLASS,
                       n_per_class_test: int = N_TEST_PER_CLASS, ext: str = "png", seed: int = 0) -> Path:
    """Write root/{train,test}/<class>/NNNN.<ext>; returns root. Label k is sorted(classes)[k], as the
    loader numbers them. Arrays: synthetic_cifar(len(classes), ..., seed, shuffle=False)."""
    if ext not in ("png", "jpg"):
        raise ValueError(f"ext={ext!r}: use png or jpg")
    root, classes = Path(root), sorted(classes)
    arrays = synthetic_cifar(len(classes), n_per_class_train, n_per_class_test, seed, shuffle=False)
    for split, images, labels in (("train", *arrays[:2]), ("test", *arrays[2:])):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = root / split / classes[label] / f"{i:04d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_image(image, ext))
    return root


def write_archive(folder, dest_path, top_level: bool = True) -> Path:
    """Pack `folder` into dest_path: .zip, .tar, .tar.gz or .tgz by its suffix. top_level=True puts the
    files under one folder named like `folder` (as most archives do); False puts them at the top.
    Hidden files and folders (the data cache) are left out."""
    folder, dest = Path(folder), Path(dest_path)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    names = [(p, (f"{folder.name}/" if top_level else "") + p.relative_to(folder).as_posix()) for p in files]
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = dest.name.lower()
    if suffix.endswith(".zip"):
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, name in names:
                archive.write(path, name)
    elif suffix.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(dest, "w" if suffix.endswith(".tar") else "w:gz") as archive:
            for path, name in names:
                archive.add(path, name)
    else:
        raise ValueError(f"{dest}: use a .zip, .tar, .tar.gz or .tgz name")
    return dest
