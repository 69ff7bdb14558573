"""Checkpoints: written atomically, read without running code.

A checkpoint is one dict of tensors, numbers and strings saved with torch.save. It is written to a temporary
file in the same directory, flushed to disk and renamed over the old one, so a crash mid-write leaves the
previous checkpoint intact. It is read with `torch.load(weights_only=True)`, which refuses anything that
would import or call code; a truncated, corrupt or foreign file raises CheckpointError naming the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "cifar-zoo-checkpoint-1"  # bumped when the layout of the dict changes


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run."""


def save(path: str | os.PathLike, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).splitlines()[0][:200]
        raise CheckpointError(
            f"{path} holds objects a checkpoint may not hold (refused to run code): {reason}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        reason = str(e).splitlines()[0][:160]
        raise CheckpointError(f"{path} is truncated or corrupt ({reason}); use another checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifar-zoo checkpoint (expected format {FORMAT})")
    return payload


def check_fits(path, saved: dict, expected: dict) -> None:
    """Saved tensors must have exactly the expected names and shapes."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]} "
            "(was it saved for another model or net.* options?)"
        )
    for k, t in expected.items():
        if saved[k].shape != t.shape:
            raise CheckpointError(
                f"{path} does not fit this model: {k} is {tuple(saved[k].shape)}, expected {tuple(t.shape)}"
            )
