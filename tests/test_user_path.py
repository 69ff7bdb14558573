"""The paths a user walks on the command line: a run directory is never replaced unasked nor shared by two
trainers, an out= that cannot be written is refused before the data is read, `make train OUT=<run>
ARGS="resume=true"` continues a run from its directory alone, the default recipe is each family's best measured
one (recipe=fast) and `recipe=seed` is the seed README's recipe, key by key.

Every command runs as a user types it (`python -m train ...` or `make train ...` in a fresh process); a refused
command exits 2 with one line on stderr, and leaves every file as it found it."""

import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import REPO, copy_run, entry_point, metrics, one_thread, reference_run, results, train_args
from synthetic import write_cifar10_pickles

import nets
from train.config import parse
from train.out_dir import RUN_FILES

# Variables an outer make (`make test`) or the user's shell could hand to the make under test.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MODEL", "DATASET", "DATA", "OUT", "ARGS", "RUN", "GPUS")


def cli(*args, prefix=(), timeout=300) -> subprocess.CompletedProcess:
    """`python -m train <args>` in a fresh interpreter, from the repository root (after `prefix`, a command that
    runs the next one)."""
    return subprocess.run([*prefix, sys.executable, "-m", "train", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def cli_here(capsys, *args) -> subprocess.CompletedProcess:
    """The same command through train.cli.main in this process: for the cases of a behaviour whose first case
    runs in a fresh interpreter (each of those costs an interpreter's and torch's start)."""
    return entry_point(capsys, "-m", "train", *map(str, args))


def obeying_file_modes() -> list[str] | None:
    """A command prefix under which this user cannot write into a directory of mode 0555: none for a plain user;
    for root, setpriv dropping the capabilities that let root ignore file modes; None when root has no setpriv."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def make(*variables, dry_run=False, timeout=300) -> subprocess.CompletedProcess:
    """`make -s train PYTHON=<this interpreter> <variables>` from the repository root (-n: print the command)."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
    return subprocess.run(["make", "-s", *(["-n"] if dry_run else []), "train", f"PYTHON={sys.executable}",
                           *variables], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr, proc.stderr


def snapshot(root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cifar10_pickles):
    """tests/runs.py's reference run: 2 epochs, finished (results.json). Copy it before changing it."""
    return reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)[0]


# --- a run directory is never replaced unasked (1) ----------------------------------------------------------


def test_a_new_run_into_a_finished_run_is_refused_and_leaves_it_as_it_was(finished_run, cifar10_pickles, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot(out)
    proc = cli(*train_args(cifar10_pickles, out, "epochs=1"))
    assert_one_line_error(proc, f"error: {out} holds a finished run (results.json); continue it with resume=true, "
                                "or start afresh with overwrite=true")
    assert snapshot(out) == before


def test_a_new_run_into_a_stopped_run_is_refused_before_the_data_is_read(finished_run, tmp_path, capsys):
    """A directory without results.json but with a run's files; data= names nothing, so a refusal that came after
    reading the data would be the data's error instead."""
    out = copy_run(finished_run, tmp_path / "run")
    (out / "results.json").unlink()
    before = snapshot(out)
    proc = cli_here(capsys, *train_args(tmp_path / "no-data", out))
    assert_one_line_error(proc, f"error: {out} holds a run in progress or stopped (config.json, metrics.jsonl, "
                                "last.pt, best.pt, train.log); continue it with resume=true, or start afresh with "
                                "overwrite=true")
    assert snapshot(out) == before


def test_overwrite_true_starts_afresh_and_keeps_other_files(finished_run, cifar10_pickles, tmp_path, capsys):
    out = copy_run(finished_run, tmp_path / "run")
    for old in ("tensorboard/events.old", "export/meta.json", "plots/curves.png"):
        (out / old).parent.mkdir(exist_ok=True)
        (out / old).write_text("the old run's")
    (out / "notes.txt").write_text("mine")
    proc = cli_here(capsys, *train_args(cifar10_pickles, out, "epochs=1", "overwrite=true"))
    assert proc.returncode == 0, proc.stderr
    assert [m["epoch"] for m in metrics(out)] == [1] and results(out)["epochs_run"] == 1
    assert json.loads((out / "config.json").read_text())["epochs"] == 1
    assert not any((out / d).exists() for d in ("tensorboard/events.old", "export", "plots"))
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, "notes.txt"])  # no lock file left


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    proc = cli_here(capsys, f"out={tmp_path}", "resume=true", "overwrite=true")
    assert_one_line_error(proc, "resume=true continues the run in out= and overwrite=true replaces it; choose one")


def test_a_second_trainer_into_a_directory_in_training_is_refused(cifar10_pickles, tmp_path, capsys):
    """A run trains (many epochs) while two more commands aim at its directory: both are refused, even resume=true
    and overwrite=true, and the first trains on."""
    out = tmp_path / "run"
    with (tmp_path / "first.err").open("w") as err:
        first = subprocess.Popen([sys.executable, "-m", "train", *train_args(cifar10_pickles, out, "epochs=100000")],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists():
            assert first.poll() is None, (tmp_path / "first.err").read_text()
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        for command, words in ((cli, ["overwrite=true"]), (functools.partial(cli_here, capsys), ["resume=true"])):
            proc = command(*train_args(cifar10_pickles, out, *words))
            assert_one_line_error(proc, f"error: another process (pid {first.pid}) is training in {out}; wait for "
                                        "it to end, or choose another out=")
        assert first.poll() is None, (tmp_path / "first.err").read_text()
    finally:
        first.kill()
        first.wait()


# --- an out= that cannot be written (3) -------------------------------------------------------------------


@pytest.mark.skipif(obeying_file_modes() is None, reason="root writes into read-only directories (no setpriv)")
def test_an_out_in_a_read_only_directory_is_refused(cifar10_pickles, tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        proc = cli(*train_args(cifar10_pickles, parent / "run"), prefix=obeying_file_modes())
        assert_one_line_error(proc, f"error: cannot write the run directory {parent / 'run'}: Permission denied; "
                                    "choose another out=")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


@pytest.mark.parametrize("data", ["synthetic", "missing"])
def test_an_out_under_a_file_is_refused_before_the_data_is_read(data, cifar10_pickles, tmp_path, capsys):
    """out=<a file>/run fails for root too; with data= naming nothing, the refusal still comes first (that case
    in this process, through train.cli.main)."""
    file = tmp_path / "file"
    file.write_text("not a directory")
    run_command = cli if data == "synthetic" else functools.partial(cli_here, capsys)
    proc = run_command(*train_args(cifar10_pickles if data == "synthetic" else tmp_path / "no-data", file / "run"))
    assert_one_line_error(proc, f"error: cannot write the run directory {file / 'run'}: Not a directory; "
                                "choose another out=")
    assert file.read_text() == "not a directory" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_refused_run_leaves_no_directory_behind(tmp_path, capsys):
    """The run directory (and its missing parents) made for a run that fails before writing are removed again."""
    proc = cli_here(capsys, *train_args(tmp_path / "no-data", tmp_path / "runs" / "a"))
    assert_one_line_error(proc, str(tmp_path / "no-data"))  # the data's error
    assert list(tmp_path.iterdir()) == []


# --- make train (4) ----------------------------------------------------------------------------------------

MAKE_ARGS = "net.width=4 device=cpu compile=false download=false progress=false batch_size=10 lr=0.05"


def test_make_train_resumes_from_out_alone(cifar10_pickles, tmp_path):
    out = tmp_path / "run"
    first = make("MODEL=resnet18", f"DATA={cifar10_pickles}", f"OUT={out}", f"ARGS=recipe=seed {MAKE_ARGS} epochs=1")
    assert first.returncode == 0, first.stderr
    epoch_1 = metrics(out)
    again = make(f"OUT={out}", "ARGS=resume=true epochs=2")
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout and metrics(out)[:1] == epoch_1  # continued, not started again
    assert [m["epoch"] for m in metrics(out)] == [1, 2] and results(out)["epochs_run"] == 2
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("variables,words", [
    (["MODEL=vit"], ["model=vit"]),
    (["OUT=runs/x", "ARGS=resume=true"], ["out=runs/x", "resume=true"]),
    (["MODEL=vgg16", "DATASET=cifar100", "DATA=d", "OUT=o"], ["model=vgg16", "dataset=cifar100", "data=d", "out=o"]),
])
def test_make_train_passes_only_the_variables_given(variables, words):
    proc = make(*variables, dry_run=True)
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == [sys.executable, "-m", "train", *words]


def test_make_train_defaults_are_the_trainers():
    """The Makefile's MODEL, DATASET, DATA and OUT defaults (for the tools' RUN) are the trainer's own."""
    cfg = parse([])
    proc = subprocess.run(["make", "-s", "-p", "-n", "train", "PYTHON=python"], cwd=REPO, capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES})
    defined = dict(line.split(" = ", 1) for line in proc.stdout.splitlines()
                   if line.split(" = ")[0] in ("MODEL", "DATASET", "DATA", "OUT"))
    assert defined == {"MODEL": cfg.model, "DATASET": cfg.dataset, "DATA": cfg.data, "OUT": "runs/$(MODEL)-$(DATASET)"}
    assert cfg.run_dir() == f"runs/{cfg.model}-{cfg.dataset}"


def test_the_readme_quick_example_trains(tmp_path):
    """`make train MODEL=resnet18 OUT=runs/quick ARGS="epochs=1 net.width=8"` at a smaller size: the default
    recipe (batch 512) on 600 synthetic training images, one step."""
    data = write_cifar10_pickles(tmp_path / "data", n_per_class_train=60, n_per_class_test=2)
    out = tmp_path / "quick"
    proc = make("MODEL=resnet18", f"OUT={out}", f"DATA={data}", "ARGS=epochs=1 net.width=4 download=false")
    assert proc.returncode == 0, proc.stderr
    assert results(out)["recipe"] == "fast" and results(out)["epochs_run"] == 1


# --- the default recipe and the seed's (9) -----------------------------------------------------------------


@pytest.mark.parametrize("model,expected", [
    ("resnet18", {"epochs": 200, "mix": "cutmix", "cutout": 0, "optimizer": "sgd", "lr": 0.2}),
    ("resnet50", {"epochs": 40, "mix": "none", "cutout": 8, "optimizer": "sgd", "lr": 0.2}),
    ("vgg16", {"epochs": 250, "mix": "cutmix", "cutout": 0}),
    ("mobilenetv1", {"epochs": 200, "cutout": 8}),
    ("vit", {"epochs": 300, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "randaugment": 2,
             "net": {"drop_path": 0.1}}),
])
def test_the_default_recipe_is_each_familys_fast_recipe(model, expected):
    cfg = parse([f"model={model}"])
    assert cfg == parse(["recipe=fast", f"model={model}"]) and cfg.recipe == "fast"
    assert {k: getattr(cfg, k) for k in expected} == expected
    common = {"batch_size": 512, "schedule": "onecycle", "label_smoothing": 0.1, "tta": "flip", "decay_all": False}
    assert {k: getattr(cfg, k) for k in common} == common


# The seed README's recipe, written out here rather than read from train/config.py.
SEED = {
    "val_fraction": 0.1,  # 45k/5k
    "cutout": 0, "mix": "none", "randaugment": 0, "label_smoothing": 0.0, "tta": "none",  # crop + flip only
    "ema": 0.0,  # the weights as trained
    "normalisation": "pixel",  # per-pixel mean and std of the training split
    "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
    "decay_all": True,  # on every tensor
    "batch_size": 256, "epochs": 200,
    "schedule": "plateau", "lr_factor": 0.1,  # lr / 10 when the validation error plateaus
    "net": {},  # no per-family settings
}


@pytest.mark.parametrize("model", nets.names())
def test_recipe_seed_is_the_seed_readmes_recipe_for_every_model(model):
    cfg = parse(["recipe=seed", f"model={model}"])
    assert {k: getattr(cfg, k) for k in SEED} == SEED and cfg.recipe == "seed"


def test_a_resumed_run_keeps_its_recipe(finished_run, tmp_path):
    """The reference run trained with recipe=seed; resuming it with no recipe word keeps the seed's settings."""
    out = copy_run(finished_run, tmp_path / "run")
    from train.cli import main

    with one_thread():
        assert main([f"out={out}", "resume=true", "epochs=3"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["recipe"], saved["schedule"], saved["batch_size"]) == ("seed", "plateau", 10)
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]
