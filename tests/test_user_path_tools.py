"""The tools as a user meets them, each run in a fresh process (`python -m ...`): its exit code, a one-line
stderr without a traceback, and nothing lost or left behind. A crafted checkpoint is named for what it is, in
both pickle forms of a global; export's agreement line reads as a sentence; `pytest --benchmark-only` lists
no skipped tests one per line; a CPU benchmark run leaves bench/results/ as it was."""

import functools
import hashlib
import io
import os
import pickle
import pickletools
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from runs import REPO, copy_run, entry_point, reference_run

from train import checkpoint

TIMEOUT_S = 600  # a fresh process imports torch (seconds); export traces the net with torch.export


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cifar10_pickles):
    return reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)[0]


def python(*args: str) -> subprocess.CompletedProcess:
    """`python <args>` in the repository root, as a user would type it (one thread: 2 shared cores; the
    repository importable as for a script run by path, installed or not; not a pytest-xdist worker, whose
    variables would turn a pytest started here into one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    err = proc.stderr
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def contents(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too: a temporary file left behind shows) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- a crafted checkpoint ---------------------------------------------------------------------------------


class RunsCommand:
    """Unpickling this calls os.system (pickled as posix.system), which would create the marker file."""

    def __init__(self, marker: Path):
        self.command = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.command,))


def global_opcodes(path: Path) -> set[str]:
    """The opcodes that name globals in the file's pickle (a torch.save zip's data.pkl, else the file)."""
    data = path.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    return {op.name for op, _, _ in pickletools.genops(io.BytesIO(data))} & {"GLOBAL", "STACK_GLOBAL", "INST"}


@pytest.mark.parametrize("container,protocol,opcode,subprocesses", [
    ("torch.save", 2, "GLOBAL", True),  # torch.save's default protocol: torch names the blocked module
    ("torch.save", 4, "STACK_GLOBAL", False),  # torch's weights_only unpickler stops at the opcode (operand 149)
    ("pickle", 4, "STACK_GLOBAL", False),  # not a zip: torch's legacy format reader
])
def test_a_crafted_checkpoint_is_refused_as_code(reference, tmp_path, capsys, container, protocol, opcode,
                                                 subprocesses):
    """Through the real command lines in fresh processes for the first form; the entry points' main() in this
    process for the others (the same code, without two more interpreters' start each)."""
    command = python if subprocesses else functools.partial(entry_point, capsys)
    run_dir, marker = copy_run(reference, tmp_path / "run"), tmp_path / "ran"
    crafted = {"format": checkpoint.FORMAT, "params": {}, "hook": RunsCommand(marker)}
    last = run_dir / "last.pt"
    if container == "torch.save":
        torch.save(crafted, last, pickle_protocol=protocol)
    else:
        last.write_bytes(pickle.dumps(crafted, protocol=protocol))
    assert opcode in global_opcodes(last)
    before, reference_before = contents(run_dir), contents(reference)

    said = f"refused: {last} asks to run code (posix.system) when loaded; it is not a checkpoint of this trainer"
    one_line_error(command("-m", "train", f"out={run_dir}", "resume=true"), said, "nothing in it was run")
    one_line_error(command("-m", "train.evaluate", f"run={reference}", f"checkpoint={last}"), said)
    assert not marker.exists()
    assert contents(run_dir) == before and contents(reference) == reference_before


@pytest.mark.parametrize("kind,said", [
    ("truncated", "is truncated or corrupt ("),  # the zip's directory, at its end, is missing
    ("text", "is truncated, corrupt or not a checkpoint ("),  # read as opcodes, "hello" fetches a missing memo
])
def test_a_file_that_is_no_checkpoint_is_called_so(reference, tmp_path, capsys, kind, said):
    path = tmp_path / f"{kind}.pt"
    data = (reference / "best.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"hello, this is no checkpoint\n")
    proc = entry_point(capsys, "-m", "train.evaluate", f"run={reference}", f"checkpoint={path}")
    err = one_line_error(proc, f"{path} {said}")
    assert "refused" not in err and "run code" not in err


# --- export's line ----------------------------------------------------------------------------------------


def test_export_says_how_closely_the_program_agrees(reference, tmp_path):
    out = tmp_path / "export"
    before = contents(reference)
    proc = python("-m", "train.export", f"run={reference}", f"out={out}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"; its logits equal the net's (exactly|to within \d[\d.e+-]* \(relative\))\)$", line), line
    assert sorted(contents(out)) == ["meta.json", "model.pt2", "state_dict.pt"]  # no temporary file stays
    assert contents(reference) == before


def test_agreement_reads_for_zero_and_for_a_difference():
    from train.export import agreement

    assert agreement(0.0) == "its logits equal the net's exactly"
    assert agreement(3.1e-7) == "its logits equal the net's to within 3.1e-07 (relative)"


# --- pytest's report --------------------------------------------------------------------------------------


def test_pytest_reports_skips_as_a_count():
    """`pytest --benchmark-only` (every test but the benchmarks skipped): the skips are counted in the summary
    line, not listed one per line. Two small files stand for the suite (collecting all of it took ~10 s of the
    CI's budget; the reporting is pyproject's, the same for any file)."""
    proc = python("-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only", "tests/test_fold.py",
                  "tests/test_config.py")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "SKIPPED [" not in proc.stdout, proc.stdout[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    if not torch.cuda.is_available():
        assert re.search(r"\d+ skipped", summary), summary


# --- a CPU benchmark run ----------------------------------------------------------------------------------


RESULTS = REPO / "bench" / "results"


def git_status(folder: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", str(folder)], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture
def results_left_alone():
    """bench/results/ before the test; whatever a run wrote there is removed afterwards, pass or fail."""
    before = contents(RESULTS)
    status = git_status(RESULTS) if shutil.which("git") and (REPO / ".git").exists() else None
    yield before, status
    for name in set(contents(RESULTS)) - set(before):
        (RESULTS / name).unlink()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the benchmarks write bench/results/ by design")
@pytest.mark.parametrize("command", [["-m", "bench", "loader", "quick=true"], ["bench/loader.py", "--quick"]])
def test_a_cpu_loader_benchmark_writes_nothing_into_the_tree(results_left_alone, command):
    before, status = results_left_alone
    proc = python(*command)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if command[0] == "-m":
        assert "DeviceBatches on CPU" in proc.stdout and "wrote" not in proc.stdout, proc.stdout
    assert contents(RESULTS) == before
    if status is not None:
        assert git_status(RESULTS) == status
