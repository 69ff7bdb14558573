"""Turn a Config into a trained checkpoint, per-epoch metrics and test results.

The run directory gets:
    config.json      the resolved configuration
    metrics.jsonl    one line per epoch: train loss/top-1, val loss/top-1/top-5, lr, seconds, images/s
    last.pt          the latest epoch (everything needed to resume), rewritten atomically each epoch
    best.pt          the epoch with the best validation top-1
    results.json     the best-validation checkpoint evaluated once on the test set
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import nets
from data import DeviceBatches, load_cifar, normalisation_stats, normalise, stratified_split
from data.cifar import NUM_CLASSES
from train import checkpoint
from train.config import Config, ConfigError
from train.optim import zeros_like_tree
from train.schedule import make_schedule
from train.step import (
    TrainState,
    as_leaves,
    leaf_step,
    make_eval_step,
    make_train_step,
    maybe_compile,
    precision_for,
    to_memory_format,
    uses_custom_kernels,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(eval_step, params, state, batches: DeviceBatches) -> dict[str, float]:
    """Mean loss and top-1/top-5 accuracy (percent) over all batches, one device sync at the end."""
    totals, n = None, 0
    for x, y in batches:
        m, _ = eval_step(params, state, x, y)
        totals = m if totals is None else {k: totals[k] + m[k] for k in m}
        n += len(y)
    if n == 0:
        return {"loss": math.nan, "top1": math.nan, "top5": math.nan}
    return {"loss": totals["loss"].item() / n, "top1": 100 * totals["top1"].item() / n,
            "top5": 100 * totals["top5"].item() / n}


def _device_tensors(images: np.ndarray, labels: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)


def run(cfg: Config, log=print) -> dict:
    device = resolve_device(cfg.device)
    precision = precision_for(device, cfg.precision)
    use_compile = cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")
    out = Path(cfg.run_dir())

    # The net first: a wrong model name or option fails before any data is read.
    net = nets.build(cfg.model, num_classes=NUM_CLASSES[(cfg.dataset, cfg.labels)], **cfg.net)

    # Data: split and statistics from the training images only; everything then lives on the device.
    data = load_cifar(cfg.dataset, cfg.data, download=cfg.download, labels=cfg.labels)
    train_idx, val_idx = stratified_split(data.train_labels, cfg.val_fraction, cfg.seed)
    if cfg.batch_size > len(train_idx):
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the training split ({len(train_idx)} images)"
        )
    mean, std = (torch.from_numpy(a).to(device) for a in normalisation_stats(
        data.train_images[train_idx], per=cfg.normalisation))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    train_x, train_y = _device_tensors(data.train_images[train_idx], data.train_labels[train_idx], device)
    train_batches = DeviceBatches(train_x, train_y, mean, std, cfg.batch_size, train=True, generator=generator)
    val_batches = DeviceBatches(*_device_tensors(data.train_images[val_idx], data.train_labels[val_idx], device),
                                mean, std, cfg.eval_batch_size, train=False)
    test_batches = DeviceBatches(*_device_tensors(data.test_images, data.test_labels, device),
                                 mean, std, cfg.eval_batch_size, train=False)

    params, state = net.init(torch.Generator().manual_seed(cfg.seed), device)
    params = to_memory_format(params, precision)
    ts = TrainState(params, state, zeros_like_tree(params))  # momentum buffers in the params' layout
    schedule = make_schedule(cfg)
    gradients = "autograd" if uses_custom_kernels(net, device) else "func"
    train_step = maybe_compile(make_train_step(net, cfg, precision, gradients), use_compile, gradients)
    step = train_step
    if gradients == "autograd":
        step, ts = leaf_step(train_step), as_leaves(ts)
    eval_step = maybe_compile(make_eval_step(net, precision), use_compile)

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json() + "\n")
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    log(f"{net.name}: {net.param_count():,} params | {cfg.dataset} ({data.source}): {len(train_idx)} train, "
        f"{len(val_idx)} val, {len(data.test_labels)} test | {device.type}, "
        f"{'bf16' if precision.autocast else 'fp32'}, compile={use_compile}, gradients={gradients} | run dir {out}")

    compile_seconds = 0.0
    if use_compile:  # compile outside the timed epochs; the step is pure, so warming up changes nothing
        t0 = time.perf_counter()
        warm_batch = (normalise(train_x[: cfg.batch_size], mean, std), train_y[: cfg.batch_size])
        zero_lr = torch.zeros(1, device=device)[0]  # a 0-dim view, as the epochs pass lrs[i]
        # Twice: the second call sees the step's own outputs, whose layouts a first call may not have had.
        step(step(ts, warm_batch, zero_lr)[0], warm_batch, zero_lr)
        for batches in (val_batches, test_batches):
            for x, y in batches:
                eval_step(ts.params, ts.state, x, y)
        _sync(device)
        compile_seconds = time.perf_counter() - t0
        log(f"compiled in {compile_seconds:.1f} s")

    best = {"val_top1": -1.0, "epoch": 0}
    train_seconds = 0.0
    steps = len(train_batches)
    for epoch in range(cfg.epochs):
        lrs = torch.tensor(schedule.lrs(epoch, steps), device=device)
        losses, correct = [], torch.zeros((), device=device, dtype=torch.long)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and sys.stderr.isatty()))
        _sync(device)
        t0 = time.perf_counter()
        for i, batch in enumerate(train_batches):
            ts, m = step(ts, batch, lrs[i])
            losses.append(m["loss"])
            correct += m["correct"]
            bar.update()
        _sync(device)
        seconds = time.perf_counter() - t0
        bar.close()
        train_seconds += seconds
        losses = torch.stack(losses)
        finite = torch.isfinite(losses)
        if not finite.all():
            bad = int((~finite).nonzero()[0])
            raise TrainingDiverged(
                f"loss became {losses[bad].item()} at epoch {epoch + 1}, step {bad + 1} of {steps}; "
                f"stopped, the last good checkpoint is kept in {out} (try a lower lr)")
        seen = steps * cfg.batch_size
        val = evaluate(eval_step, ts.params, ts.state, val_batches)
        record = {
            "epoch": epoch + 1, "train_loss": losses.mean().item(), "train_top1": 100 * correct.item() / seen,
            "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
            "lr": lrs[-1].item(), "seconds": seconds, "images_per_s": seen / seconds,
        }
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        # Without a validation split the training error drives the schedule and the last epoch is kept.
        schedule.observe(100 - (val["top1"] if val_idx.size else record["train_top1"]))
        payload = {
            "params": ts.params, "state": ts.state, "momentum": ts.momentum, "epoch": epoch + 1,
            "schedule": schedule.state_dict(), "config": cfg.to_json(), "model": cfg.model,
            "classes": list(data.classes), "mean": mean.cpu(), "std": std.cpu(),
            "train_idx": torch.from_numpy(train_idx), "val_idx": torch.from_numpy(val_idx),
            "generator": generator.get_state(), "train_seconds": train_seconds,
        }
        checkpoint.save(out / "last.pt", payload)
        improved = val["top1"] > best["val_top1"] if val_idx.size else True
        if improved:
            best = {"val_top1": val["top1"], "epoch": epoch + 1}
            checkpoint.save(out / "best.pt", payload)
        log(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {record['train_loss']:.4f} top1 "
            f"{record['train_top1']:5.2f}  val loss {val['loss']:.4f} top1 {val['top1']:5.2f} top5 "
            f"{val['top5']:5.2f}  lr {record['lr']:.4g}  {seconds:5.1f} s  {record['images_per_s']:,.0f} img/s"
            + ("  *" if improved else ""))

    # The best-validation checkpoint, evaluated once on the test set.
    saved = checkpoint.load(out / "best.pt", map_location=device)
    test = evaluate(eval_step, to_memory_format(saved["params"], precision), saved["state"], test_batches)
    results = {
        "model": cfg.model, "dataset": cfg.dataset, "test_top1": test["top1"], "test_top5": test["top5"],
        "test_loss": test["loss"], "best_val_top1": best["val_top1"] if val_idx.size else None,
        "best_epoch": best["epoch"], "epochs_run": cfg.epochs, "train_seconds": train_seconds,
        "compile_seconds": compile_seconds, "params": net.param_count(), "recipe": cfg.recipe,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "data_source": data.source,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(f"test (best val epoch {best['epoch']}): top1 {test['top1']:.2f}  top5 {test['top5']:.2f}  "
        f"| {train_seconds:.1f} s training, {compile_seconds:.1f} s compiling")
    return results
