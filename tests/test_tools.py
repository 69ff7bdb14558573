"""The tools on a tiny trained run: evaluate, predict, export (reloaded in a fresh process without this
project), plot; their user errors; their Makefile targets."""

import json
import os
import runpy
import subprocess
import sys
import sysconfig

import pytest
import torch
from runs import REPO, copy_run, one_thread, reference_run, results
from synthetic import CIFAR10_CLASSES, encode_image, synthetic_cifar

import nets
from train import checkpoint
from train import plot as plot_tool
from train.evaluate import evaluate_run
from train.evaluate import main as evaluate_main
from train.export import export_run
from train.predict import main as predict_main
from train.predict import predict_images
from train.run_dir import load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cifar10_pickles):
    return reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)[0]


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def one_line_error(capsys, *needles) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# --- evaluate ---------------------------------------------------------------------------------------------


def test_evaluate_matches_the_runs_test_results(run_dir, capsys):
    result = evaluate_run(str(run_dir), device="cpu")
    saved = results(run_dir)
    assert (result["top1"], result["top5"]) == pytest.approx((saved["test_top1"], saved["test_top5"]))
    assert result["images"] == 100 and result["epoch"] == saved["best_epoch"]
    flipped = evaluate_run(str(run_dir), checkpoint="last", tta="flip", device="cpu")
    assert 0 <= flipped["top1"] <= 100 and flipped["top1"] <= flipped["top5"] and flipped["tta"] == "flip"
    assert "top1" in capsys.readouterr().out


def test_flip_tta_averages_the_image_and_its_mirror(run_dir):
    """tta="flip" is log((softmax(f(x)) + softmax(f(mirror x))) / 2), mirrored after normalising, as training's
    flips are (the per-pixel mean is not mirror-symmetric): the trainer's tta=flip. The reference is computed in
    float64 (the net's module in float64, probabilities averaged, then the log). The tolerance follows from the
    float32 computation whatever the weights: each output's partial derivatives with respect to both views'
    logits sum to at most 2 in absolute value (a log-softmax row's sum to at most 2, weighted by the two views'
    shares of the average, which sum to 1), so the float32 logits' own error, measured here against the float64
    module, moves it by at most twice that; the float32 log-softmax and logaddexp add a few float32 eps of the
    log-probabilities' size (16 eps allowed). (tests/test_ema_tta.py: tta="translate".)"""
    loaded = load_run(run_dir)
    images = torch.from_numpy(synthetic_cifar(10, 1, 0)[0])
    x32 = (images.float() - loaded.mean) / loaded.std  # the tool's own float32 input
    x64 = (images.double() - loaded.mean.double()) / loaded.std.double()
    module = loaded.module().double()
    with torch.no_grad():
        views64 = [module(x64), module(x64.flip(-1))]
        views32 = [loaded.net.apply(loaded.params, loaded.state, v, train=False)[0] for v in (x32, x32.flip(-1))]
    expected = ((views64[0].softmax(1) + views64[1].softmax(1)) / 2).log()
    logit_error = max((v32.double() - v64).abs().max() for v32, v64 in zip(views32, views64))
    log_probs = [v.log_softmax(1) for v in views64]
    size = 1 + torch.maximum(log_probs[0].abs(), log_probs[1].abs())  # of the log-probabilities, per output
    tolerance = 2 * logit_error + 16 * torch.finfo(torch.float32).eps * size
    error = (loaded.logits(images, tta="flip").double() - expected).abs()
    assert (error <= tolerance).all(), f"error {error.max():.3g}, tolerance {tolerance.min():.3g} at the least"
    # The mirror changes the answer beyond that tolerance: an output of one view alone would fail.
    assert all(((lp - expected).abs() > tolerance).any() for lp in log_probs)


