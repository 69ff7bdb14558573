"""User paths through the data, end to end where they are about the command line: the other dataset or a
mistyped path before a download, pickles re-saved by Python 3, a tool's wording of a dataset mix-up, and what
the first (slow) decode of an image folder says while it runs.

Commands run in a fresh interpreter with every proxy pointed at a closed local port, so a download fails at
once whatever the network here, and nothing is ever fetched.
"""

import codecs
import os
import pickle
import pickletools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.utils
from runs import REPO, one_thread, reference_run
from synthetic import (
    CIFAR10_CLASSES,
    synthetic_cifar,
    write_archive,
    write_cifar10_pickles,
    write_cifar100_pickles,
    write_image_folder,
)

from data import DataError, load_cifar
from data.pickles import load_pickle
from train.config import parse
from train.evaluate import main as evaluate_main

CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, so a connection is refused at once
OFFLINE = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")} | {
    key: CLOSED_PORT for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
TRAIN = ["model=resnet18", "net.width=4", "device=cpu", "compile=false", "progress=false", "epochs=1"]


def command(module: str, *args) -> subprocess.CompletedProcess:
    """`python -m <module> args...` as a user types it, offline."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=OFFLINE,
                          capture_output=True, text=True, timeout=240)


def one_line_error(err: str, *needles: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    """Every file and folder under `folder` (hidden ones too); a file's size and modification time. (A folder's
    own time changes when something is made in it and removed again.)"""
    return sorted((str(p.relative_to(folder)), *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else
                                                 (-1, -1))) for p in folder.rglob("*"))


@pytest.fixture
def no_download(monkeypatch):
    """torchvision's download_url, recording calls and failing as the network here would."""
    calls = []

    def download_url(url, root, filename=None, md5=None):
        calls.append((url, root, filename))
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", download_url)
    return calls


# --- 5: never download beside the other dataset -------------------------------------------------------------


def test_train_refuses_to_download_cifar100_beside_cifar10(tmp_path):
    root = write_cifar10_pickles(tmp_path / "cifar10", 2, 1)
    before = snapshot(tmp_path)
    proc = command("train", "dataset=cifar100", f"data={root}", f"out={tmp_path / 'run'}", *TRAIN)  # download on
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr, "error: ", f"{root / 'cifar-10-batches-py'} holds CIFAR-10, not CIFAR-100",
                   "did you mean dataset=cifar10?")
    assert "downloading" not in proc.stderr and snapshot(tmp_path) == before  # no archive, no run dir


def cifar10_pickle_folder(tmp_path: Path) -> tuple[Path, Path]:
    return write_cifar10_pickles(tmp_path / "src", 2, 1) / "cifar-10-batches-py", tmp_path / "src"


def cifar10_official_archive(tmp_path: Path) -> tuple[Path, Path]:
    folder = write_cifar10_pickles(tmp_path / "src", 2, 1) / "cifar-10-batches-py"
    archive = write_archive(folder, tmp_path / "root" / "cifar-10-python.tar.gz")
    shutil.rmtree(tmp_path / "src")
    return archive, tmp_path / "root"


def cifar100_folder(tmp_path: Path) -> tuple[Path, Path]:
    root = write_cifar100_pickles(tmp_path / "root", 1, 1)
    return root / "cifar-100-python", root


@pytest.mark.parametrize("layout,dataset,other", [
    (cifar10_pickle_folder, "cifar100", "cifar10"),  # root is the pickle folder itself
    (cifar10_official_archive, "cifar100", "cifar10"),  # root holds the official archive
    (cifar100_folder, "cifar10", "cifar100"),
])
def test_no_download_beside_the_other_dataset_in_any_layout(tmp_path, no_download, layout, dataset, other):
    copy, root = layout(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as info:
        load_cifar(dataset, root, download=True)
    message = str(info.value)
    assert no_download == [] and snapshot(tmp_path) == before
    assert f"{copy} holds {'CIFAR-100' if other == 'cifar100' else 'CIFAR-10'}" in message
    assert f"did you mean dataset={other}?" in message and "\n" not in message


def test_train_with_a_mistyped_data_path_leaves_nothing_behind(tmp_path):
    """The download into a folder that is not there fails (offline): the folders it made go again."""
    (tmp_path / "data").mkdir()
    root = tmp_path / "data" / "cifra10" / "copy"  # "cifra10": a typo, two folders that do not exist
    before = snapshot(tmp_path)
    proc = command("train", f"data={root}", f"out={tmp_path / 'run'}", *TRAIN)
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr, "error: ", f"no CIFAR-10 data at {root} (no such file or folder)",
                   "download=false", "data=<path>")
    assert snapshot(tmp_path) == before  # not data/cifra10/, nor data/cifra10/copy/, nor a run dir


