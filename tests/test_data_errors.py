"""Every way the data can be wrong gives a one-line DataError that names the problem and the fix."""

import builtins
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
import torchvision.datasets.utils
from synthetic import (
    CIFAR10_CLASSES,
    encode_image,
    python2_pickle_bytes,
    synthetic_cifar,
    write_archive,
    write_cifar10_pickles,
    write_cifar100_pickles,
    write_image_folder,
)

from data import DataError, load_cifar
from data.pickles import load_pickle

CALLED = []  # set by payload(): proof that a refused function never ran


def payload():
    CALLED.append(True)


def load_error(*args, **kwargs) -> str:
    """The message of the DataError that load_cifar raises; also checks it is one line."""
    with pytest.raises(DataError) as info:
        load_cifar(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def copy_pickles(src, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns(".*"))
    return root


# --- settings ---

def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    message = load_error("cifar1000", tmp_path)
    assert "cifar1000" in message and "cifar10, cifar100" in message


def test_labels_setting(tmp_path):
    assert "labels=fine" in load_error("cifar10", tmp_path, labels="coarse")
    message = load_error("cifar100", tmp_path, labels="medium")
    assert "labels=fine" in message and "labels=coarse" in message


# --- missing data ---

@pytest.mark.parametrize("exists", [True, False])
def test_missing_data_lists_the_layouts_and_the_fixes(tmp_path, exists):
    root = tmp_path / "nothing"
    if exists:
        root.mkdir()
    message = load_error("cifar10", root, download=False)
    for looked_for in (root / "cifar-10-batches-py", root / "train", root / "test",
                       root / "cifar-10-python.tar.gz"):
        assert str(looked_for) in message
    assert "data=<path>" in message and "download=true" in message
    assert ("no such file or folder" in message) == (not exists)


def test_missing_cifar100_names_its_layout(tmp_path):
    message = load_error("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python") in message and "cifar-100-python.tar.gz" in message


def test_other_dataset_present_is_pointed_out(cifar10_pickles):
    message = load_error("cifar100", cifar10_pickles)
    assert "dataset=cifar10?" in message


def test_half_an_image_folder(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    assert "no test/" in load_error("cifar10", tmp_path)


def test_a_file_that_is_not_an_archive(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello")
    assert "not an archive" in load_error("cifar10", path)


def test_an_archive_with_neither_layout(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("hello")
    archive = write_archive(tmp_path / "src", tmp_path / "other.tar.gz")
    message = load_error("cifar10", archive, cache_dir=tmp_path / "cache")
    assert str(archive) in message and "cifar-10-batches-py" in message and "train/<class>" in message


def test_a_truncated_archive(image_archive, tmp_path):
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(image_archive.read_bytes()[:5000])
    message = load_error("cifar10", path, cache_dir=tmp_path / "cache")
    assert str(path) in message and "archive" in message


# --- corrupt or incomplete pickles ---

def test_truncated_pickle_names_the_file(cifar10_pickles, tmp_path):
    root = copy_pickles(cifar10_pickles, tmp_path)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:10_000])
    message = load_error("cifar10", root)
    assert str(batch) in message and "truncated or corrupt" in message


def test_missing_batch_names_the_file(cifar10_pickles, tmp_path):
    root = copy_pickles(cifar10_pickles, tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    message = load_error("cifar10", root)
    assert str(root / "cifar-10-batches-py" / "data_batch_3") in message and "missing" in message


def test_missing_batch_inside_an_archive(cifar10_pickles, tmp_path):
    folder = copy_pickles(cifar10_pickles, tmp_path) / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    archive = write_archive(folder, tmp_path / "cifar-10-python.tar.gz")
    message = load_error("cifar10", archive, cache_dir=tmp_path / "cache")
    assert "cifar-10-batches-py/test_batch" in message and "missing" in message


def test_out_of_range_label_names_the_file(cifar10_pickles, tmp_path):
    root = copy_pickles(cifar10_pickles, tmp_path)
    batch = root / "cifar-10-batches-py" / "data_batch_4"
    d = load_pickle(batch.read_bytes(), str(batch))
    d[b"labels"][3] = 10
    batch.write_bytes(python2_pickle_bytes(d))
    message = load_error("cifar10", root)
    assert str(batch) in message and "label 10" in message and "0..9" in message


def test_wrong_image_size_in_a_pickle(cifar10_pickles, tmp_path):
    root = copy_pickles(cifar10_pickles, tmp_path)
    batch = root / "cifar-10-batches-py" / "test_batch"
    d = load_pickle(batch.read_bytes(), str(batch))
    d[b"data"] = d[b"data"][:, :3000]
    batch.write_bytes(python2_pickle_bytes(d))
    message = load_error("cifar10", root)
    assert str(batch) in message and "3072" in message


def test_not_a_cifar_dict(cifar100_pickles, tmp_path):
    root = copy_pickles(cifar100_pickles, tmp_path)
    meta = root / "cifar-100-python" / "meta"
    meta.write_bytes(python2_pickle_bytes({b"something": [b"else"]}))
    message = load_error("cifar100", root)
    assert str(meta) in message and "fine_label_names" in message


def test_class_count_of_pickles(tmp_path):
    """batches.meta with 20 names but dataset=cifar10."""
    root = write_cifar10_pickles(tmp_path / "data")
    meta = root / "cifar-10-batches-py" / "batches.meta"
    d = load_pickle(meta.read_bytes(), str(meta))
    d[b"label_names"] = [f"c{k}".encode() for k in range(20)]
    meta.write_bytes(python2_pickle_bytes(d))
    message = load_error("cifar10", root)
    assert "20 classes" in message and "dataset=cifar100 labels=coarse" in message


# --- malicious pickles: refused, and nothing in them runs ---

class CallsPayload:
    def __reduce__(self):
        return (payload, ())


class CallsEval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('tests_data_errors_flag')",))


def system_call(marker):
    class CallsSystem:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return CallsSystem()


@pytest.mark.parametrize("kind", ["function", "eval", "os.system"])
def test_malicious_pickle_is_refused_and_never_runs(cifar10_pickles, tmp_path, kind):
    root = copy_pickles(cifar10_pickles, tmp_path)
    marker = tmp_path / "system-ran"
    evil = {"function": CallsPayload(), "eval": CallsEval(), "os.system": system_call(marker)}[kind]
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    d = load_pickle(batch.read_bytes(), str(batch))
    d[b"labels"] = evil  # hidden inside an otherwise valid batch
    batch.write_bytes(python2_pickle_bytes(d))
    CALLED.clear()
    message = load_error("cifar10", root)
    refused = {"function": f"{payload.__module__}.payload", "eval": "__builtin__.eval",  # python2's name
               "os.system": f"{os.system.__module__}.system"}[kind]
    assert str(batch) in message and f"refused to load the global {refused}:" in message
    assert not CALLED and not marker.exists() and "tests_data_errors_flag" not in sys.modules


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_every_protocol_is_restricted(protocol, tmp_path):
    marker = tmp_path / "ran"
    refused = f"evil.pickle: refused to load the global {os.system.__module__}.system"
    with pytest.raises(DataError, match=refused):
        load_pickle(pickle.dumps({"x": system_call(marker)}, protocol=protocol), "evil.pickle")
    assert not marker.exists()


def test_python3_protocol2_bytes_load_as_they_were_saved():
    """python3 writes bytes at protocol 2 through _codecs.encode(text, 'latin1'), which runs no code: accepted."""
    assert load_pickle(pickle.dumps({b"data": b"x\xff"}, protocol=2), "py3.pickle") == {b"data": b"x\xff"}


# --- image folders ---

def small_folder(tmp_path, classes=CIFAR10_CLASSES, **kw):
    return write_image_folder(tmp_path / "images", classes, n_per_class_train=2, n_per_class_test=1, **kw)


def test_wrong_image_size_names_the_file(tmp_path):
    root = small_folder(tmp_path)
    bad = root / "train" / "cat" / "0007.png"
    bad.write_bytes(encode_image(np.zeros((3, 32, 31), np.uint8), "png"))
    message = load_error("cifar10", root)
    assert str(bad) in message and "32x31" in message and "32x32 RGB" in message


def test_grayscale_image_is_rejected(tmp_path):
    root = small_folder(tmp_path)
    bad = root / "test" / "dog" / "0005.png"
    bad.write_bytes(encode_image(np.zeros((1, 32, 32), np.uint8), "png"))
    message = load_error("cifar10", root)
    assert str(bad) in message and "1 channel" in message


def test_undecodable_image_names_the_file(tmp_path):
    root = small_folder(tmp_path, ext="jpg")
    bad = root / "train" / "ship" / "0016.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    message = load_error("cifar10", root)
    assert str(bad) in message and "cannot decode" in message


def test_undecodable_image_in_an_archive_names_the_member(tmp_path):
    root = small_folder(tmp_path)
    (root / "train" / "frog" / "0012.png").write_bytes(b"garbage")
    archive = write_archive(root, tmp_path / "images.zip")
    message = load_error("cifar10", archive, cache_dir=tmp_path / "cache")
    assert f"{archive}:images/train/frog/0012.png" in message


def test_stray_file_in_a_class_folder(tmp_path):
    root = small_folder(tmp_path)
    (root / "train" / "cat" / "notes.txt").write_text("hello")
    assert "notes.txt" in load_error("cifar10", root)


def test_ten_class_folders_for_cifar100(tmp_path):
    message = load_error("cifar100", small_folder(tmp_path))
    assert "10 classes" in message and "has 100" in message and "dataset=cifar10?" in message


def test_train_and_test_class_folders_differ(tmp_path):
    root = small_folder(tmp_path)
    (root / "test" / "truck").rename(root / "test" / "lorry")
    message = load_error("cifar10", root)
    assert "only in train: truck" in message and "only in test: lorry" in message


def test_empty_class_folder(tmp_path):
    root = small_folder(tmp_path)
    for f in (root / "test" / "bird").iterdir():
        f.unlink()
    assert str(root / "test" / "bird") in load_error("cifar10", root)


# --- downloads (never over the network here) ---

@pytest.fixture
def fake_downloads(monkeypatch, tmp_path_factory):
    """Stands in for torchvision's download_url: 'downloads' a synthetic official archive, no network."""
    calls = []

    def download_url(url, root, filename=None, md5=None):
        calls.append((url, root, filename))
        src = tmp_path_factory.mktemp("official")
        folder = (write_cifar10_pickles if "cifar-10-" in filename else write_cifar100_pickles)(src, 2, 1)
        inner = next(p for p in folder.iterdir() if p.is_dir())
        write_archive(inner, Path(root) / filename)

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", download_url)
    return calls


def test_download_is_used_when_allowed_and_absent(tmp_path, fake_downloads):
    root = tmp_path / "new" / "folder"
    c = load_cifar("cifar10", root, download=True)
    assert fake_downloads == [(torchvision.datasets.CIFAR10.url, str(root), "cifar-10-python.tar.gz")]
    np.testing.assert_array_equal(c.train_images, synthetic_cifar(10, 2, 1)[0])
    load_cifar("cifar10", root, download=True)  # present now: no second download
    assert len(fake_downloads) == 1


def test_cifar100_download(tmp_path, fake_downloads):
    c = load_cifar("cifar100", tmp_path, download=True, labels="coarse")
    assert [c[2] for c in fake_downloads] == ["cifar-100-python.tar.gz"] and len(c.classes) == 20


def test_no_download_without_permission(tmp_path, fake_downloads):
    load_error("cifar10", tmp_path, download=False)
    assert fake_downloads == []


def test_failed_download(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    message = load_error("cifar10", tmp_path, download=True)
    assert "downloading CIFAR-10" in message and "network is unreachable" in message
    assert "data=<path>" in message


def test_official_archive_members_are_never_extracted(tmp_path):
    """A member named ../escape is read into memory like any other, never written anywhere."""
    src = small_folder(tmp_path)
    archive = tmp_path / "sneaky.tar"
    with tarfile.open(archive, "w") as tf:
        for f in sorted(src.rglob("*.png")):
            tf.add(f, f.relative_to(src).as_posix())
        tf.add(src / "train" / "cat" / "0006.png", "../escape.png")
    c = load_cifar("cifar10", archive, cache_dir=tmp_path / "cache")
    assert len(c.train_images) == 20
    assert not (tmp_path.parent / "escape.png").exists()
