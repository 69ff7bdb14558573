"""The run directory, claimed before the data is read: writable, trained into by one process at a time, and never
a finished or stopped run replaced unasked.

`claim(cfg)` (a context manager around the whole run) in order:
    1. makes the directory (and its missing parents) and writes and removes a probe file in it: an out= that
       cannot be written fails at once, not after the data has loaded;
    2. takes an exclusive advisory lock (flock) on <out>/.lock for as long as the run lasts (the kernel drops it
       when the process ends, however it ends): a second process training into the same directory is refused,
       with resume=true or overwrite=true too;
    3. refuses a new run (resume=false) into a directory that holds a run (RUN_FILES) unless overwrite=true,
       touching nothing of it.
Every refusal is a RunDirError, one line. On leaving, the lock file goes, and so do the directories step 1 made
when the run wrote nothing into them (a run refused later, e.g. for its data, leaves nothing behind).
`start_afresh(out)` removes an old run's files when an overwrite=true run writes its first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from train import distributed
from train.config import Config

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "results.json", "train.log")  # train.loop's
RUN_FOLDERS = ("tensorboard", "export", "plots")  # the trainer's TensorBoard logs; train.export's, train.plot's
LOCK = ".lock"


class RunDirError(ValueError):
    """The run directory cannot be written, is in use, or holds a run that this command would replace."""


@contextlib.contextmanager
def claim(cfg: Config, main: bool = True) -> Iterator[Path]:
    """Holds the run directory (steps 1-3 of the module doc) while the block runs; yields its path. Only the main
    rank claims it; every rank raises the main rank's refusal (several processes: one collective)."""
    out = Path(cfg.run_dir())
    with contextlib.ExitStack() as held:
        refusal = None
        if main:
            try:
                held.enter_context(_claimed(out, cfg))
            except RunDirError as e:
                refusal = str(e)
        refusal = distributed.from_main(refusal)
        if refusal is not None:
            raise RunDirError(refusal)
        yield out


@contextlib.contextmanager
def _claimed(out: Path, cfg: Config) -> Iterator[None]:
    made = _make_dirs(out)
    try:
        _probe(out)
        lock = _lock(out / LOCK)
        try:
            if not (cfg.resume or cfg.overwrite):
                _refuse_a_run(out)
            yield
        finally:
            (out / LOCK).unlink(missing_ok=True)  # before closing: no other process can hold this file yet
            os.close(lock)
    finally:
        _remove_empty(made)


def logged_to_file(out: Path, log, fresh: bool, command: str = ""):
    """`log`, with each line also appended to <out>/train.log as it comes, so a run that is killed keeps what it
    printed (opened per line: a few lines an epoch). The file is emptied first when `fresh` (a resumed run's
    lines follow the stopped run's), then `command`, the command line, is its next line when given."""
    path = out / "train.log"
    if fresh:
        path.write_text("")

    def append(line: str) -> None:
        with path.open("a") as f:
            f.write(line + "\n")

    def both(line: str) -> None:
        log(line)
        append(line)

    if command:
        append(command)
    return both


def start_afresh(out: Path) -> None:
    """Removes the run files and folders (RUN_FILES, RUN_FOLDERS) of the run that `out` held; other files stay."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)


def _unwritable(out: Path, e: OSError) -> RunDirError:
    return RunDirError(f"cannot write the run directory {out}: {e.strerror or e}; choose another out=")


def _make_dirs(out: Path) -> list[Path]:
    """Makes `out` and its missing parents; returns those it made, outermost first."""
    missing = [p for p in (out, *out.parents) if not p.exists()][::-1]
    made: list[Path] = []
    try:
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        for folder in missing:
            folder.mkdir(exist_ok=True)
            made.append(folder)
    except OSError as e:
        _remove_empty(made)
        raise _unwritable(out, e) from None
    return made


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):  # deepest first; one that holds anything stays, and so do its parents
        with contextlib.suppress(OSError):
            folder.rmdir()


def _probe(out: Path) -> None:
    """Writes and removes a file in `out`, as the run will (mkdir succeeds in a directory one cannot write)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=out)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        raise _unwritable(out, e) from None


def _lock(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive flock, with this process's id written in it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _unwritable(path.parent, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunDirError(f"another process{pid} is training in {path.parent}; wait for it to end, or choose "
                              "another out=") from None
        # A process that held the lock may have removed the file between our open and our flock: then the lock
        # is on a file no longer at `path`, and the next process would lock a new one. Take the file at `path`.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _refuse_a_run(out: Path) -> None:
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    what = "a finished run (results.json)" if "results.json" in found else \
        f"a run in progress or stopped ({', '.join(found)})"
    raise RunDirError(f"{out} holds {what}; continue it with resume=true, or start afresh with overwrite=true")
