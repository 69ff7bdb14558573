"""Checkpoints: complete or refused, written atomically, read without running code.

A checkpoint is one dict of tensors, numbers, strings, lists and dicts, saved with torch.save:

    format    FORMAT, so a foreign or older file is named as such
    sha256    digest of everything else in the dict (dtype, shape and bytes of every tensor, the repr of
              every other value, keys in sorted order), computed before writing and checked after reading
    ...       the trainer's payload (train/loop.py lists it)

Writing: the payload is moved to the CPU, digested and serialised once, then written to a temporary file in
the destination's directory, flushed, fsync'ed and renamed over the old file (os.replace is atomic on POSIX),
so a crash mid-write leaves the previous checkpoint intact and a reader never sees half a file. The trainer
writes through a Writer: the copy to the CPU is taken at once (the next step overwrites the state), the digest,
serialisation, fsync and rename go on in a background thread while training continues.

Reading: `torch.load(weights_only=True)` refuses anything that would import or call code (a crafted pickle
raises CheckpointError and its function is never called). What a refused file asked for is read from its
pickle's opcodes, not from torch's message, which names the global for GLOBAL but says only "Unsupported
operand 149" for protocol 4's STACK_GLOBAL: a file naming a callable that weights_only does not allow is
refused as code, never called corrupt. A truncated file fails to parse (the zip directory is at its end); a
file damaged in place parses but fails the digest. Either way CheckpointError names the file, so a damaged
checkpoint is never mistaken for a good one.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickletools
import re
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import torch

FORMAT = "cifar-zoo-checkpoint-2"  # bumped when the layout of the dict changes (2: sha256, resume state)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is damaged, or does not fit the run."""


def _to_cpu(obj, copy: bool = False):
    """The payload with every tensor on the CPU (once, for both the digest and torch.save); copy=True: every
    tensor a copy, also those already on the CPU, so later writes into the originals cannot reach it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)
    if isinstance(obj, dict):
        return {k: _to_cpu(v, copy) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v, copy) for v in obj)
    return obj


def digest(payload: dict) -> str:
    """sha256 over the payload's contents, independent of how torch.save lays them out in the file."""
    h = hashlib.sha256()

    def feed(obj) -> None:
        if isinstance(obj, dict):
            h.update(b"{%d" % len(obj))
            for k in sorted(obj, key=repr):
                feed(k)
                feed(obj[k])
        elif isinstance(obj, list | tuple):
            h.update(b"[%d" % len(obj))
            for v in obj:
                feed(v)
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()  # logical order: a channels_last tensor digests as NCHW
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():  # an empty tensor (no validation split) has no bytes, and may have stride 0
                h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif obj is None or isinstance(obj, str | bytes | bool | int | float):
            h.update(repr((type(obj).__name__, obj)).encode())  # repr of a float round-trips exactly
        else:
            raise TypeError(f"a checkpoint holds tensors, numbers, strings, lists and dicts, not {type(obj)}")

    feed(payload)
    return h.hexdigest()


