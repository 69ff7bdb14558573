"""What CIFAR-10/100 are to this package: dataset names, label sets, class counts, and Cifar, the arrays
that load_cifar (data/load.py) returns.

These facts are shared by every loading step (locate, read, check, cache), so they live here, in a module
that imports none of them.
"""

from typing import NamedTuple

import numpy as np

DATASETS = ("cifar10", "cifar100")
LABEL_SETS = ("fine", "coarse")  # CIFAR-100's 100 classes, or its 20 superclasses
NUM_CLASSES = {("cifar10", "fine"): 10, ("cifar100", "fine"): 100, ("cifar100", "coarse"): 20}
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}  # as messages name them
SPLITS = ("train", "test")
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width of every CIFAR image


class Cifar(NamedTuple):
    """A dataset's splits: images uint8 (N, 3, 32, 32) RGB, labels int64 (N,) indexing `classes`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str  # where the arrays came from, for logs and results files


def other_dataset(dataset: str) -> str:
    """The CIFAR that `dataset` is not: what a mix-up hint suggests instead."""
    return next(d for d in DATASETS if d != dataset)
