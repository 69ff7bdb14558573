"""Checkpoints are complete or refused; a run stopped by SIGTERM or SIGINT resumes to the same bits; the resume
rules; TensorBoard logging."""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from runs import (
    REPO,
    STEPS_PER_EPOCH,
    FakeSummaryWriter,
    assert_same_run,
    copy_run,
    fake_tensorboard_module,
    metrics,
    one_thread,
    reference_run,
    train_args,
)

import train.loop
from train import checkpoint
from train.checkpoint import CheckpointError
from train.cli import main, resume_command
from train.config import from_json
from train.resume import CHECKPOINT_KEYS


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cifar10_pickles):
    return reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)


def stop_after(monkeypatch, calls: int, action) -> None:
    """Make the trainer's step call `action()` right after its `calls`-th step (counted over the process)."""
    real = train.loop.make_train_step
    count = [0]

    def make(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(ts, batch, lr, key=None):
            out = step(ts, batch, lr, key)
            count[0] += 1
            if count[0] == calls:
                action()
            return out

        return wrapped

    monkeypatch.setattr(train.loop, "make_train_step", make)


# --- the checkpoint file ---------------------------------------------------------------------------------


def test_checkpoint_round_trip_holds_the_resume_state(reference):
    run_dir, _ = reference
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["format"] == checkpoint.FORMAT and len(saved["sha256"]) == 64
    assert set(saved) == {*CHECKPOINT_KEYS, "format", "sha256"}
    assert saved["epoch"] == 2 and saved["step"] == 0 and saved["best"]["epoch"] in (1, 2)
    assert len(saved["train_idx"]) == 180 and len(saved["val_idx"]) == 20
    assert saved["state"]["bn1.running_var"].shape == (4,)


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -22, -1])
def test_truncated_checkpoint_is_refused(reference, tmp_path, keep):
    data = (reference[0] / "last.pt").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data) if keep < 0 else keep
    path = tmp_path / "last.pt"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupt|corrupt") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_damaged_checkpoint_fails_its_digest(reference, tmp_path):
    """A file that still parses but whose tensors changed (a flipped bit in place) is refused by the sha256."""
    saved = torch.load(reference[0] / "last.pt", weights_only=True)
    saved["params"]["fc.bias"][0] += 1e-6
    torch.save(saved, tmp_path / "changed.pt")
    with pytest.raises(CheckpointError, match="fails its sha256 check"):
        checkpoint.load(tmp_path / "changed.pt")
    del saved["sha256"]
    torch.save(saved, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="has no digest"):
        checkpoint.load(tmp_path / "incomplete.pt")
    # A byte flipped inside the file: refused one way or the other, never loaded.
    data = bytearray((reference[0] / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(tmp_path / "flipped.pt")


def test_a_failed_write_leaves_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    path = copy_run(reference[0], tmp_path / "run") / "last.pt"
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"params": {}})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


# --- stopping and resuming --------------------------------------------------------------------------------

# Runs the real command line in a fresh interpreter, on one thread, with a hook after the trainer's N-th step:
# it writes a marker file and waits for the test's go-ahead (sent after the test's signal), so the signal lands
# in the middle of an epoch at a known step whatever the machine's speed.
SIGNALLED_CHILD = """
import pathlib, sys, time
import pytest, torch
torch.set_num_threads(1)
sys.path.insert(0, "tests")
from test_resume import stop_after
from train.cli import main
marker, go, calls = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
def wait_for_go():
    marker.touch()
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
stop_after(pytest.MonkeyPatch(), calls, wait_for_go)
sys.exit(main(sys.argv[4:]))
"""


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(reference, cifar10_pickles, tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(cifar10_pickles, out)
    marker, go = tmp_path / "at-step", tmp_path / "go"
    stop_at = STEPS_PER_EPOCH + 5  # epoch 2, step 5
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", SIGNALLED_CHILD, str(marker), str(go), str(stop_at), *args],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached the step"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        go.touch()
        stdout, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 143, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1
    assert "SIGTERM: stopped in epoch 2 after step 5 of 18" in stderr
    assert "resume with: " in stderr and stderr.rstrip().endswith(" resume=true") and f"out={out}" in stderr
    saved = checkpoint.load(out / "last.pt")
    assert (saved["epoch"], saved["step"], len(saved["epoch_losses"])) == (1, 5, 5)
    assert [m["epoch"] for m in metrics(out)] == [1]

    with one_thread():
        assert main([*args, "resume=true"]) == 0
    assert_same_run(reference[0], out)
    assert "resuming from" in capsys.readouterr().out


def test_sigint_at_an_epoch_end_then_resume_from_the_run_dir_alone(reference, cifar10_pickles, tmp_path,
                                                                   capsys, monkeypatch):
    """Ctrl-C during the last step of epoch 1: the epoch's checkpoint is the safe point; exit code 130.
    `out=<run dir> resume=true` alone then continues (the rest of the config comes from config.json), and a
    leftover metrics line of a later epoch is dropped. results.json's compile seconds are both commands'."""
    out = tmp_path / "run"
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake_tensorboard_module())
    monkeypatch.setattr(train.loop, "compile_steps", lambda ctx, ts: 1.25)  # seconds, each command's compile
    with pytest.MonkeyPatch.context() as mp, one_thread():
        stop_after(mp, STEPS_PER_EPOCH, lambda: signal.raise_signal(signal.SIGINT))
        assert main(train_args(cifar10_pickles, out)) == 130
    err = capsys.readouterr().err
    assert "SIGINT: stopped after epoch 1 and saved" in err and err.count("\n") == 1
    assert checkpoint.load(out / "last.pt")["step"] == 0
    with (out / "metrics.jsonl").open("a") as f:  # as if a crash came after a later epoch's line
        f.write('{"epoch": 2, "train_loss": 0}\n')

    with one_thread():
        assert main([f"out={out}", "resume=true"]) == 0
    assert_same_run(reference[0], out)
    assert json.loads((out / "results.json").read_text())["compile_seconds"] == 2.5
    # train.log: each command's line, then what it printed; the resumed command's appended to the stopped one's
    log = (out / "train.log").read_text().splitlines()
    commands = [i for i, line in enumerate(log) if line.startswith("python -m train ")]
    assert log[commands[0]] == shlex.join(["python", "-m", "train", *train_args(cifar10_pickles, out)])
    assert commands[0] == 0 and log[commands[1]] == f"python -m train out={out} resume=true"
    epochs = [i for i, line in enumerate(log) if line.startswith("epoch")]
    assert len(epochs) == len(metrics(out)) and commands[0] < epochs[0] < commands[1] < epochs[1]
    assert log[commands[1] + 2].startswith("resuming from") and log[-1].startswith("test (best val epoch ")
    writer = FakeSummaryWriter.instances[-1]
    assert writer.purge_step == 2 and {s for _, _, s in writer.scalars} == {2} and writer.closed