def save(path: str | os.PathLike | Sequence[str | os.PathLike], payload: dict) -> None:
    """Write `payload` atomically to `path` (or to each of several paths: serialised once, written to each)."""
    paths = [Path(p) for p in path] if isinstance(path, list | tuple) else [Path(path)]
    payload = {"format": FORMAT, **_to_cpu(payload)}
    payload["sha256"] = digest(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    for p in paths:
        write_atomically(p, lambda f: f.write(buffer.getbuffer()))


class Writer:
    """save() in a background thread, one checkpoint at a time and in the order asked. save() copies the payload
    to the CPU before it returns, so the caller may go on changing its tensors; it waits for the previous write
    first, so checkpoints land in order (best.pt before last.pt, an epoch's before a later stop's). wait()
    returns once everything asked is on disk and raises what a write raised.

    Why: a ResNet-18 checkpoint with momentum and EMA is about 135 MB to digest, serialise and fsync after every
    epoch; written in line, that added about 19 s to a 38-epoch run whose steps take 23 s (`python -m train
    model=resnet18 recipe=speedrun` on an H100: 165.0 s from the command to results.json, 146.5 s with this
    writer; docs/training.md, "Speed run")."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: str | os.PathLike | Sequence[str | os.PathLike], payload: dict) -> None:
        snapshot = _to_cpu(payload, copy=True)
        self.wait()

        def write() -> None:
            try:
                save(path, snapshot)
            except BaseException as e:  # handed to the thread that waits
                self._error = e

        self._thread = threading.Thread(target=write, name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file beside `path`, flushed and fsync'ed, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; the result is as readable as others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _weights_only_reason(error: Exception) -> str:
    """The informative part of torch's weights_only refusal (its first lines advise weights_only=False)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|\. |$)", str(error), re.S)
    return " ".join(found.group(1).split())[:160] if found else "not a stream of tensors and plain values"


SCAN_BYTES = 16 << 20  # of a pickle read for the globals it names; a checkpoint's data.pkl is far smaller
MAX_PICKLES = 8  # pickles read one after another from a file that is not a zip (torch's legacy format has 5)
PICKLE_STARTS = (b"\x80", b"(", b"c")  # PROTO (protocols 2 and up), MARK or GLOBAL (protocols 0 and 1)
DOTTED_NAME = re.compile(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*")


def _pickle_bytes(path: Path) -> bytes:
    """The pickle of the file at `path`: a torch.save zip's data.pkl, else the file itself if it starts as a
    pickle does; b"" for anything else (a truncated zip, a damaged member, another kind of file)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.rpartition("/")[2] == "data.pkl"), None)
                if member is None:
                    return b""
                with z.open(member) as f:
                    return f.read(SCAN_BYTES)
        with open(path, "rb") as f:
            data = f.read(SCAN_BYTES)
        return data if data[:1] in PICKLE_STARTS else b""
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return b""


def named_globals(data: bytes) -> list[str]:
    """module.name of each global the pickles in `data` would import, in order, read from their opcodes with
    pickletools.genops (nothing is imported or run). GLOBAL and INST carry the name; STACK_GLOBAL (protocol 4)
    takes the two strings pushed before it, which the pickler writes there or fetches from its memo."""
    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(MAX_PICKLES):  # torch's legacy format is several pickles in a row
        pushed: list = []  # what each opcode pushed: a string as itself, anything else as None
        memo: dict[int, object] = {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(arg.replace(" ", "."))  # genops gives "module name"
                    pushed.append(None)
                elif op.name == "STACK_GLOBAL":
                    module, name = pushed[-2:] if len(pushed) >= 2 else (None, None)
                    named = isinstance(module, str) and isinstance(name, str)
                    found.append(f"{module}.{name}" if named else "an unnamed global")
                    pushed.append(None)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(arg))
                elif op.stack_after:
                    pushed.append(arg if "UNICODE" in op.name else None)
        except Exception:  # the end of the data, or bytes that are no pickle: what was read stands
            break
        if stream.tell() >= len(data):
            break
    return found


def code_globals(path: Path) -> list[str]:
    """The globals the pickle in `path` names that torch's weights_only unpickler does not allow, once each:
    the callables that loading it would import or call (posix.system, io.open). Empty for a file that is no
    pickle, and for a pickle of tensors and plain values."""
    # torch's own allow-list, as torch.serialization.get_unsafe_globals_in_checkpoint reads it (that function
    # is not used here: it reads GLOBAL opcodes only, not protocol 4's STACK_GLOBAL, and zip files only).
    from torch import _weights_only_unpickler as unpickler

    allowed = {*getattr(unpickler, "_get_allowed_globals", dict)(),
               *getattr(unpickler, "_get_user_allowed_globals", dict)()}
    # Bytes that are no pickle can read as a GLOBAL whose "name" is no identifier: no evidence of code.
    names = [n for n in named_globals(_pickle_bytes(path))
             if n not in allowed and (n == "an unnamed global" or DOTTED_NAME.fullmatch(n))]
    return list(dict.fromkeys(names))


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checked payload of the checkpoint at `path` (with "format" and "sha256"); CheckpointError if it is
    missing, truncated, damaged, foreign or would run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files: not news
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's unpickler meets bytes that are no pickle with KeyError, IndexError, ...
        code = code_globals(path)
        if code:
            named = code[0][:120] + (f" and {len(code) - 1} more" if len(code) > 1 else "")
            raise CheckpointError(f"refused: {path} asks to run code ({named}) when loaded; it is not a checkpoint "
                                  "of this trainer, and nothing in it was run") from None
        if isinstance(e, RuntimeError | EOFError | zipfile.BadZipFile | OSError):  # the zip or the file itself
            reason = " ".join(str(e).split()).split(". ")[0][:120] or type(e).__name__  # torch's first sentence
            raise CheckpointError(f"{path} is truncated or corrupt ({reason}); use another checkpoint") from None
        raise CheckpointError(f"{path} is truncated, corrupt or not a checkpoint ({_weights_only_reason(e)}); "
                              "nothing in it was run: use another checkpoint") from None
    if not isinstance(payload, dict) or not str(payload.get("format", "")).startswith("cifar-zoo-checkpoint"):
        raise CheckpointError(f"{path} is not a cifar-zoo checkpoint (expected format {FORMAT})")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {payload['format']!r}, written by another version of "
                              f"cifar-zoo; this one reads {FORMAT}")
    saved = payload.pop("sha256", None)
    try:
        actual = digest(payload)
    except TypeError:
        actual = None
    if saved is None or actual != saved:
        what = "has no digest (an incomplete write?)" if saved is None else "fails its sha256 check"
        raise CheckpointError(f"{path} is corrupt: it {what}; use another checkpoint")
    payload["sha256"] = saved
    return payload


def require(path, payload: dict, keys) -> None:
    """The payload must hold `keys` (a complete checkpoint of the trainer's layout, not a foreign dict)."""
    missing = [k for k in keys if k not in payload]
    if missing:
        raise CheckpointError(f"{path} is not a complete training checkpoint (it has no {', '.join(missing)})")


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
                f"{path} does not fit this model: {k} is {tuple(saved[k].shape)}, expected {tuple(t.shape)} "
                "(was it saved for another model or net.* options?)"
            )
