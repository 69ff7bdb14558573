"""Shared by the reliability and tools tests: one tiny reference run, trained once per session, and helpers.

The reference run is the real trainer on the synthetic CIFAR-10 pickles (20 train images per class, 10%
held out: 180 train images, 18 steps of 10 per epoch), a 4-channel ResNet-18, eager, one CPU thread (results
are bitwise repeatable only at a fixed thread count). Tests that change a run directory copy it first.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from nets.core import Net
from train.config import parse
from train.loop import TIMING_KEYS, run

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=resnet18", "net.width=4", "device=cpu", "compile=false", "download=false", "progress=false"]
# The seed recipe (plateau schedule, val_fraction 0.1, crop and flip only) at a test's size.
REFERENCE = ["recipe=seed", "epochs=2", "batch_size=10", "lr=0.05", "seed=1"]
STEPS_PER_EPOCH = 18  # 180 training images / batch_size 10


def train_args(data, out, *extra) -> list[str]:
    return [*TINY, f"data={data}", f"out={out}", *REFERENCE, *extra]


def bn_net(num_classes: int = 10, width: int = 8) -> Net:
    """Conv-BN-ReLU twice (the second at stride 2), pool, linear: BatchNorm state as the zoo's nets have, in 2
    convolutions where a ResNet-18 has 20. The distributed tests' BatchNorm net; the compiled-loop test trains
    it as a model (width: as ResNet's net.width), since dynamo's tracing of the 4-channel ResNet-18 took 38 s of
    that test's 46 (cProfile, 2026-12-02)."""
    return Net("bn_net", lambda: nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)), num_classes)


@contextlib.contextmanager
def one_thread():
    """Small ops on 2 busy cores run faster on one thread, and bitwise equality needs one fixed count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FakeSummaryWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter: records what the trainer logs."""

    instances: list[FakeSummaryWriter] = []

    def __init__(self, log_dir=None, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        FakeSummaryWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def fake_tensorboard_module() -> types.ModuleType:
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeSummaryWriter
    return module


@functools.cache
def reference_run(root: Path, data: Path) -> tuple[Path, FakeSummaryWriter]:
    """The reference run in root/reference (trained at the first call of the session), with the fake
    TensorBoard writer that recorded its scalars."""
    out = root / "reference"
    import pytest  # a MonkeyPatch context: this runs once for the whole session, outside any test's own

    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setitem(sys.modules, "torch.utils.tensorboard", fake_tensorboard_module())
        run(parse(train_args(data, out)), log=lambda line: None)
    return out, FakeSummaryWriter.instances[-1]


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise equal checkpoints (params, BN state, momentum, the EMA, RNG, schedule, best) and equal metrics and
    results apart from timing fields."""
    for name in ("last.pt", "best.pt"):
        x = torch.load(a / name, weights_only=True)
        y = torch.load(b / name, weights_only=True)
        for tree in ("params", "state", "momentum", "ema"):
            assert x[tree].keys() == y[tree].keys()
            for k in x[tree]:
                assert torch.equal(x[tree][k], y[tree][k]), f"{name} {tree} {k}"
        for key in ("epoch", "step", "schedule", "best"):
            assert x[key] == y[key], f"{name} {key}"
        for key in ("generator", "torch_rng"):
            assert torch.equal(x[key], y[key]), f"{name} {key}"
    assert [without_timing(m) for m in metrics(a)] == [without_timing(m) for m in metrics(b)]
    assert without_timing(results(a)) == without_timing(results(b))


def entry_point(capsys, *args: str) -> subprocess.CompletedProcess:
    """`python -m <module> <words>` run in this process, through the same `main(argv)` the module's __main__
    calls: its exit code, stdout and stderr, as a subprocess would give them (without paying torch's import
    again). For the cases of a behaviour that one test also checks in a real subprocess."""
    assert args[0] == "-m", args
    module, argv = importlib.import_module("train.cli" if args[1] == "train" else args[1]), list(args[2:])
    capsys.readouterr()
    with mock.patch.dict(os.environ):  # what main sets (the compile cache's folder) stays with it
        code = module.main(argv)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)
