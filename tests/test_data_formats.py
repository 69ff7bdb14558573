"""load_cifar on every format gives exactly the written arrays, and its cache is made, reused and rebuilt."""

import os
import pickle
import pickletools
import shutil

import numpy as np
import pytest
from synthetic import (
    CIFAR10_CLASSES,
    N_TEST_PER_CLASS,
    N_TRAIN_PER_CLASS,
    cifar100_names,
    python2_pickle_bytes,
    synthetic_cifar,
    write_archive,
    write_cifar10_pickles,
    write_image_folder,
)

import data
import data.folders
import data.pickles
from data import Cifar, load_cifar
from data.pickles import ALLOWED_GLOBALS, load_pickle

# JPEG drops the per-pixel noise of the synthetic images (4:2:0 chroma, quantised high frequencies): compared
# after 4x4 average pooling, quality 95 errs about 1.3 pixel levels on average.
JPEG_POOLED_ERROR = 3.0  # pixel levels


def pooled(images):
    """Mean over 4x4 blocks: (N, 3, 32, 32) -> (N, 3, 8, 8) float."""
    return images.reshape(len(images), 3, 8, 4, 8, 4).astype(np.float64).mean((3, 5))


def expected(num_classes: int, shuffle: bool):
    return synthetic_cifar(num_classes, N_TRAIN_PER_CLASS, N_TEST_PER_CLASS, 0, shuffle=shuffle)


def assert_loaded(c: Cifar, arrays, classes, exact: bool = True):
    assert isinstance(c, Cifar)
    for got, want in zip((c.train_images, c.test_images), (arrays[0], arrays[2]), strict=True):
        assert got.dtype == np.uint8 and got.shape == want.shape
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            assert np.abs(pooled(got) - pooled(want)).mean() < JPEG_POOLED_ERROR
    for got, want in zip((c.train_labels, c.test_labels), (arrays[1], arrays[3]), strict=True):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert c.classes == tuple(classes)
    assert isinstance(c.source, str) and c.source


def test_public_api():
    assert data.DATASETS == ("cifar10", "cifar100")
    for name in ("DataError", "load_cifar", "Cifar", "stratified_split", "normalisation_stats",
                 "DeviceBatches", "random_crop_flip", "normalise"):
        assert hasattr(data, name)
    assert issubclass(data.DataError, ValueError)
    assert Cifar._fields == ("train_images", "train_labels", "test_images", "test_labels", "classes",
                             "source")


def test_cifar10_pickles(cifar10_pickles, tmp_path):
    c = load_cifar("cifar10", cifar10_pickles, cache_dir=tmp_path)
    assert_loaded(c, expected(10, shuffle=True), CIFAR10_CLASSES)
    assert "cifar-10-batches-py" in c.source


def test_cifar10_pickle_folder_itself(cifar10_pickles, tmp_path):
    c = load_cifar("cifar10", cifar10_pickles / "cifar-10-batches-py", cache_dir=tmp_path)
    assert_loaded(c, expected(10, shuffle=True), CIFAR10_CLASSES)


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100_pickles(cifar100_pickles, tmp_path, labels):
    c = load_cifar("cifar100", cifar100_pickles, labels=labels, cache_dir=tmp_path)
    arrays = list(expected(100, shuffle=True))
    fine_names, coarse_names = cifar100_names()
    if labels == "coarse":
        arrays[1], arrays[3] = arrays[1] // 5, arrays[3] // 5
    assert_loaded(c, arrays, fine_names if labels == "fine" else coarse_names)
    assert len(c.classes) == (100 if labels == "fine" else 20)


def test_png_folder(image_folder_png, tmp_path):
    c = load_cifar("cifar10", image_folder_png, cache_dir=tmp_path)
    assert_loaded(c, expected(10, shuffle=False), CIFAR10_CLASSES)


def test_jpg_folder(image_folder_jpg, tmp_path):
    c = load_cifar("cifar10", image_folder_jpg, cache_dir=tmp_path)
    assert_loaded(c, expected(10, shuffle=False), CIFAR10_CLASSES, exact=False)


def test_image_archive_fixture(image_archive, tmp_path):
    c = load_cifar("cifar10", image_archive, cache_dir=tmp_path)
    assert_loaded(c, expected(10, shuffle=False), CIFAR10_CLASSES)
    assert str(image_archive) in c.source


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".zip"])
@pytest.mark.parametrize("top_level", [True, False])
def test_image_folder_archives(image_folder_png, tmp_path, suffix, top_level):
    archive = write_archive(image_folder_png, tmp_path / f"images{suffix}", top_level=top_level)
    c = load_cifar("cifar10", archive, cache_dir=tmp_path / "cache")
    assert_loaded(c, expected(10, shuffle=False), CIFAR10_CLASSES)


