"""stratified_split and normalisation_stats: counts, determinism, and statistics computed from the data."""

import numpy as np
import pytest
import torch
from synthetic import make_images

from data import DataError, normalisation_stats, normalise, stratified_split
from data.split import STD_FLOOR


def shuffled_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def check_partition(train_idx, val_idx, n):
    for idx in (train_idx, val_idx):
        assert idx.dtype == np.int64 and idx.ndim == 1
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert not np.intersect1d(train_idx, val_idx).size
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(n))


def test_cifar_sized_split():
    labels = shuffled_labels(10, 5000)
    train_idx, val_idx = stratified_split(labels, 0.1, seed=0)
    assert (len(train_idx), len(val_idx)) == (45_000, 5_000)
    check_partition(train_idx, val_idx, 50_000)
    np.testing.assert_array_equal(np.bincount(labels[val_idx]), [500] * 10)
    np.testing.assert_array_equal(np.bincount(labels[train_idx]), [4500] * 10)


def test_uneven_classes_round_per_class():
    counts = [7, 25, 35, 1, 100]
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(5), counts))
    train_idx, val_idx = stratified_split(labels, 0.1, seed=3)
    check_partition(train_idx, val_idx, len(labels))
    # Python's round: 0.7 -> 1, 2.5 -> 2 (half to even), 3.5 -> 4, 0.1 -> 0, 10 -> 10
    np.testing.assert_array_equal(np.bincount(labels[val_idx], minlength=5), [1, 2, 4, 0, 10])


def test_zero_fraction_gives_no_validation():
    labels = shuffled_labels(10, 30)
    train_idx, val_idx = stratified_split(labels, 0.0, seed=0)
    assert val_idx.dtype == np.int64 and len(val_idx) == 0
    np.testing.assert_array_equal(train_idx, np.arange(300))


def test_split_is_fixed_by_the_seed():
    labels = shuffled_labels(100, 50)
    a = stratified_split(labels, 0.2, seed=7)
    b = stratified_split(labels.copy(), 0.2, seed=7)
    c = stratified_split(labels, 0.2, seed=8)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(np.bincount(labels[c[1]]), [10] * 100)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_fraction_is_rejected(bad):
    with pytest.raises(DataError, match="val_fraction"):
        stratified_split(np.zeros(10, np.int64), bad, seed=0)


def test_non_integer_labels_are_rejected():
    with pytest.raises(DataError, match="integer"):
        stratified_split(np.zeros(10, np.float32), 0.1, seed=0)


# --- normalisation statistics ---

def training_images(n: int = 400) -> np.ndarray:
    return make_images(shuffled_labels(10, n // 10), seed=5)


@pytest.mark.parametrize("per", ["pixel", "channel"])
def test_stats_shape_dtype_units(per):
    images = training_images()
    mean, std = normalisation_stats(images, per=per)
    for s in (mean, std):
        assert s.dtype == np.float32 and s.shape == (3, 32, 32)
    assert 0 <= mean.min() and mean.max() <= 255  # 0..255 pixel units
    assert np.all(std >= STD_FLOOR)


def test_per_pixel_normalised_training_split_is_standard():
    images = training_images()
    mean, std = normalisation_stats(images, per="pixel")
    np.testing.assert_allclose(mean, images.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, images.astype(np.float64).std(0), rtol=1e-5)
    x = normalise(torch.from_numpy(images), mean, std).double()
    np.testing.assert_allclose(x.mean(0).numpy(), 0, atol=1e-4)  # every pixel, every channel
    np.testing.assert_allclose(x.std(0, correction=0).numpy(), 1, atol=1e-4)


def test_per_channel_normalised_training_split_is_standard():
    images = training_images()
    mean, std = normalisation_stats(images, per="channel")
    assert np.all(mean == mean[:, :1, :1]) and np.all(std == std[:, :1, :1])  # one value per channel
    np.testing.assert_allclose(mean[:, 0, 0], images.astype(np.float64).mean((0, 2, 3)), rtol=1e-6)
    x = normalise(torch.from_numpy(images), mean, std).double()
    np.testing.assert_allclose(x.mean((0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x.std((0, 2, 3), correction=0).numpy(), 1, atol=1e-4)


def test_chunked_sums_match_one_pass():
    """More images than one accumulation chunk: the chunks add up to the plain statistics."""
    from data import split

    images = np.random.default_rng(0).integers(0, 256, (split.STATS_CHUNK + 100, 3, 32, 32), dtype=np.uint8)
    mean, std = normalisation_stats(images)
    np.testing.assert_allclose(mean, images.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, images.std(0), rtol=1e-5)


def test_constant_pixels_get_the_floor():
    images = training_images()
    images[:, :, 0, :] = 0  # the top row is black in every image
    mean, std = normalisation_stats(images)
    assert np.all(std[:, 0, :] == STD_FLOOR) and np.all(mean[:, 0, :] == 0)
    x = normalise(torch.from_numpy(images), mean, std)
    assert torch.isfinite(x).all()


def test_bad_inputs_are_rejected():
    with pytest.raises(DataError, match="uint8"):
        normalisation_stats(np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match="per="):
        normalisation_stats(training_images(), per="image")
