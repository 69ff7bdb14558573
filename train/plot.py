"""`python -m train.plot run=<run dir> [checkpoint=best|last|<path>] [data=<path>] [device=auto] [out=<folder>]`:
a run's learning curves and its test-set confusion matrix as PNG files, in `out` (default <run dir>/plots):

    curves.png      per epoch, from metrics.jsonl: loss (train, val), top-1 (train, val), learning rate; for
                    a members run the members' mean with a band of +- one standard deviation across members,
                    each member's curve thin, and the ensemble's validation top-1 and loss
    confusion.png   the checkpoint's predictions on the test set: rows are true classes, columns predicted
                    ones, each row as fractions of that class's images (the diagonal is per-class recall)

Needs matplotlib, an optional extra: pip install 'cifar-zoo[plots]'. Figures are drawn on
matplotlib.figure.Figure directly, without pyplot, so no global backend is chosen or changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from train.cli import tool_main
from train.run_dir import ToolError, load_run, parse_args, test_set

KEYS = {"run": None, "checkpoint": "best", "data": "", "device": "auto", "out": ""}
LABELLED_CLASSES = 20  # up to this many classes, the confusion matrix names them and prints each cell
DPI = 120


def figure_class():
    """matplotlib's Figure, or ToolError saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ToolError("plot needs matplotlib, which is not installed: pip install 'cifar-zoo[plots]'") from None
    return Figure


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise ToolError(f"cannot read {path} ({type(e).__name__}); is {run} a run directory?") from None
    if not lines:
        raise ToolError(f"{path} has no epochs yet: nothing to plot")
    return lines


def plot_curves(Figure, metrics: list[dict], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(13, 3.8), dpi=DPI, layout="constrained")
    loss, top1, lr = fig.subplots(1, 3)
    for ax, key, title in ((loss, "loss", "cross-entropy loss"), (top1, "top1", "top-1 accuracy (%)")):
        for split in ("train", "val"):
            line, = ax.plot(epochs, [m[f"{split}_{key}"] for m in metrics], marker=".",
                            label=split + (" (members' mean)" if "members" in metrics[0] else ""))
            if "members" in metrics[0]:
                member_band(ax, epochs, [m["members"][f"{split}_{key}"] for m in metrics], line.get_color())
        if f"ensemble_val_{key}" in metrics[0]:
            ax.plot(epochs, [m[f"ensemble_val_{key}"] for m in metrics], marker=".", label="val (ensemble)")
        ax.set(title=title, xlabel="epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    lr.plot(epochs, [m["lr"] for m in metrics], marker=".")
    lr.set(title="learning rate (last step of the epoch)", xlabel="epoch")
    lr.grid(alpha=0.3)
    for ax in (loss, top1, lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.savefig(path)


def member_band(ax, epochs: list[int], per_epoch: list[list], color) -> None:
    """Each member's curve (thin) and the mean +- one standard deviation across the members (a band), per
    epoch; a member that stopped alone (None) counts from then on for neither."""
    import statistics

    for k in range(len(per_epoch[0])):
        ax.plot(epochs, [values[k] if values[k] is not None else float("nan") for values in per_epoch],
                color=color, alpha=0.35, linewidth=0.8)
    live = [[v for v in values if v is not None] for values in per_epoch]
    mean = [statistics.fmean(v) for v in live]
    std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in live]
    ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                    alpha=0.15, linewidth=0)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, K: int) -> torch.Tensor:
    """int64 (K, K): [true, predicted] counts."""
    return torch.bincount(labels * K + predicted, minlength=K * K).view(K, K)


def plot_confusion(Figure, counts: torch.Tensor, classes: tuple[str, ...], title: str, path: Path) -> None:
    K = len(classes)
    fractions = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)  # each row: share of that class
    side = min(4 + 0.45 * K, 16)  # inches
    fig = Figure(figsize=(side + 1.5, side), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    if K <= LABELLED_CLASSES:
        ax.set_xticks(range(K), classes, rotation=45, ha="right")
        ax.set_yticks(range(K), classes)
        for t in range(K):
            for p in range(K):
                ax.text(p, t, f"{counts[t, p].item()}", ha="center", va="center", fontsize=7,
                        color="white" if fractions[t, p] > 0.5 else "black")
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    fig.savefig(path)


def plot_run(run: str, checkpoint: str = "best", data: str = "", device: str = "auto", out: str = "",
             log=print) -> dict[str, Path]:
    Figure = figure_class()  # before any work: a missing matplotlib is reported at once
    loaded = load_run(run, checkpoint, device)
    metrics = read_metrics(loaded.run)
    images, labels = test_set(loaded, data, log)
    tta = loaded.tta_for()  # the run's views: the confusion matrix of results.json's test scores
    predicted = loaded.logits(images, tta).argmax(1)
    counts = confusion_matrix(predicted, labels, len(loaded.classes))
    top1 = 100 * counts.diag().sum().item() / max(len(labels), 1)
    out_dir = Path(out) if out else loaded.run / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"curves": out_dir / "curves.png", "confusion": out_dir / "confusion.png"}
    plot_curves(Figure, metrics, paths["curves"])
    plot_confusion(Figure, counts, loaded.classes, f"{loaded.cfg.model}, {loaded.cfg.dataset} test set "
                   f"({len(labels)} images, top-1 {top1:.2f}%, tta={tta}), {loaded.checkpoint.name} "
                   f"{loaded.describe()}",
                   paths["confusion"])
    log(f"wrote {paths['curves']} and {paths['confusion']}")
    return paths


def command(argv: list[str]) -> dict[str, Path]:
    args = parse_args(argv, KEYS)
    return plot_run(args["run"], args["checkpoint"], args["data"], args["device"], args["out"])


def main(argv: list[str]) -> int:
    return tool_main(command, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
