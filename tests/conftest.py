"""Shared fixtures: tiny synthetic CIFAR copies in every format load_cifar reads, written once per session.

Each fixture returns the path to pass as data= (load_cifar's root). They are shared: read them, never
modify them (copy one into tmp_path first). Loading one writes its cache into .cifar-zoo-cache/ inside or
beside it, which is harmless. Sizes: synthetic.N_TRAIN_PER_CLASS train and N_TEST_PER_CLASS test images
per class; the expected arrays are synthetic.synthetic_cifar(...) with the writer's arguments.
"""

import os

# Under pytest-xdist (`make test`) each worker is one of one process per core, so torch's own threads would only
# contend: one each (set before torch is imported; the subprocesses the tests start inherit it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

# Without a GPU the Triton kernels run in Triton's interpreter, which must be switched on before triton is
# first imported (triton 3.8 reads it at import and when kernels are decorated): here, before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from synthetic import (  # noqa: E402
    CIFAR10_CLASSES,
    write_archive,
    write_cifar10_pickles,
    write_cifar100_pickles,
    write_image_folder,
)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked gpu when there is no CUDA device (the marker's meaning in pyproject.toml). With one,
    under pytest-xdist, they go to one worker (`--dist loadgroup`): their timings and memory assume a GPU alone."""
    if torch.cuda.is_available():
        if config.pluginmanager.hasplugin("xdist"):
            for item in items:
                if "gpu" in item.keywords:
                    item.add_marker(pytest.mark.xdist_group("gpu"))
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cifar10_pickles(tmp_path_factory):
    """Root holding cifar-10-batches-py/ (official format, synthetic images)."""
    return write_cifar10_pickles(tmp_path_factory.mktemp("cifar10_pickles"))


@pytest.fixture(scope="session")
def cifar100_pickles(tmp_path_factory):
    """Root holding cifar-100-python/ (official format, synthetic images, coarse = fine // 5)."""
    return write_cifar100_pickles(tmp_path_factory.mktemp("cifar100_pickles"))


@pytest.fixture(scope="session")
def image_folder_png(tmp_path_factory):
    """Root holding train/<class>/*.png and test/<class>/*.png with the CIFAR-10 class names."""
    return write_image_folder(tmp_path_factory.mktemp("image_folder_png"), CIFAR10_CLASSES, ext="png")


@pytest.fixture(scope="session")
def image_folder_jpg(tmp_path_factory):
    """As image_folder_png, JPEG-encoded (lossy: compare loosely)."""
    return write_image_folder(tmp_path_factory.mktemp("image_folder_jpg"), CIFAR10_CLASSES, ext="jpg")


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory):
    """A .tar.gz of the PNG image folder, inside one top-level folder."""
    folder = write_image_folder(tmp_path_factory.mktemp("image_archive_src") / "cifar10-png", CIFAR10_CLASSES)
    return write_archive(folder, tmp_path_factory.mktemp("image_archive") / "cifar10-png.tar.gz")
