"""What a checkpoint of the trainer holds, and the one a resume=true run continues from (see train/loop.py's
module doc for the run directory and the checkpoint's fields)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from train import checkpoint
from train.config import RESUMABLE, Config, ConfigError, from_json, resume_differences

# What a checkpoint of this trainer holds (train/checkpoint.py adds "format" and "sha256"; train.loop.payload
# writes them, in this order); see train/loop.py's module doc.
CHECKPOINT_KEYS = (
    "params", "state", "momentum", "ema", "epoch", "step", "generator", "torch_rng", "cuda_rng", "epoch_losses",
    "epoch_correct", "epoch_seconds", "schedule", "best", "config", "model", "device_type", "classes", "mean",
    "std", "train_idx", "val_idx", "data_sha256", "train_seconds", "stopped", "compile_seconds",
)

# Keys added to the checkpoint within its format (train.checkpoint.FORMAT), with what a checkpoint written without
# them stands for: a run that kept no EMA (ema=0, the default of every run before the key existed), no member
# stopped alone (every run before members existed had one), and no compile seconds counted before the resume.
ADDED_KEYS = {"ema": {}, "stopped": [], "compile_seconds": 0.0}


def with_added_keys(saved: dict) -> dict:
    """A loaded checkpoint with ADDED_KEYS filled in where it has none of its own."""
    return {**ADDED_KEYS, **saved}


def resume_point(cfg: Config, out: Path, device: torch.device) -> dict:
    """The checkpoint a resume=true run continues from, checked against `cfg` (ConfigError, CheckpointError)."""
    path = out / "last.pt"
    if not path.is_file():
        raise checkpoint.CheckpointError(
            f"resume=true but {out} holds no checkpoint (no last.pt); check out=<run dir>, or start the run "
            "without resume=true")
    saved = with_added_keys(checkpoint.load(path))
    checkpoint.require(path, saved, CHECKPOINT_KEYS)
    saved_cfg = from_json(saved["config"], str(path))
    changed = resume_differences(cfg, saved_cfg)
    if changed:
        raise ConfigError(
            f"resume=true: {changed[0]} differs from the run saved in {path}; only "
            f"{', '.join(RESUMABLE)} may change on resume (start a new run in another out= to change it)")
    if saved["device_type"] != device.type:
        raise ConfigError(f"resume=true: the run in {out} trained on {saved['device_type']} and this one would "
                          f"run on {device.type}; the loader's random stream does not carry across, so set "
                          f"device={saved['device_type']}")
    if cfg.epochs != saved_cfg.epochs and cfg.schedule != "plateau":
        raise ConfigError(f"resume=true: epochs cannot change with schedule={cfg.schedule} (its lr curve spans all "
                          f"{saved_cfg.epochs} epochs); drop epochs={cfg.epochs}")
    if cfg.epochs < saved["epoch"] + (saved["step"] > 0):
        raise ConfigError(f"resume=true: epochs={cfg.epochs}, but {path} is already past epoch {saved['epoch']}")
    return saved


def keep_metrics_until(path: Path, epoch: int) -> None:
    """Keep the metrics.jsonl lines of epochs 1..`epoch` (a resumed run writes the later ones again; a fresh
    run, epoch 0, starts empty), atomically. A line that does not parse (a torn write) is dropped."""

    def epoch_of(line: str) -> int | None:
        try:
            return int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            return None

    lines = path.read_text().splitlines(keepends=True) if epoch and path.is_file() else []
    kept = [line for line in lines if (e := epoch_of(line)) is not None and e <= epoch]
    checkpoint.write_atomically(path, lambda f: f.write("".join(kept).encode()))