@pytest.mark.parametrize("where", ["file", "inside a folder"])
def test_official_archive(cifar10_pickles, tmp_path, where):
    """cifar-10-python.tar.gz as published: cifar-10-batches-py/ at the top of a .tar.gz."""
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    write_archive(cifar10_pickles / "cifar-10-batches-py", archive)
    root = archive if where == "file" else archive.parent
    c = load_cifar("cifar10", root, cache_dir=tmp_path / "cache")
    assert_loaded(c, expected(10, shuffle=True), CIFAR10_CLASSES)


def test_official_cifar100_archive(cifar100_pickles, tmp_path):
    archive = write_archive(cifar100_pickles / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    c = load_cifar("cifar100", archive, labels="coarse", cache_dir=tmp_path / "cache")
    assert c.classes == cifar100_names()[1]
    np.testing.assert_array_equal(c.train_labels, expected(100, shuffle=True)[1] // 5)


def test_natural_file_order(tmp_path):
    """Files numbered without zero padding still load in numeric order (2 before 10)."""
    write_image_folder(tmp_path / "src", CIFAR10_CLASSES, n_per_class_train=12, n_per_class_test=1)
    for class_dir in (tmp_path / "src" / "train").iterdir():
        for f in class_dir.iterdir():
            f.rename(f.with_name(f"img{int(f.stem)}.png"))
    c = load_cifar("cifar10", tmp_path / "src", cache_dir=tmp_path / "cache")
    want = synthetic_cifar(10, 12, 1, 0, shuffle=False)
    np.testing.assert_array_equal(c.train_images, want[0])


# --- the pickles are what the official files are, and what numpy 2 writes is read too ---

def globals_named(blob: bytes) -> set[tuple[str, str]]:
    return {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}


def test_synthetic_pickles_name_only_numpy_globals(cifar10_pickles, cifar100_pickles):
    """As the official python2 files: no _codecs.encode, only numpy's array functions."""
    folders = [cifar10_pickles / "cifar-10-batches-py", cifar100_pickles / "cifar-100-python"]
    for path in (p for folder in folders for p in folder.iterdir() if p.is_file()):
        blob = path.read_bytes()
        assert blob[:2] == b"\x80\x02"  # protocol 2
        assert globals_named(blob) <= {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                                       ("numpy", "dtype")}, path


@pytest.mark.parametrize("protocol", [3, 4])
def test_numpy2_pickles_are_read(protocol):
    """Arrays pickled by the installed numpy (numpy._core names) pass the restricted unpickler."""
    d = {b"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072) % 251, b"labels": [1, 2]}
    out = load_pickle(pickle.dumps(d, protocol=protocol), "numpy2.pickle")
    np.testing.assert_array_equal(out[b"data"], d[b"data"])
    assert out[b"labels"] == [1, 2]


def test_allowed_globals_are_only_numpy_array_functions():
    assert set(ALLOWED_GLOBALS) == {("numpy.core.multiarray", "_reconstruct"),
                                    ("numpy._core.multiarray", "_reconstruct"),
                                    ("numpy", "ndarray"), ("numpy", "dtype")}
    blob = python2_pickle_bytes({b"x": np.zeros((2, 2), np.uint8)})
    assert ("numpy.core.multiarray", "_reconstruct") in globals_named(blob)
    assert load_pickle(blob, "x")[b"x"].shape == (2, 2)


# --- the cache ---

def cache_files(folder):
    return sorted(folder.glob("*.npz"))


class CountingDecoder:
    """Wraps data.folders.decode_png_jpg and counts its calls."""

    def __init__(self, decode):
        self.decode, self.calls = decode, 0

    def __call__(self, blob, name):
        self.calls += 1
        return self.decode(blob, name)


def test_cache_is_made_beside_the_data_and_reused(image_folder_png, tmp_path, monkeypatch):
    root = tmp_path / "images"
    shutil.copytree(image_folder_png, root, ignore=shutil.ignore_patterns(".*"))
    counter = CountingDecoder(data.folders.decode_png_jpg)
    monkeypatch.setattr(data.folders, "decode_png_jpg", counter)
    first = load_cifar("cifar10", root)
    n_images = len(first.train_images) + len(first.test_images)
    assert counter.calls == n_images
    (cache,) = cache_files(root / ".cifar-zoo-cache")
    assert not [p for p in cache.parent.iterdir() if p.suffix == ".tmp"]  # the temporary file was renamed
    mtime = cache.stat().st_mtime_ns
    second = load_cifar("cifar10", root)
    assert counter.calls == n_images  # not decoded again
    assert cache.stat().st_mtime_ns == mtime  # nor rewritten
    for a, b in zip(first[:4], second[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.classes == second.classes and first.source == second.source


def test_cache_is_rebuilt_when_an_image_changes(image_folder_png, tmp_path, monkeypatch):
    root = tmp_path / "images"
    shutil.copytree(image_folder_png, root, ignore=shutil.ignore_patterns(".*"))
    cache_dir = tmp_path / "cache"
    before = load_cifar("cifar10", root, cache_dir=cache_dir)
    changed = root / "train" / "airplane" / "0000.png"
    new_image = np.full((3, 32, 32), 7, np.uint8)
    from synthetic import encode_image
    changed.write_bytes(encode_image(new_image, "png"))
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a clearly later mtime on any filesystem
    counter = CountingDecoder(data.folders.decode_png_jpg)
    monkeypatch.setattr(data.folders, "decode_png_jpg", counter)
    after = load_cifar("cifar10", root, cache_dir=cache_dir)
    assert counter.calls == len(before.train_images) + len(before.test_images)
    np.testing.assert_array_equal(after.train_images[0], new_image)
    np.testing.assert_array_equal(after.train_images[1:], before.train_images[1:])
    assert len(cache_files(cache_dir)) == 1  # overwritten, not added


def test_cache_is_rebuilt_when_a_pickle_changes(tmp_path, monkeypatch):
    root = write_cifar10_pickles(tmp_path / "data", seed=0)
    calls = []
    real = data.pickles.load_pickle
    monkeypatch.setattr(data.pickles, "load_pickle",
                        lambda blob, name: calls.append(name) or real(blob, name))
    first = load_cifar("cifar10", root)
    assert len(calls) == 7  # 5 batches, test_batch, batches.meta
    load_cifar("cifar10", root)
    assert len(calls) == 7
    write_cifar10_pickles(root, seed=1)  # new contents (same sizes), so the mtimes alone tell
    for f in (root / "cifar-10-batches-py").iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load_cifar("cifar10", root)
    assert len(calls) == 14
    assert not np.array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(second.train_images, synthetic_cifar(10, 20, 10, 1)[0])


def test_cache_per_label_set(cifar100_pickles, tmp_path):
    fine = load_cifar("cifar100", cifar100_pickles, labels="fine", cache_dir=tmp_path)
    coarse = load_cifar("cifar100", cifar100_pickles, labels="coarse", cache_dir=tmp_path)
    assert len(cache_files(tmp_path)) == 2
    np.testing.assert_array_equal(fine.train_labels // 5, coarse.train_labels)
    again = load_cifar("cifar100", cifar100_pickles, labels="coarse", cache_dir=tmp_path)
    assert again.classes == coarse.classes


def test_unreadable_cache_is_rebuilt(cifar10_pickles, tmp_path):
    first = load_cifar("cifar10", cifar10_pickles, cache_dir=tmp_path)
    (cache,) = cache_files(tmp_path)
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated
    again = load_cifar("cifar10", cifar10_pickles, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.train_images, again.train_images)
    assert cache.stat().st_size > 1000


def test_cache_cannot_run_code(cifar10_pickles, tmp_path):
    """A cache replaced by an npz holding a pickled object array is not unpickled: it is rebuilt."""
    load_cifar("cifar10", cifar10_pickles, cache_dir=tmp_path)
    (cache,) = cache_files(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(cache, "wb") as f:
        np.savez(f, train_images=np.array([Payload()], dtype=object), signature=np.array("x"))
    c = load_cifar("cifar10", cifar10_pickles, cache_dir=tmp_path)
    assert not marker.exists()
    assert c.train_images.shape == (200, 3, 32, 32)


def test_unwritable_cache_warns_and_still_loads(cifar10_pickles, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cache"):
        c = load_cifar("cifar10", cifar10_pickles, cache_dir=blocker / "cache")
    assert c.train_images.shape == (200, 3, 32, 32)
