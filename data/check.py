"""Check: the settings before anything is looked for, and the arrays before they are used or cached.

    check_settings(dataset, labels)          a known dataset and a label set it has
    check_class_count(dataset, labels, ...)  as many classes as the setting has (10, 100 or 20); a count that
                                             is another setting's says which (the usual cifar10/cifar100 mix-up)
    check_cifar(cifar, dataset, labels)      the class count, then per split: uint8 (N, 3, 32, 32) images with
                                             N > 0 and int64 (N,) labels in range

The readers check what only they can see (a missing file, a label beyond its meta file's names, an image that
is not 32x32 RGB) and name the file at fault. check_cifar runs on every load, from the files or from the
cache: it is cheap, and a cache is a file like any other. Every message is one line (data/errors.py).
"""

import numpy as np

from data.cifar import DATASETS, IMAGE_SHAPE, NUM_CLASSES, SPLITS, TITLES, Cifar
from data.errors import DataError, DatasetMixUp

# A class count that is another setting's: what a mix-up hint suggests.
SETTING_OF_COUNT = {10: "dataset=cifar10", 100: "dataset=cifar100 labels=fine", 20: "dataset=cifar100 labels=coarse"}


def check_settings(dataset: str, labels: str) -> None:
    """Reject an unknown dataset, or a label set that `dataset` does not have, listing the valid ones."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset={dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if (dataset, labels) not in NUM_CLASSES:
        valid = ", ".join(f"labels={lab}" for d, lab in NUM_CLASSES if d == dataset)
        raise DataError(f"labels={labels!r} is not valid for dataset={dataset}; use {valid} "
                        "(coarse: CIFAR-100's 20 superclasses)")


def check_class_count(dataset: str, labels: str, classes: tuple[str, ...] | list[str], source: str) -> None:
    """Reject a class count that is not the dataset's (10 class folders for dataset=cifar100, say)."""
    want = NUM_CLASSES[(dataset, labels)]
    if len(classes) != want:
        setting = f"dataset={dataset}" + (f" labels={labels}" if dataset == "cifar100" else "")
        guess = SETTING_OF_COUNT.get(len(classes))
        if guess is None:
            raise DataError(f"{source}: has {len(classes)} classes but {setting} has {want}; point data=<path> "
                            f"at a copy of {TITLES[dataset]}")
        raise DatasetMixUp(f"{source}: has {len(classes)} classes but {setting} has {want}; did you mean {guess}?",
                           source, f"has {len(classes)} classes")


def check_cifar(cifar: Cifar, dataset: str, labels: str) -> None:
    """Reject arrays that are not `dataset`: the class count, image shapes and label ranges."""
    check_class_count(dataset, labels, cifar.classes, cifar.source)
    want, source = NUM_CLASSES[(dataset, labels)], cifar.source
    splits = ((cifar.train_images, cifar.train_labels), (cifar.test_images, cifar.test_labels))
    for split, (images, labels_) in zip(SPLITS, splits, strict=True):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or not len(images):
            raise DataError(f"{source}: {split} images are {images.dtype} {images.shape}, not uint8 "
                            "(N, 3, 32, 32) with N > 0; copy the data again")
        if labels_.shape != (len(images),) or labels_.dtype != np.int64:
            raise DataError(f"{source}: {split} labels are {labels_.dtype} {labels_.shape}, not int64 "
                            f"({len(images)},); copy the data again")
        if labels_.min() < 0 or labels_.max() >= want:
            raise DataError(f"{source}: a {split} label is out of range 0..{want - 1}; copy the data again")