@pytest.mark.filterwarnings("ignore:'train.*' found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("tool", ["train.evaluate", "train.predict", "train.export", "train.plot"])
def test_python_dash_m_entry_points(run_dir, capsys, monkeypatch, tool):
    if tool == "train.plot":
        pytest.importorskip("matplotlib")  # without it, plot reports that first (tested below)
    """`python -m <tool>` runs main(sys.argv[1:]) and exits with its code (run in this interpreter: runpy does
    what -m does, without paying for a fresh import of torch; the export test below runs a real one)."""
    images = ["images=missing.png"] if tool == "train.predict" else []
    monkeypatch.setattr(sys, "argv", [tool, f"run={run_dir}", "checkpoint=missing.pt", *images])
    with pytest.raises(SystemExit) as e:
        runpy.run_module(tool, run_name="__main__")
    assert e.value.code == 2
    one_line_error(capsys, "error: ", "missing.png" if images else "checkpoint=missing.pt: no such file")


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["run=/nonexistent/run"], ["run=/nonexistent/run: no such run directory"]),
        ([], ["run=<...> is required"]),
        (["run={run}", "tta=five"], ["tta='five' is not one of: none, flip, translate"]),
        (["run={run}", "colour=red"], ["unknown key 'colour'; valid keys: run, checkpoint"]),
        (["run={run}", "checkpoint=/nonexistent.pt"], ["checkpoint=/nonexistent.pt: no such file; use best, last"]),
        (["run={run}", "batch_size=0"], ["batch_size must be positive"]),
    ],
)
def test_tool_user_errors(run_dir, capsys, argv, needles):
    assert evaluate_main([a.format(run=run_dir) for a in argv]) == 2
    one_line_error(capsys, *needles)


def test_tools_refuse_a_checkpoint_that_does_not_fit(run_dir, tmp_path, capsys):
    saved = checkpoint.load(run_dir / "best.pt")
    saved["params"]["conv1.weight"] = torch.zeros(8, 3, 3, 3)  # as if trained with net.width=8
    checkpoint.save(tmp_path / "wide.pt", {k: v for k, v in saved.items() if k not in ("format", "sha256")})
    assert evaluate_main([f"run={run_dir}", f"checkpoint={tmp_path / 'wide.pt'}"]) == 2
    one_line_error(capsys, "does not fit this model: conv1.weight is (8, 3, 3, 3), expected (4, 3, 3, 3)")


# --- predict ----------------------------------------------------------------------------------------------


