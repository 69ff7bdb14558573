"""The validation split and the normalisation statistics, both computed from the data, never copied.

stratified_split holds out round(val_fraction * count) images of every class, chosen by a seeded generator, so
the validation set has the class balance of the training set and the same seed always gives the same split.
round() is Python's: halves go to the even neighbour (0.1 * 25 = 2.5 -> 2, 0.1 * 35 = 3.5 -> 4).

normalisation_stats gives the mean and std, per pixel (the seed's wording: one value per channel and position)
or per channel, of the training split, in the units of the uint8 pixels (0..255), so that normalising is
(x - mean) / std on the raw pixel values with no separate 1/255 step.
"""

import numpy as np

from data.errors import DataError

STD_FLOOR = 1.0  # pixel levels (0..255): a pixel constant over the training split (a synthetic image's fixed
# border, a corner that is always black) has std 0 and would divide by zero; one quantisation level is the
# smallest change a uint8 image can show, so flooring there never amplifies a difference more than 1:1.
STATS_CHUNK = 4096  # images per float64 accumulation step: 4096 x 3072 x 8 bytes = 100 MB of temporaries
PER = ("pixel", "channel")


def stratified_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): sorted, disjoint int64 index arrays whose union is range(len(labels)).

    For each class with `count` images, round(val_fraction * count) of them (Python's round, halves to even)
    go to validation, drawn by np.random.default_rng(seed); classes are visited in sorted order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (len(labels) and labels.dtype.kind not in "iu"):
        raise DataError(f"stratified_split needs a 1-D integer label array, got {labels.dtype} "
                        f"{labels.shape}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction} is outside [0, 1); use e.g. 0.1 for 10% "
                        "validation, or 0 for none")
    rng = np.random.default_rng(seed)
    val = [np.empty(0, np.int64)]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        val.append(rng.choice(members, size=round(val_fraction * len(members)), replace=False))
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    in_train = np.ones(len(labels), bool)
    in_train[val_idx] = False
    return np.flatnonzero(in_train).astype(np.int64), val_idx


def normalisation_stats(images_u8_nchw: np.ndarray, per: str = "pixel") -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), float32 arrays of shape (C, H, W) in 0..255 pixel units, of uint8 images (N, C, H, W).

    per="pixel": a mean and std for every channel and position, over the N images.
    per="channel": one mean and std per channel, over the N images and all positions, broadcast to (C, H, W).
    std is the population std (ddof 0), floored at STD_FLOOR. Pass the training split only.
    """
    images = np.asarray(images_u8_nchw)
    if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
        raise DataError(f"normalisation_stats needs uint8 images (N, C, H, W) with N > 0, got {images.dtype} "
                        f"{images.shape}")
    if per not in PER:
        raise DataError(f"per={per!r} is not one of {', '.join(PER)}")
    N, C, H, W = images.shape
    total = np.zeros((C, H, W), np.float64)
    total_sq = np.zeros((C, H, W), np.float64)
    for start in range(0, N, STATS_CHUNK):  # float64 sums are exact for uint8 inputs at these counts
        chunk = images[start:start + STATS_CHUNK].astype(np.float64)
        total += chunk.sum(0)
        total_sq += np.square(chunk).sum(0)
    count = N
    if per == "channel":  # pool the positions too
        total, total_sq = total.sum((1, 2), keepdims=True), total_sq.sum((1, 2), keepdims=True)
        count = N * H * W
    mean = total / count
    std = np.maximum(np.sqrt(np.maximum(total_sq / count - mean**2, 0)), STD_FLOOR)
    shape = (C, H, W)
    return np.broadcast_to(mean, shape).astype(np.float32), np.broadcast_to(std, shape).astype(np.float32)
