"""DeviceBatches throughput: images/s for a CIFAR-sized training split that lives on the device.

`python -m bench loader [quick=true] [out=DIR]` runs `measure` (bench/report.py: on a GPU it writes
bench/results/loader-<device>.json and .md; on the CPU it prints the table and writes only where out= says).

45,000 random uint8 images (3, 32, 32) (the training split after a 5,000-image validation hold-out; 4,096 with
quick=true, as on every CPU run) with a per-pixel mean and std, iterated by DeviceBatches at batch 256 and 512
in train mode (shuffle, random crop and flip, normalise) and eval mode (normalise). An epoch's time runs from
the first batch asked for to the last batch finished (torch.cuda.synchronize on CUDA); the figure is the
median over several epochs after one warm-up epoch. "GB/s" counts the float32 batches written (12,288 bytes an
image) plus the uint8 images read (3,072 bytes), against a device-to-device copy measured in the same run
("% copy").
"""

import statistics
import time

import torch

from bench.common import copy_gbs, device_name
from data import DeviceBatches

N_IMAGES = 45_000  # CIFAR-10's 50,000 training images less a 10% validation split
N_IMAGES_QUICK = 4_096
BATCH_SIZES = (256, 512)
EPOCHS, EPOCHS_QUICK = 5, 3  # timed epochs, after one warm-up epoch
BYTES_PER_IMAGE = 3 * 32 * 32 * (4 + 1)  # float32 written + uint8 read


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(loader: DeviceBatches, device: torch.device) -> float:
    """Wall time of one pass over `loader`, every batch computed."""
    _sync(device)
    start = time.perf_counter()
    for _x, _y in loader:
        pass
    _sync(device)
    return time.perf_counter() - start


def measure(device: str = "cuda", quick: bool = False) -> dict:
    """Time DeviceBatches in train and eval mode at each batch size; images/s, GB/s, % of a copy."""
    device = torch.device(device)
    n, epochs = (N_IMAGES_QUICK, EPOCHS_QUICK) if quick else (N_IMAGES, EPOCHS)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, device=device, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g, device=device)
    mean = images[:1024].float().mean(0)  # any per-pixel statistics will do for timing
    std = images[:1024].float().std(0)
    ceiling = copy_gbs(device)
    rows = []
    for train in (True, False):
        for batch_size in BATCH_SIZES:
            loader = DeviceBatches(images, labels, mean, std, batch_size, train,
                                   torch.Generator(device=device).manual_seed(1))
            epoch_seconds(loader, device)  # warm-up: allocator, kernels' first launch
            seconds = statistics.median(epoch_seconds(loader, device) for _ in range(epochs))
            n_seen = len(loader) * batch_size if loader.drop_last else n
            per_second = n_seen / seconds
            gbs = per_second * BYTES_PER_IMAGE / 1e9
            rows.append({
                "mode": "train (shuffle, crop, flip)" if train else "eval (normalise)",
                "batch": batch_size, "images/s": per_second, "ms/epoch": seconds * 1e3,
                "GB/s": gbs, "% copy": 100 * gbs / ceiling,
            })
    return {
        "title": f"DeviceBatches on {device_name(device)}: {n:,} uint8 images, median of {epochs} epochs",
        "columns": ["mode", "batch", "images/s", "ms/epoch", "GB/s", "% copy"],
        "rows": rows,
        "summary": {
            "copy GB/s": ceiling,
            "train images/s at 512": next(r["images/s"] for r in rows
                                          if r["batch"] == 512 and r["mode"].startswith("train")),
        },
    }