@pytest.mark.parametrize("exists", [True, False])
def test_a_failed_download_removes_what_it_wrote(tmp_path, monkeypatch, exists):
    """A partial archive goes, and so do the folders the download made; a folder that was there stays."""
    root = tmp_path / "new" / "data"
    if exists:
        root.mkdir(parents=True)
        (root / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)

    def cut_off(url, root_, filename=None, md5=None):
        Path(root_).mkdir(parents=True, exist_ok=True)
        (Path(root_) / filename).write_bytes(b"\x1f\x8b partial")
        raise OSError("connection reset by peer")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", cut_off)
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", root, download=True)
    message = str(info.value)
    assert snapshot(tmp_path) == before
    assert "downloading CIFAR-10" in message and "connection reset by peer" in message and str(root) in message
    assert "download=false" in message and "data=<path>" in message and "\n" not in message


# --- 6: the official pickles re-saved by Python 3 -----------------------------------------------------------


def globals_named(blob: bytes) -> set[tuple[str, str]]:
    return {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_pickles_resaved_by_python3_are_read(tmp_path, dataset):
    """Loaded as the usual recipe does (encoding="latin1": str keys and names) and dumped at protocol 2, where
    Python 3 writes numpy's bytes as _codecs.encode(text, "latin1")."""
    writer, num_classes = (write_cifar10_pickles, 10) if dataset == "cifar10" else (write_cifar100_pickles, 100)
    root = writer(tmp_path / "data", 2, 1)
    for path in (p for p in root.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            d = pickle.load(f, encoding="latin1")
        blob = pickle.dumps(d, protocol=2)
        if "data" in d:  # the arrays' bytes (meta files hold str names only)
            assert ("_codecs", "encode") in globals_named(blob), path
        path.write_bytes(blob)
    c = load_cifar(dataset, root, cache_dir=tmp_path / "cache")
    for got, want in zip(c[:4], synthetic_cifar(num_classes, 2, 1), strict=True):
        np.testing.assert_array_equal(got, want)
    assert c.classes[0] == ("airplane" if dataset == "cifar10" else "fine_00")


class EncodeCall:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return codecs.encode, self.args


@pytest.mark.parametrize("args", [("x", "rot13"), ("x", "utf-8"), ("x", "latin1", "ignore"), (b"x", "latin1")])
def test_codecs_encode_is_refused_but_for_latin1_text(args):
    blob = pickle.dumps({"data": EncodeCall(*args)}, protocol=2)
    assert globals_named(blob) == {("_codecs", "encode")}
    with pytest.raises(DataError, match=r"crafted\.pickle: refused .*_codecs\.encode") as info:
        load_pickle(blob, "crafted.pickle")
    assert "not an official CIFAR file" in str(info.value)
    assert load_pickle(pickle.dumps({"data": EncodeCall("x", "latin-1")}, protocol=2), "ok") == {"data": b"x"}


# --- 7: a tool says what to do in its own terms -------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar10_run(tmp_path_factory, cifar10_pickles):
    return reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)[0]


def test_evaluate_on_cifar100_data_names_the_runs_dataset(cifar10_run, cifar100_pickles):
    before = snapshot(cifar100_pickles)
    proc = command("train.evaluate", f"run={cifar10_run}", f"data={cifar100_pickles}", "device=cpu")
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr, "error: ", f"{cifar100_pickles / 'cifar-100-python'} holds CIFAR-100, but the run "
                   "trained on CIFAR-10", "point data=<path> at a CIFAR-10 copy")
    assert "dataset=" not in proc.stderr and snapshot(cifar100_pickles) == before