def test_predict_names_classes_and_resizes(run_dir, tmp_path, capsys):
    images, labels = synthetic_cifar(10, 1, 0, shuffle=False)[:2]
    small, big = tmp_path / "ship.png", tmp_path / "big.jpg"
    small.write_bytes(encode_image(images[8], "png"))
    stretched = torch.nn.functional.interpolate(torch.from_numpy(images[:1]).float(), size=(48, 64))
    big.write_bytes(encode_image(stretched[0].round().clamp(0, 255).to(torch.uint8).numpy(), "jpg"))
    found = predict_images(str(run_dir), [str(small), str(big)], device="cpu")
    assert [f["note"] for f in found] == ["", "resized from 64x48 to 32x32, aspect ratio not kept"]
    for f in found:
        names, probabilities = zip(*f["top"])
        assert len(names) == 5 and set(names) <= set(CIFAR10_CLASSES)
        assert list(probabilities) == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    # The same numbers as the net on the decoded image: the saved normalisation is applied.
    loaded = load_run(run_dir)
    expected = torch.softmax(loaded.logits(torch.from_numpy(images[8:9])), dim=1)[0]
    assert found[0]["top"][0][1] == pytest.approx(expected.max().item(), rel=1e-5)
    capsys.readouterr()
    assert predict_main([f"run={run_dir}", f"images={small}", str(big), "top=3", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{big}  (resized from 64x48 to 32x32" in out and "  3. " in out and "  4. " not in out


def test_predict_refuses_what_is_not_an_image(run_dir, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    assert predict_main([f"run={run_dir}", f"images={tmp_path / 'notes.png'}"]) == 2
    one_line_error(capsys, "cannot decode the image", "use a PNG or JPEG file")
    assert predict_main([f"run={run_dir}", f"images={tmp_path / 'missing.png'}"]) == 2
    one_line_error(capsys, "cannot read the image", "missing.png")
    assert predict_main([f"run={run_dir}", "images="]) == 2
    one_line_error(capsys, "images=<...> is required")


def test_predict_refuses_an_unknown_tta_before_reading_anything(run_dir, capsys):
    assert predict_main([f"run={run_dir}", "images=missing.png", "tta=mirror"]) == 2
    one_line_error(capsys, "tta='mirror' is not one of: none, flip, translate; leave it out for the run's own")


# --- export -----------------------------------------------------------------------------------------------

# Loads the exported program with torch alone: isolated mode (-I: no PYTHONPATH, no user site, not the working
# directory) and no site processing (-S), so the editable install's path hook that makes this project
# importable is not there; torch's own packages are added by path.
FRESH_PROCESS = """
import importlib.util, json, sys
sys.path.append(sys.argv[1])
assert all(importlib.util.find_spec(m) is None for m in ("nets", "train", "data", "kernels")), "project importable"
import torch
extra = {"meta.json": ""}
program = torch.export.load("model.pt2", extra_files=extra)
x = torch.load("input.pt", weights_only=True)
with torch.no_grad():
    torch.save(program.module()(x), "output.pt")
print(json.loads(extra["meta.json"])["classes"][0])
"""


def test_export_state_dict_and_a_program_that_runs_without_the_project(run_dir, tmp_path):
    paths = export_run(str(run_dir), out=str(tmp_path / "export"), log=lambda line: None)
    loaded = load_run(run_dir)
    images = torch.from_numpy(synthetic_cifar(10, 1, 0)[0])  # 10 images: another batch size than the export's
    expected = loaded.logits(images)

    # The plain state_dict loads into the module nets builds (then takes normalised images).
    meta = json.loads(paths["meta"].read_text())
    module = nets.build(meta["model"], num_classes=meta["num_classes"], **meta["net"]).module.to_empty(device="cpu")
    module.load_state_dict(torch.load(paths["state_dict"], weights_only=True))
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    with torch.no_grad():
        torch.testing.assert_close(module.eval()((images.float() - mean) / std), expected, rtol=1e-4, atol=1e-4)

    # The program, in a fresh interpreter in an empty folder, on float pixels 0..255.
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "model.pt2").write_bytes(paths["program"].read_bytes())
    torch.save(images.float(), work / "input.pt")
    site_packages = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", FRESH_PROCESS, site_packages], cwd=work,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "airplane"
    torch.testing.assert_close(torch.load(work / "output.pt", weights_only=True), expected, rtol=1e-4, atol=1e-4)


# --- plot -------------------------------------------------------------------------------------------------


def test_plot_writes_curves_and_confusion_matrix(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    paths = plot_tool.plot_run(str(run_dir), out=str(tmp_path / "plots"), device="cpu", log=lambda line: None)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_confusion_matrix_counts():
    counts = plot_tool.confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_plot_without_matplotlib_says_how_to_install_it(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as when not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert plot_tool.main([f"run={run_dir}"]) == 2
    one_line_error(capsys, "plot needs matplotlib", "pip install 'cifar-zoo[plots]'")


def test_plot_of_a_run_without_metrics(run_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    copy = copy_run(run_dir, tmp_path / "run")
    (copy / "metrics.jsonl").write_text("")
    assert plot_tool.main([f"run={copy}"]) == 2
    one_line_error(capsys, "has no epochs yet")


# --- Makefile ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,variables,command",
    [
        ("evaluate", ["RUN=runs/x", "ARGS=tta=flip"], "-m train.evaluate run=runs/x tta=flip"),
        ("predict", ["RUN=runs/x", "IMAGES=a.png b.jpg"], "-m train.predict run=runs/x images=a.png b.jpg"),
        ("export", ["RUN=runs/x"], "-m train.export run=runs/x"),
        ("plot", ["RUN=runs/x", "ARGS=checkpoint=last"], "-m train.plot run=runs/x checkpoint=last"),
        ("evaluate", ["OUT=runs/y"], "-m train.evaluate run=runs/y"),
    ],
)
def test_make_targets(target, variables, command):
    # --no-print-directory: under a make already running (`make test`), make prints "Entering directory".
    proc = subprocess.run(["make", "--no-print-directory", "-n", target, "PYTHON=python3", *variables], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"python3 {command}"


@pytest.mark.parametrize("has_xdist", [True, False], ids=["xdist", "no-xdist"])
def test_make_test_runs_one_process_per_core_where_pytest_xdist_is(tmp_path, has_xdist):
    """`make test` spreads the suite over the cores with pytest-xdist when the interpreter has it, and runs it in
    one process when not (the device's preinstalled python3). A PYTHONPATH entry whose xdist.py fails to import
    stands for an interpreter without it."""
    pytest.importorskip("xdist")
    (tmp_path / "xdist.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ} if has_xdist else {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(["make", "--no-print-directory", "-n", "test", f"PYTHON={sys.executable}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    workers = " -n auto --dist loadgroup" if has_xdist else ""
    assert proc.stdout.strip() == f"{sys.executable} -m pytest -q --benchmark-disable{workers}"
