"""The run's data: read once, split into train and val (or the saved run's split), normalised with the training
split's statistics, and held on the device as batches; with several ranks, this rank's shard of the split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import DataError, DeviceBatches, load_cifar, normalisation_stats, stratified_split
from train import distributed
from train.config import Config, ConfigError
from train.members import MemberBatches


def load_data(cfg: Config, log=None):
    """load_cifar for this config; an OS-level failure (permissions, a device error) is a DataError too. `log`
    hears what a first decode of an image folder reports (a bar instead of progress lines when cfg.progress and
    stderr is a terminal); None: nothing."""
    try:
        return load_cifar(cfg.dataset, cfg.data, download=cfg.download, labels=cfg.labels, log=log,
                          bar=cfg.progress)
    except OSError as e:
        where = e.filename or cfg.data
        raise DataError(f"cannot read the data at {where} ({e.strerror or type(e).__name__}); check the path "
                        "and its permissions, or point data=<path> at another copy") from None


def data_digest(data) -> str:
    """sha256 of the training images and labels (what the saved split indexes), to refuse other data."""
    h = hashlib.sha256()
    for a in (data.train_images, data.train_labels):
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


@dataclass
class DeviceSplit:
    """The run's split on the device: indices into the training images (numpy), the train, val and test
    DeviceBatches (the training one holds the normalisation, 0..255 pixel units, and the loader's generator),
    and the digest of the data the indices point into (data_digest)."""

    digest: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    train: DeviceBatches
    val: DeviceBatches
    test: DeviceBatches


def _device_tensors(images: np.ndarray, labels: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)


def device_split(cfg: Config, data, saved: dict | None, out: Path, device, rank: int, world: int,
                 num_classes: int) -> DeviceSplit:
    """Split and statistics from the training images only (or the saved run's), then everything on the device;
    with several ranks, this rank's shard of the training split."""
    digest = data_digest(data)
    if saved is None:
        train_idx, val_idx = stratified_split(data.train_labels, cfg.val_fraction, cfg.seed_of_split())
        mean, std = (torch.from_numpy(a) for a in normalisation_stats(data.train_images[train_idx],
                                                                      per=cfg.normalisation))
    else:
        if saved["data_sha256"] != digest:
            raise DataError(f"the data at {cfg.data} ({data.source}) differs from the data the run in {out} "
                            "trained on; point data=<path> at that copy to resume")
        train_idx, val_idx, mean, std = (saved[k] for k in ("train_idx", "val_idx", "mean", "std"))
        train_idx, val_idx = train_idx.numpy(), val_idx.numpy()
    # Several ranks: each trains on its own equal, disjoint share of the split (batch_size is per rank).
    rank_idx = train_idx if world == 1 else distributed.shard(train_idx, rank, world, cfg.seed).numpy()
    if cfg.batch_size > len(rank_idx):
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the training split ({len(train_idx)} images"
            + (f", {len(rank_idx)} per rank" if world > 1 else "") + ")"
        )
    mean, std = mean.to(device), std.to(device)
    # The same seed on every rank: each shuffles and augments its own shard with the same random stream, so the
    # one generator state rank 0 saves resumes every rank. Members: one loader per member seed over the same
    # images on the device (train/members.py).
    images, labels = _device_tensors(data.train_images[rank_idx], data.train_labels[rank_idx], device)
    loaders = [DeviceBatches(images, labels, mean, std, cfg.batch_size, train=True,
                             generator=torch.Generator(device=device).manual_seed(seed), cutout=cfg.cutout,
                             mix=cfg.mix, num_classes=num_classes, randaugment_ops=cfg.randaugment,
                             randaugment_magnitude=cfg.randaugment_magnitude)
               for seed in cfg.member_seeds()]
    train = loaders[0] if cfg.members == 1 else MemberBatches(loaders)
    val = DeviceBatches(*_device_tensors(data.train_images[val_idx], data.train_labels[val_idx], device),
                        mean, std, cfg.eval_batch_size, train=False)
    test = DeviceBatches(*_device_tensors(data.test_images, data.test_labels, device),
                         mean, std, cfg.eval_batch_size, train=False)
    return DeviceSplit(digest, train_idx, val_idx, train, val, test)
