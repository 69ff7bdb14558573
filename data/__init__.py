"""CIFAR-10/100 in, device-resident batches out. Imports nothing else of this repository.

    load_cifar(dataset, root, download, labels, log=...) -> Cifar   locate, read once (cached), check
    stratified_split(labels, val_fraction, seed)             train/validation indices
    normalisation_stats(train_images, per)                   mean, std from the training split
    DeviceBatches(images, labels, mean, std, batch_size, train, generator)   shuffled, augmented (mixed) batches
"""

from data.cifar import DATASETS, Cifar
from data.errors import DataError, DatasetMixUp
from data.load import load_cifar
from data.loader import MIXES, DeviceBatches, cutout, mix_batch, normalise, random_crop_flip
from data.split import normalisation_stats, stratified_split

__all__ = [
    "DATASETS", "MIXES", "Cifar", "DataError", "DatasetMixUp", "DeviceBatches", "load_cifar", "normalisation_stats",
    "normalise", "cutout", "mix_batch", "random_crop_flip", "stratified_split",
]
