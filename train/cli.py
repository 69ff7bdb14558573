"""The command lines around `train.loop.run` and the tools: user errors become one line on stderr and exit 2.

Exit codes of `python -m train`:
    0    trained (or resumed to the end) and tested
    1    the loss or the parameters diverged; the last good checkpoint is kept
    2    a user error: an unknown model, dataset or key, a bad value, missing or unreadable data, a checkpoint
         that is missing, damaged, refused or does not fit, a resume that changes what may not change, a run
         directory that cannot be written, that another process trains in, or that holds a run (a new run
         there needs overwrite=true; nothing of the old one is touched before)
    130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the signal's number, as a shell reports a
         killed process): last.pt was saved after the current step, and stderr gives the command to resume
The tools (train.evaluate, train.predict, train.export, train.plot) return 0 or 2 the same way.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from data import DataError
from nets import NetError
from train.checkpoint import CheckpointError
from train.compile_cache import keep_compiled_work
from train.config import Config, ConfigError, from_json, parse
from train.out_dir import RunDirError
from train.run_dir import ToolError
from train.signals import TrainingDiverged, TrainingInterrupted

# Errors caused by what the user asked for or pointed at: reported without a traceback.
USER_ERRORS = (ConfigError, DataError, NetError, CheckpointError, ToolError, RunDirError)


def parse_command_line(argv: list[str]) -> Config:
    """parse(argv); with resume=true, on top of the run directory's saved config.json (when there is one), so
    `out=<run dir> resume=true` alone continues a run and explicit keys are checked against the saved ones."""
    cfg = parse(argv)
    saved = Path(cfg.run_dir()) / "config.json"
    if cfg.resume and saved.is_file():
        cfg = parse(argv, base=from_json(saved.read_text(), str(saved)))
    return cfg


def train_command(words: list[str], python: str = "python") -> str:
    """The shell command line `python -m train <words>`, quoted."""
    return shlex.join([python, "-m", "train", *words])


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same words with resume=true, run by this interpreter."""
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    return train_command([*(w for w in argv if not w.startswith("resume=")), "resume=true"], python)


def main(argv: list[str]) -> int:
    keep_compiled_work()  # before anything compiles: a later run of the same net loads its kernels
    try:
        cfg = parse_command_line(argv)
        # The trainer is imported once the command line is read: it brings torch._dynamo (about 1.5 s on a
        # 2-core CPU, `python -X importtime -m train`), which a mistyped key need not wait for.
        from train.loop import run

        run(cfg, command=train_command(argv))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"{e}; resume with: {resume_command(argv)}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def tool_main(tool: Callable[[list[str]], object], argv: list[str]) -> int:
    """Run one tool's command (`tool(argv)`); a user error is one line on stderr and exit code 2."""
    try:
        tool(argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
