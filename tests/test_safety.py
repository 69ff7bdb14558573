"""A diverged run stops and keeps its last good checkpoint; user errors are one line and exit code 2; nothing
read from disk (a dataset file, a checkpoint) can run code."""

import pathlib
import pickle
import shutil

import pytest
import torch
from runs import STEPS_PER_EPOCH, copy_run, one_thread, reference_run, train_args
from synthetic import python2_pickle_bytes, write_cifar10_pickles

import train.loop
from train import checkpoint
from train.cli import main
from train.config import parse
from train.evaluate import main as evaluate_main


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cifar10_pickles):
    return reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)[0]


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --- divergence ---------------------------------------------------------------------------------------


def test_huge_lr_stops_with_the_epoch_and_step(cifar10_pickles, tmp_path, capsys):
    out = tmp_path / "run"
    with one_thread():
        assert main(train_args(cifar10_pickles, out, "lr=1e30", "epochs=1", "batch_size=60")) == 1
    err = one_line_error(capsys, "at epoch 1, step", "no checkpoint was written yet; try a lower lr")
    assert "loss became nan" in err or "loss became inf" in err
    assert not (out / "last.pt").exists() and not (out / "results.json").exists()


def test_divergence_hint_names_adamw_for_a_vit_on_sgd():
    from train.loop import divergence_hint

    sgd = parse(["model=vit", "recipe=seed"])
    assert divergence_hint(sgd) == "try a lower lr, or recipe=fast (AdamW for the ViTs)"
    assert divergence_hint(parse(["model=vit_tiny", "recipe=fast"])) == "try a lower lr"  # already AdamW
    assert divergence_hint(parse(["model=resnet18"])) == "try a lower lr"


@pytest.mark.parametrize("poison", ["loss", "params"])
def test_divergence_keeps_the_last_good_checkpoint(reference, cifar10_pickles, tmp_path, capsys, monkeypatch,
                                                   poison):
    """The reference run resumed for epochs 3 and 4 goes NaN in epoch 4, at its step 3 (loss and params) or
    at its last step (params only, the loss still finite): last.pt and best.pt stay, byte for byte, as epoch 3
    left them, and the message names where it happened and the checkpoint kept."""
    run_dir = copy_run(reference, tmp_path / "run")
    real, count, before = train.loop.make_train_step, [0], {}
    at = STEPS_PER_EPOCH + (3 if poison == "loss" else STEPS_PER_EPOCH)
    writers = []

    class Recorded(checkpoint.Writer):
        def __init__(self):
            super().__init__()
            writers.append(self)

    monkeypatch.setattr(checkpoint, "Writer", Recorded)

    def make(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(ts, batch, lr, key=None):
            count[0] += 1
            if count[0] == STEPS_PER_EPOCH + 1:  # epoch 4's first step: epoch 3's checkpoints are asked for
                writers[-1].wait()  # and, once the background write ends, on disk
                before.update({name: (run_dir / name).read_bytes() for name in ("last.pt", "best.pt")})
            ts, m = step(ts, batch, lr, key)
            if count[0] == at:
                ts = ts._replace(params={k: torch.full_like(v, float("nan")) for k, v in ts.params.items()})
                if poison == "loss":
                    m = {**m, "loss": torch.tensor(float("nan"))}
            return ts, m

        return wrapped

    monkeypatch.setattr(train.loop, "make_train_step", make)
    with one_thread():
        assert main([f"out={run_dir}", "resume=true", "epochs=4"]) == 1
    where = "loss became nan at epoch 4, step 3 of 18" if poison == "loss" else \
        "parameters became non-finite at epoch 4, step 18 of 18"
    one_line_error(capsys, where, f"the last good checkpoint, {run_dir / 'last.pt'} (after epoch 3), is kept")
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert checkpoint.load(run_dir / "last.pt")["epoch"] == 3


# --- user errors ----------------------------------------------------------------------------------------


def test_the_checkpoint_writer_keeps_order_snapshots_and_errors(tmp_path, monkeypatch):
    """Writer: the file holds the tensors as they were when save() was called (the caller writes into them
    right after, as the CUDA-graph step does), writes land in the order asked, and a failed write is raised by
    the next wait(), not lost in its thread."""
    w = checkpoint.Writer()
    t = torch.arange(4.0)
    w.save(tmp_path / "a.pt", {"t": t, "n": 1})
    t.add_(100)  # the caller's next step
    w.save([tmp_path / "b.pt", tmp_path / "a.pt"], {"t": t, "n": 2})
    w.wait()
    assert checkpoint.load(tmp_path / "a.pt")["n"] == 2 and checkpoint.load(tmp_path / "b.pt")["n"] == 2
    w.save(tmp_path / "c.pt", {"t": t, "n": 3})
    t.zero_()
    w.wait()
    assert torch.equal(checkpoint.load(tmp_path / "c.pt")["t"], torch.arange(4.0) + 100)

    def fail(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_atomically", fail)
    w.save(tmp_path / "d.pt", {"t": t})
    with pytest.raises(OSError, match="No space left"):
        w.wait()
    w.wait()  # raised once
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["model=resnet19"], ["unknown model 'resnet19'", "resnet18, resnet34"]),
        (["dataset=svhn"], ["dataset='svhn' is not one of: cifar10, cifar100"]),
        (["lr=-0.1"], ["lr must be positive, got -0.1"]),
        (["batch_size=1000"], ["batch_size=1000 is larger than the training split (180 images)"]),
        (["resume=true"], ["resume=true but", "holds no checkpoint (no last.pt)"]),
    ],
)
def test_user_errors(cifar10_pickles, tmp_path, capsys, extra, needles):
    assert main(train_args(cifar10_pickles, tmp_path / "run", *extra)) == 2
    one_line_error(capsys, *needles)