def cifar100_archive(tmp_path: Path) -> tuple[Path, str]:
    folder = write_cifar100_pickles(tmp_path / "src", 1, 1) / "cifar-100-python"
    archive = write_archive(folder, tmp_path / "c100.tar.gz")
    return archive, f"{archive} holds the CIFAR-100 pickles"


def images_of_20_classes(tmp_path: Path) -> tuple[Path, str]:
    root = write_image_folder(tmp_path / "images", [f"c{k:02d}" for k in range(20)], 1, 1)
    return root, f"{root} (image folder) has 20 classes"


@pytest.mark.parametrize("layout", [cifar100_archive, images_of_20_classes])
def test_evaluate_mix_ups_in_other_layouts(cifar10_run, tmp_path, capsys, layout):
    data, says = layout(tmp_path)
    with one_thread():
        assert evaluate_main([f"run={cifar10_run}", f"data={data}", "device=cpu"]) == 2
    err = one_line_error(capsys.readouterr().err, f"{says}, but the run trained on CIFAR-10 (10 classes): point "
                         "data=<path> at a CIFAR-10 copy")
    assert "dataset=" not in err


# --- 8/10: the first decode says what it does ---------------------------------------------------------------

DECODING = re.compile(r"decoding 30 images of (.+) \(image folder\) once; cached in (.+\.npz)$")
DECODED = re.compile(r"decoded 30 images in \d+\.\d s$")


def test_the_first_decode_says_what_it_does_and_the_cached_load_nothing(tmp_path, capsys):
    root = write_image_folder(tmp_path / "jpg", CIFAR10_CLASSES, 2, 1, ext="jpg")
    lines = []
    load_cifar("cifar10", root, log=lines.append, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").iterdir()
    assert DECODING.match(lines[0]).groups() == (str(root), str(cache)), lines
    assert DECODED.match(lines[-1]), lines
    again = []
    load_cifar("cifar10", root, log=again.append, cache_dir=tmp_path / "cache")
    assert again == []
    assert capsys.readouterr() == ("", "")  # nothing printed: data/ speaks only through log


def test_progress_lines_while_decoding(tmp_path, monkeypatch, capsys):
    """Outside a terminal: a line every LINE_IMAGES images (or LINE_SECONDS); no bar, nothing printed."""
    import data.progress

    monkeypatch.setattr(data.progress, "LINE_IMAGES", 10)
    root = write_image_folder(tmp_path / "png", CIFAR10_CLASSES, 2, 1)
    lines = []
    load_cifar("cifar10", root, log=lines.append, cache_dir=tmp_path / "cache")
    assert [line.split(" images")[0] for line in lines[1:-1]] == ["decoded 10/30", "decoded 20/30"]
    assert DECODED.match(lines[-1]) and capsys.readouterr() == ("", "")


def test_a_terminal_gets_a_bar_instead_of_lines(tmp_path, monkeypatch, capsys):
    import data.progress

    monkeypatch.setattr(data.progress, "LINE_IMAGES", 10)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    root = write_image_folder(tmp_path / "png", CIFAR10_CLASSES, 2, 1)
    lines = []
    load_cifar("cifar10", root, log=lines.append, cache_dir=tmp_path / "cache")
    assert len(lines) == 2 and DECODING.match(lines[0]) and DECODED.match(lines[1])
    assert "decoding:" in capsys.readouterr().err  # tqdm's bar, taken off at the end


def test_silent_by_default(tmp_path, capsys):
    root = write_image_folder(tmp_path / "png", CIFAR10_CLASSES, 2, 1)
    load_cifar("cifar10", root, cache_dir=tmp_path / "cache")
    assert capsys.readouterr() == ("", "")


def test_the_trainer_and_the_tools_pass_their_log(tmp_path, cifar10_run):
    from train.device_data import load_data
    from train.run_dir import load_run, test_set

    root = write_image_folder(tmp_path / "jpg", CIFAR10_CLASSES, 2, 1, ext="jpg")
    lines = []
    load_data(parse([f"data={root}", "download=false", "progress=false"]), lines.append)
    assert DECODING.match(lines[0]) and DECODED.match(lines[-1])
    shutil.rmtree(root / ".cifar-zoo-cache")
    lines.clear()
    test_set(load_run(cifar10_run), str(root), log=lines.append)
    assert DECODING.match(lines[0]) and DECODED.match(lines[-1])