def test_signal_handlers_are_restored(reference, cifar10_pickles, tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run_dir = copy_run(reference[0], tmp_path / "run")
    with one_thread():
        assert main([f"out={run_dir}", "resume=true"]) == 0  # finished already: evaluates the test set only
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# --- what a resume may change ------------------------------------------------------------------------------


def test_resume_with_more_epochs_continues_the_plateau_schedule(reference, cifar10_pickles, tmp_path):
    run_dir = copy_run(reference[0], tmp_path / "run")
    with one_thread():
        assert main([f"out={run_dir}", "resume=true", "epochs=3"]) == 0
    lines = metrics(run_dir)
    assert [m["epoch"] for m in lines] == [1, 2, 3] and lines[:2] == metrics(reference[0])
    assert checkpoint.load(run_dir / "last.pt")["epoch"] == 3


@pytest.mark.parametrize(
    "extra,message",
    [
        (["lr=0.1"], "resume=true: lr=0.1 (saved: 0.05) differs from the run saved in"),
        (["net.width=8"], "resume=true: net={'width': 8} (saved: {'width': 4}) differs"),
        (["epochs=1"], "resume=true: epochs=1, but"),
    ],
)
def test_resume_refuses_changes(reference, cifar10_pickles, tmp_path, capsys, extra, message):
    run_dir = copy_run(reference[0], tmp_path / "run")
    assert main([*train_args(cifar10_pickles, run_dir), "resume=true", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_resume_refuses_epochs_change_with_onecycle(reference, tmp_path, capsys):
    run_dir = copy_run(reference[0], tmp_path / "run")
    saved = checkpoint.load(run_dir / "last.pt")
    cfg = dataclasses.replace(from_json(saved["config"], "last.pt"), schedule="onecycle")
    saved["config"] = cfg.to_json()
    checkpoint.save(run_dir / "last.pt", {k: v for k, v in saved.items() if k not in ("format", "sha256")})
    (run_dir / "config.json").write_text(cfg.to_json())
    assert main([f"out={run_dir}", "resume=true", "epochs=3"]) == 2
    assert "epochs cannot change with schedule=onecycle" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_that_is_not_a_trainers(reference, tmp_path, capsys):
    run_dir = copy_run(reference[0], tmp_path / "run")
    checkpoint.save(run_dir / "last.pt", {"params": {}})
    assert main([f"out={run_dir}", "resume=true"]) == 2
    assert "is not a complete training checkpoint (it has no state, momentum" in capsys.readouterr().err


# --- TensorBoard ------------------------------------------------------------------------------------------


def test_tensorboard_gets_every_epoch_scalar(reference):
    run_dir, writer = reference
    assert writer.log_dir == str(run_dir / "tensorboard") and writer.purge_step == 1 and writer.closed
    lines = metrics(run_dir)
    for tag, key in (("loss/train", "train_loss"), ("top1/val", "val_top1"), ("lr", "lr")):
        assert [(v, s) for t, v, s in writer.scalars if t == tag] == [(m[key], m["epoch"]) for m in lines]


def test_without_tensorboard_one_log_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    lines = []
    assert train.loop.tensorboard_writer(tmp_path, None, lines.append) is None
    assert len(lines) == 1 and "pip install 'cifar-zoo[tensorboard]'" in lines[0]


def test_a_second_signal_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train.loop.TrainingInterrupted, match="stopped at once by a second SIGINT") as e:
        with train.loop.StopRequests() as stop:
            signal.raise_signal(signal.SIGTERM)
            assert stop.signum == signal.SIGTERM  # the first only asks the loop to stop at the next step
            signal.raise_signal(signal.SIGINT)
    assert e.value.signum == signal.SIGINT and signal.getsignal(signal.SIGTERM) == before


def test_resume_command_repeats_the_words_with_resume_true():
    command = resume_command(["model=resnet18", "resume=false", "out=runs/a b"])
    assert command.endswith(" -m train model=resnet18 'out=runs/a b' resume=true")