def test_unreadable_data_is_a_user_error(cifar10_pickles, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(cifar10_pickles / "cifar-10-batches-py", data / "cifar-10-batches-py")  # no decoded cache
    real = pathlib.Path.read_bytes

    def denied(self):
        if self.name == "data_batch_1":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    assert main(train_args(data, tmp_path / "run")) == 2
    one_line_error(capsys, "cannot read the data at", "data_batch_1 (Permission denied)")


def test_resume_refuses_a_checkpoint_that_does_not_fit(reference, cifar10_pickles, tmp_path, capsys):
    run_dir = copy_run(reference, tmp_path / "run")
    saved = checkpoint.load(run_dir / "last.pt")
    saved["params"]["fc.weight"] = torch.zeros(10, 8)
    checkpoint.save(run_dir / "last.pt", {k: v for k, v in saved.items() if k not in ("format", "sha256")})
    assert main([*train_args(cifar10_pickles, run_dir), "resume=true"]) == 2
    one_line_error(capsys, "does not fit this model: fc.weight is (10, 8), expected (10, 32)")


def test_resume_refuses_other_data(reference, tmp_path, capsys):
    other = write_cifar10_pickles(tmp_path / "other", seed=7)  # same layout and classes, other images
    run_dir = copy_run(reference, tmp_path / "run")
    assert main([f"out={run_dir}", f"data={other}", "resume=true"]) == 2
    one_line_error(capsys, "differs from the data the run in", "point data=<path> at that copy")


def test_resume_refuses_a_truncated_checkpoint(reference, tmp_path, capsys):
    run_dir = copy_run(reference, tmp_path / "run")
    data = (run_dir / "last.pt").read_bytes()
    (run_dir / "last.pt").write_bytes(data[: len(data) // 3])
    assert main([f"out={run_dir}", "resume=true"]) == 2
    one_line_error(capsys, "last.pt is truncated or corrupt")


# --- nothing read from disk runs code -------------------------------------------------------------------


class Booby:
    """Unpickling this calls open(marker, "w"): the marker file appears if the loader ran the call."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_crafted_pickle_would_run_code(tmp_path):
    """The payload is live: plain pickle.loads does call the function (so the tests below mean something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"x": Booby(marker)}, protocol=2)).get("x").close()
    assert marker.exists()


def test_crafted_dataset_file_is_refused(cifar10_pickles, tmp_path, capsys):
    data, marker = tmp_path / "data", tmp_path / "ran"
    shutil.copytree(cifar10_pickles / "cifar-10-batches-py", data / "cifar-10-batches-py")
    crafted = {b"data": Booby(marker), b"labels": [0]}  # written as python2 wrote the official files
    (data / "cifar-10-batches-py" / "data_batch_1").write_bytes(python2_pickle_bytes(crafted))
    assert main(train_args(data, tmp_path / "run")) == 2
    one_line_error(capsys, "data_batch_1: refused to load the global io.open")
    assert not marker.exists()


@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_crafted_checkpoint_is_refused_on_resume_and_by_the_tools(reference, tmp_path, capsys, container):
    run_dir, marker = copy_run(reference, tmp_path / "run"), tmp_path / "ran"
    crafted = {"format": checkpoint.FORMAT, "params": {}, "hook": Booby(marker)}
    for name in ("last.pt", "best.pt"):
        if container == "torch.save":
            torch.save(crafted, run_dir / name)
        else:
            (run_dir / name).write_bytes(pickle.dumps(crafted, protocol=2))
    assert main([f"out={run_dir}", "resume=true"]) == 2
    one_line_error(capsys, f"refused: {run_dir / 'last.pt'} asks to run code (io.open) when loaded",
                   "nothing in it was run")
    assert evaluate_main([f"run={run_dir}"]) == 2
    one_line_error(capsys, f"refused: {run_dir / 'best.pt'} asks to run code (io.open)")
    assert evaluate_main([f"run={reference}", f"checkpoint={run_dir / 'last.pt'}"]) == 2
    one_line_error(capsys, "asks to run code (io.open)")
    assert not marker.exists()
