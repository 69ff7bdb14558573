"""DeviceBatches throughput: images/s for a CIFAR-sized training split that lives on the device.

    python3 bench/loader.py [PREFIX] [--quick] [--cpu]   -> prints a markdown table; writes PREFIX.json and
                                                          PREFIX.md (default bench/results/loader-<device>)

45,000 random uint8 images (3, 32, 32) (the training split after a 5,000-image validation hold-out; 4,096 with
--quick) with a per-pixel mean and std, iterated by DeviceBatches at batch 256 and 512 in train mode (shuffle,
random crop and flip, normalise) and eval mode (normalise). An epoch's time runs from the first batch asked
for to the last batch finished (torch.cuda.synchronize on CUDA); the figure is the median over several epochs
after one warm-up epoch. "GB/s" counts the float32 batches written (12,288 bytes an image) plus the uint8
images read (3,072 bytes), against a device-to-device copy measured in the same run ("% copy").
"""

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import cell, copy_gbs, device_name, publish, results_prefix, script_header, table  # noqa: E402
from data import DeviceBatches  # noqa: E402

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


def to_markdown(result: dict, header: dict) -> str:
    lines = [f"# {result['title']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [""] + table(result["columns"], result["rows"])
    lines += ["", "Summary: " + ", ".join(f"{k} {cell(v)}" for k, v in result["summary"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    device = "cpu" if "--cpu" in argv or not torch.cuda.is_available() else "cuda"
    result = measure(device, quick="--quick" in argv)
    device = torch.device(device)
    publish(results_prefix(argv, "loader", device), result, script_header("bench/loader.py", argv, device), to_markdown)


if __name__ == "__main__":
    main()
