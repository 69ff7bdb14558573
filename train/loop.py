"""Turn a Config into a trained checkpoint, per-epoch metrics and test results; stop and resume safely.

The run directory gets:
    config.json      the resolved configuration
    metrics.jsonl    one line per epoch: train loss/top-1, val loss/top-1/top-5, lr, seconds, images/s
    last.pt          everything needed to resume (below), rewritten atomically after every epoch and when a
                     run is stopped by SIGINT/SIGTERM
    best.pt          the epoch with the best validation top-1 (same layout)
    results.json     the best-validation checkpoint evaluated once on the test set
    tensorboard/     the per-epoch scalars again, when the tensorboard package is installed

A checkpoint (train/checkpoint.py adds "format" and "sha256") holds:
    params, state, momentum       the TrainState (params, BatchNorm statistics, optimizer state)
    epoch, step                   epochs completed, and steps completed of the next epoch (0 at a boundary)
    generator                     the loader's generator state at the start of that next epoch
    torch_rng, cuda_rng           torch's global generators (anything random outside the loader)
    epoch_losses, epoch_correct,  the partial epoch's per-step losses, top-1 hits and seconds (empty/0 at
    epoch_seconds                 a boundary)
    schedule, best                the lr schedule's state; the best val top-1 so far and its epoch
    train_idx, val_idx, data_sha256   the split, and a digest of the data it indexes
    mean, std, classes            the normalisation (0..255 pixel units, (3, 32, 32)) and the class names
    config, model, device_type, train_seconds

Resuming (resume=true) restores all of it; a run stopped mid-epoch replays the loader from the epoch's start
state and skips the steps already taken, so on the CPU, with the same thread count, a resumed run ends with
the same params and metrics, bit for bit, as one never stopped (only timing fields differ).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import nets
from data import DataError, DeviceBatches, load_cifar, normalisation_stats, stratified_split
from data.cifar import NUM_CLASSES
from train import checkpoint, distributed, sync_bn
from train.config import RESUMABLE, Config, ConfigError, from_json, resume_differences
from train.gpu_lock import gpu_turn
from train.optim import init_state
from train.schedule import load_schedule, make_schedule
from train.step import (
    TrainState,
    copy_into,
    make_eval_step,
    make_train_step,
    maybe_compile,
    precision_for,
    prepare_step,
    to_memory_format,
    uses_custom_kernels,
)

# metrics.jsonl keys -> TensorBoard tags (train and val curves of one quantity share a chart).
TENSORBOARD_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "train_top1": "top1/train", "val_top1": "top1/val",
    "val_top5": "top5/val", "lr": "lr", "seconds": "time/epoch_seconds", "images_per_s": "time/images_per_s",
}
# What a checkpoint of this trainer holds (train/checkpoint.py adds "format" and "sha256"); see the module doc.
CHECKPOINT_KEYS = (
    "params", "state", "momentum", "epoch", "step", "generator", "torch_rng", "cuda_rng", "epoch_losses",
    "epoch_correct", "epoch_seconds", "schedule", "best", "config", "model", "device_type", "classes", "mean",
    "std", "train_idx", "val_idx", "data_sha256", "train_seconds",
)
TIMING_KEYS = ("seconds", "images_per_s", "train_seconds", "compile_seconds")  # differ between equal runs


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN or infinite."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run; `signum` gives the exit code 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """While active, SIGINT and SIGTERM only set `signum`, which the step loop checks between steps; a second
    signal stops at once (raising TrainingInterrupted wherever the run is: checkpoints are written atomically,
    so last.pt is then the previous one). Handlers can be set in the main thread only; elsewhere this does
    nothing and signals keep their usual effect."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise TrainingInterrupted(f"stopped at once by a second {signal.Signals(signum).name}, without "
                                      "saving; last.pt holds the previous checkpoint", signum)
        self.signum = signum  # no I/O here: the loop logs when it reaches the next step boundary

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


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


def load_data(cfg: Config):
    """load_cifar for this config; an OS-level failure (permissions, a device error) is a DataError too."""
    try:
        return load_cifar(cfg.dataset, cfg.data, download=cfg.download, labels=cfg.labels)
    except OSError as e:
        where = e.filename or cfg.data
        raise DataError(f"cannot read the data at {where} ({e.strerror or type(e).__name__}); check the path "
                        "and its permissions, or point data=<path> at another copy") from None


def data_digest(data) -> str:
    """sha256 of the training images and labels (what the saved split indexes), to refuse other data."""
    h = hashlib.sha256()
    for a in (data.train_images, data.train_labels):
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def all_finite(*trees: dict) -> bool:
    """Whether every tensor of the trees is finite (one device sync)."""
    flags = [torch.isfinite(t).all() for tree in trees for t in tree.values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def resume_point(cfg: Config, out: Path, device: torch.device) -> dict:
    """The checkpoint a resume=true run continues from, checked against `cfg` (ConfigError, CheckpointError)."""
    path = out / "last.pt"
    if not path.is_file():
        raise checkpoint.CheckpointError(
            f"resume=true but {out} holds no checkpoint (no last.pt); check out=<run dir>, or start the run "
            "without resume=true")
    saved = checkpoint.load(path)
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
    if cfg.epochs != saved_cfg.epochs and cfg.schedule == "onecycle":
        raise ConfigError(f"resume=true: epochs cannot change with schedule=onecycle (its lr curve spans all "
                          f"{saved_cfg.epochs} epochs); drop epochs={cfg.epochs}")
    if cfg.epochs < saved["epoch"] + (saved["step"] > 0):
        raise ConfigError(f"resume=true: epochs={cfg.epochs}, but {path} is already past epoch {saved['epoch']}")
    return saved


def _keep_metrics_until(path: Path, epoch: int) -> None:
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


@dataclass
class DeviceSplit:
    """The run's split on the device: indices into the training images (numpy), the (train, val, test)
    DeviceBatches (the training one holds the normalisation, 0..255 pixel units, and the loader's generator),
    and the digest of the data the indices point into (data_digest)."""

    digest: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    batches: tuple[DeviceBatches, DeviceBatches, DeviceBatches]


def device_split(cfg: Config, data, saved: dict | None, out: Path, device, rank: int, world: int,
                 num_classes: int) -> DeviceSplit:
    """Split and statistics from the training images only (or the saved run's), then everything on the device;
    with several ranks, this rank's shard of the training split."""
    digest = data_digest(data)
    if saved is None:
        train_idx, val_idx = stratified_split(data.train_labels, cfg.val_fraction, cfg.seed)
        mean, std = (torch.from_numpy(a) for a in normalisation_stats(data.train_images[train_idx],
                                                                      per=cfg.normalisation))
    else:
        if saved["data_sha256"] != digest:
            raise DataError(f"the data at {cfg.data} ({data.source}) differs from the data the run in {out} "
                            "trained on; point data=<path> at that copy to resume")
        train_idx, val_idx, mean, std = (saved[k] for k in ("train_idx", "val_idx", "mean", "std"))
        train_idx, val_idx = train_idx.numpy(), val_idx.numpy()
    # Several ranks: each trains on its own equal, disjoint share of the split (batch_size is per rank).
    rank_idx = train_idx if world == 1 else distributed.shard(train_idx, rank, world, cfg.seed).numpy()
    if cfg.batch_size > len(rank_idx):
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the training split ({len(train_idx)} images"
            + (f", {len(rank_idx)} per rank" if world > 1 else "") + ")"
        )
    mean, std = mean.to(device), std.to(device)
    # The same seed on every rank: each shuffles and augments its own shard with the same random stream, so the
    # one generator state rank 0 saves resumes every rank.
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    train = DeviceBatches(*_device_tensors(data.train_images[rank_idx], data.train_labels[rank_idx], device),
                          mean, std, cfg.batch_size, train=True, generator=generator, cutout=cfg.cutout,
                          mix=cfg.mix, num_classes=num_classes, randaugment_ops=cfg.randaugment,
                          randaugment_magnitude=cfg.randaugment_magnitude)
    val = DeviceBatches(*_device_tensors(data.train_images[val_idx], data.train_labels[val_idx], device),
                        mean, std, cfg.eval_batch_size, train=False)
    test = DeviceBatches(*_device_tensors(data.test_images, data.test_labels, device),
                         mean, std, cfg.eval_batch_size, train=False)
    return DeviceSplit(digest, train_idx, val_idx, (train, val, test))


def warm_up(step, eval_step, ts: TrainState, train: DeviceBatches, evaluation: tuple[DeviceBatches, ...]) -> float:
    """Seconds to compile every graph the run will call: the train step, and the eval step at each batch
    shape of the evaluation sets. Calls on the first training images (not augmented), at lr 0; ts is then
    restored (the CUDA-graph step writes its state in place, and at lr 0 the momentum and BatchNorm statistics
    still move), so nothing of the run changes."""
    device = train.images.device
    t0 = time.perf_counter()
    kept = TrainState(*({k: v.detach().clone() for k, v in tree.items()} for tree in ts))
    batch = train.example()
    zero_lr = torch.zeros(1, device=device)[0]  # a 0-dim view, as the epochs pass lrs[i]
    # Twice: the second call sees the step's own outputs, whose layouts (strides) a first call may not have had;
    # the eval step is then warmed on those outputs, the tensors it will see after every epoch.
    warm_ts, _ = step(step(ts, batch, zero_lr)[0], batch, zero_lr)
    # One call per distinct batch shape (a full batch and the last, partial one) compiles every graph.
    shapes = {x.shape: (x, y) for batches in evaluation for x, y in batches}
    for x, y in shapes.values():
        eval_step(warm_ts.params, warm_ts.state, x, y)
    copy_into(ts, kept)
    _sync(device)
    return time.perf_counter() - t0


def graphs_for(cfg: Config, use_compile: bool, device: torch.device, world: int) -> bool:
    """Whether the step runs as CUDA graphs. They need compile, CUDA and one process (the gradient all-reduce
    and sync BN's collectives stay outside graphs); cudagraphs=true outside those conditions is an error."""
    possible = use_compile and device.type == "cuda" and world == 1
    if cfg.cudagraphs == "true" and not possible:
        raise ConfigError("cudagraphs=true needs compile on, a CUDA device and one process; "
                          "use cudagraphs=auto or false")
    return cfg.cudagraphs == "true" or (cfg.cudagraphs == "auto" and possible)


def divergence_hint(cfg: Config) -> str:
    """What to try after a NaN: a lower lr; for a ViT on SGD (lr 0.2 at batch 512 diverged on the H100, see
    README), recipe=fast, which gives the ViTs AdamW."""
    if cfg.model.startswith("vit") and cfg.optimizer == "sgd":
        return "try a lower lr, or recipe=fast (AdamW for the ViTs)"
    return "try a lower lr"


def tensorboard_writer(log_dir: Path, purge_step: int | None, log):
    """A SummaryWriter into `log_dir`, or None (with one log line) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without the tensorboard package
    except ImportError:
        log("tensorboard is not installed: no tensorboard/ logs (pip install 'cifar-zoo[tensorboard]')")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def run(cfg: Config, log=print) -> dict:
    """Train and test `cfg`; under torchrun (WORLD_SIZE set) as one rank of a data-parallel job, in which
    only rank 0 logs and writes files (see train/distributed.py and the README's "Several GPUs")."""
    device = resolve_device(cfg.device)
    rank, world, local_rank = distributed.init_from_env(device.type)
    try:
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", local_rank)  # one GPU per process
        with contextlib.ExitStack() as turn:  # _train takes the GPU lock (gpu_lock=) into it after compiling
            return _train(cfg, device, rank, world, log if distributed.is_main() else lambda line: None, turn)
    finally:
        distributed.close()


def _train(cfg: Config, device: torch.device, rank: int, world: int, log, turn: contextlib.ExitStack) -> dict:
    main = rank == 0  # the one rank that writes the run directory
    precision = precision_for(device, cfg.precision)
    if device.type == "cuda":  # read at each convolution call, compiled graphs' too
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    use_compile = cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")
    use_graphs = graphs_for(cfg, use_compile, device, world)
    out = Path(cfg.run_dir())

    # The net first: a wrong model name or option fails before any data is read; then the checkpoint to resume.
    net = nets.build(cfg.model, num_classes=NUM_CLASSES[(cfg.dataset, cfg.labels)], **cfg.net)
    if world > 1 and cfg.gpu_lock:  # every rank would queue for the one lock while the others wait on it
        raise ConfigError("gpu_lock= orders single-GPU runs that share a GPU; drop it for a run on several GPUs")
    if world > 1 and cfg.sync_bn:  # BatchNorm statistics over all ranks' images (1 rank: it has them all)
        sync_bn.synchronise_batchnorm(net)
    saved = resume_point(cfg, out, device) if cfg.resume else None

    # Data: split and statistics from the training images only; everything then lives on the device.
    data = load_data(cfg)
    split = device_split(cfg, data, saved, out, device, rank, world, net.num_classes)
    train_batches, val_batches, test_batches = split.batches
    train_idx, val_idx = split.train_idx, split.val_idx
    generator, mean, std = train_batches.generator, train_batches.mean, train_batches.std

    params, state = net.init(torch.Generator().manual_seed(cfg.seed), device)
    schedule = make_schedule(cfg)
    best = {"val_top1": -1.0, "epoch": 0}
    train_seconds, start_epoch, start_step = 0.0, 0, 0
    kept = "no checkpoint was written yet"
    torch.manual_seed(cfg.seed)  # torch's global generators: anything random outside the loader's generator
    momentum = init_state(cfg.optimizer, params)  # the optimizer's state, in the params' layout
    if saved is not None:
        where = out / "last.pt"
        for key, expected in (("params", params), ("state", state), ("momentum", momentum)):
            checkpoint.check_fits(where, saved[key], expected)
        params, state, momentum = ({k: v.to(device) for k, v in saved[key].items()}
                                   for key in ("params", "state", "momentum"))
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and len(saved["cuda_rng"]):
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        schedule = load_schedule(cfg, saved["schedule"])
        best, train_seconds = dict(saved["best"]), saved["train_seconds"]
        start_epoch, start_step = saved["epoch"], saved["step"]
        position = f"epoch {start_epoch + 1}, after step {start_step}" if start_step else f"after epoch {start_epoch}"
        kept = f"the last good checkpoint, {where} ({position}), is kept"
    params, momentum = to_memory_format(params, precision), to_memory_format(momentum, precision)
    ts = TrainState(params, state, momentum)
    # The "autograd" form where torch.func.grad cannot be compiled around: Triton kernels with custom backwards,
    # and sync BN's collectives (a graph break inside func.grad leaves the whole gradient eager; with autograd
    # the pieces between BatchNorm layers still compile: train/sync_bn.py).
    synced = world > 1 and cfg.sync_bn
    gradients = "autograd" if uses_custom_kernels(net, device) or synced else "func"
    grad_hook = distributed.all_reduce_mean_ if world > 1 else None  # every rank takes the same averaged step
    # With graphs, ts's tensors are the state's persistent buffers, which each replay overwrites.
    step, ts = prepare_step(make_train_step(net, cfg, precision, gradients, grad_hook), ts, gradients, use_compile,
                            use_graphs)
    eval_step = maybe_compile(make_eval_step(net, precision, cfg.tta), use_compile)

    metrics_path = out / "metrics.jsonl"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json() + "\n")
        _keep_metrics_until(metrics_path, start_epoch)  # a fresh run: empty
    log(f"{net.name}: {net.param_count():,} params | {cfg.dataset} ({data.source}): {len(train_idx)} train, "
        f"{len(val_idx)} val, {len(data.test_labels)} test | {device.type}"
        f"{f' x {world} ranks ({len(train_batches.images)} train each)' if world > 1 else ''}, "
        f"{'bf16' if precision.autocast else 'fp32'}, compile={use_compile}, cudagraphs={use_graphs}, "
        f"gradients={gradients} | run dir {out}")
    if saved is not None:
        log(f"resuming from {out / 'last.pt'} at epoch {start_epoch + 1}, step {start_step + 1}")

    compile_seconds = 0.0
    if use_compile:  # compile outside the timed epochs; warm_up leaves ts as it found it
        compile_seconds = warm_up(step, eval_step, ts, train_batches, (val_batches, test_batches))
        log(f"compiled in {compile_seconds:.1f} s")
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the warm-up's activations: free for other runs while this one waits
    turn.enter_context(gpu_turn(cfg.gpu_lock, log, cfg.gpu_slots))

    def payload(epoch: int, step_: int, epoch_generator, losses, correct, seconds: float) -> dict:
        """Everything needed to continue after `step_` steps of epoch index `epoch` (see the module doc)."""
        return {  # CHECKPOINT_KEYS, in that order
            "params": ts.params, "state": ts.state, "momentum": ts.momentum, "epoch": epoch, "step": step_,
            "generator": epoch_generator, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.zeros(0),
            "epoch_losses": torch.stack(losses) if losses else torch.zeros(0), "epoch_correct": correct,
            "epoch_seconds": seconds, "schedule": schedule.state_dict(), "best": dict(best),
            "config": cfg.to_json(), "model": cfg.model, "device_type": device.type,
            "classes": list(data.classes), "mean": mean, "std": std, "train_idx": torch.from_numpy(train_idx),
            "val_idx": torch.from_numpy(val_idx), "data_sha256": split.digest, "train_seconds": train_seconds,
        }

    def diverged(what: str) -> TrainingDiverged:
        return TrainingDiverged(f"{what}; stopped: {kept}; {divergence_hint(cfg)}")

    steps = len(train_batches)
    # purge_step: TensorBoard hides events at epochs >= it written earlier into the folder (a stopped run's
    # later epochs, or a previous run's), so the curves show this run's history once.
    writer = tensorboard_writer(out / "tensorboard", start_epoch + 1, log) if main else None
    host = distributed.host_group()  # for agreeing on a stop request without a GPU sync
    try:
        with StopRequests() as stop:
            for epoch in range(start_epoch, cfg.epochs):
                epoch_generator = generator.get_state()  # on resume, the saved state: the epoch replays
                lrs = torch.tensor(schedule.lrs(epoch, steps), device=device)
                losses, correct, seconds = [], torch.zeros((), device=device, dtype=torch.long), 0.0
                first = start_step if epoch == start_epoch else 0
                if first:  # the stopped epoch's partial sums, so its metrics line is the uninterrupted one
                    losses = list(saved["epoch_losses"].to(device))
                    correct, seconds = saved["epoch_correct"].to(device), saved["epoch_seconds"]
                bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                           disable=not (cfg.progress and sys.stderr.isatty()))
                _sync(device)
                t0 = time.perf_counter()
                for i, batch in enumerate(train_batches):
                    if i < first:
                        continue  # drawn and dropped: the loader's random stream reaches step `first`
                    # A safe point: after a step, before the next; every rank stops at the same one.
                    if distributed.any_rank(stop.signum is not None, host):
                        _sync(device)
                        elapsed = time.perf_counter() - t0
                        seconds, train_seconds = seconds + elapsed, train_seconds + elapsed
                        bar.close()
                        if not all_finite({"loss": torch.stack(losses)} if losses else {}, ts.params):
                            raise diverged(f"the loss or parameters became non-finite in epoch {epoch + 1} "
                                           f"(found when stopping at step {i} of {steps})")
                        if main:
                            checkpoint.save(out / "last.pt", payload(epoch, i, epoch_generator, losses, correct,
                                                                     seconds))
                        signum = stop.signum or signal.SIGTERM  # a rank that did not see it stops as the others
                        name = signal.Signals(signum).name
                        raise TrainingInterrupted(f"{name}: stopped in epoch {epoch + 1} after step {i} of "
                                                  f"{steps} and saved {out / 'last.pt'}", signum)
                    ts, m = step(ts, batch, lrs[i])
                    losses.append(m["loss"])
                    correct += m["correct"]
                    bar.update()
                _sync(device)
                elapsed = time.perf_counter() - t0
                seconds, train_seconds = seconds + elapsed, train_seconds + elapsed
                bar.close()
                # Per-step losses and top-1 hits of all ranks (one collective each per epoch): every rank then
                # sees the same numbers and takes the same decisions.
                losses = distributed.all_reduce_sum(torch.stack(losses)) / world
                correct = distributed.all_reduce_sum(correct)
                finite = torch.isfinite(losses)
                if not finite.all():
                    bad = int((~finite).nonzero()[0])
                    raise diverged(f"loss became {losses[bad].item()} at epoch {epoch + 1}, step {bad + 1} of "
                                   f"{steps}")
                if not all_finite(ts.params, ts.state):
                    raise diverged(f"parameters became non-finite at epoch {epoch + 1}, step {steps} of {steps}")
                seen = steps * cfg.batch_size * world
                distributed.broadcast_tree_(ts.state)  # rank 0's BatchNorm statistics, evaluated and saved
                # Rank 0 evaluates; its numbers drive every rank's schedule, so the lrs stay the same everywhere.
                val = distributed.from_main(evaluate(eval_step, ts.params, ts.state, val_batches) if main else None)
                record = {
                    "epoch": epoch + 1, "train_loss": losses.mean().item(),
                    "train_top1": 100 * correct.item() / seen,
                    "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                    "lr": lrs[-1].item(), "seconds": seconds, "images_per_s": seen / seconds,
                }
                if main:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, tag in TENSORBOARD_TAGS.items():
                        writer.add_scalar(tag, record[key], epoch + 1)
                    writer.flush()
                # Without a validation split the training error drives the schedule and the last epoch is kept.
                schedule.observe(100 - (val["top1"] if val_idx.size else record["train_top1"]))
                improved = val["top1"] > best["val_top1"] if val_idx.size else True
                if improved:
                    best = {"val_top1": val["top1"], "epoch": epoch + 1}
                # best.pt before last.pt: a crash between the two leaves last.pt at the previous epoch, whose
                # replay writes this best.pt again, never a last.pt whose "best" names a best.pt not written.
                ckpt = payload(epoch + 1, 0, generator.get_state(), [], torch.zeros((), dtype=torch.long), 0.0)
                if main:
                    checkpoint.save([out / "best.pt", out / "last.pt"] if improved else [out / "last.pt"], ckpt)
                kept = f"the last good checkpoint, {out / 'last.pt'} (after epoch {epoch + 1}), is kept"
                log(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {record['train_loss']:.4f} top1 "
                    f"{record['train_top1']:5.2f}  val loss {val['loss']:.4f} top1 {val['top1']:5.2f} top5 "
                    f"{val['top5']:5.2f}  lr {record['lr']:.4g}  {seconds:5.1f} s  "
                    f"{record['images_per_s']:,.0f} img/s" + ("  *" if improved else ""))
                if stop.signum is not None and epoch + 1 < cfg.epochs:  # the signal came after the last step
                    name = signal.Signals(stop.signum).name
                    raise TrainingInterrupted(f"{name}: stopped after epoch {epoch + 1} and saved "
                                              f"{out / 'last.pt'}", stop.signum)
    finally:
        if writer is not None:
            writer.close()

    if not main:  # rank 0 tests the best checkpoint and writes results.json; the others receive its results
        return distributed.from_main(None)
    # The best-validation checkpoint, evaluated once on the test set.
    best_path = out / "best.pt"
    best_saved = checkpoint.load(best_path, map_location=device)
    if best_saved["epoch"] != best["epoch"]:
        raise checkpoint.CheckpointError(f"{best_path} holds epoch {best_saved['epoch']} but the run's best "
                                         f"validation epoch is {best['epoch']}; was it replaced?")
    test = evaluate(eval_step, to_memory_format(best_saved["params"], precision), best_saved["state"], test_batches)
    results = {
        "model": cfg.model, "dataset": cfg.dataset, "test_top1": test["top1"], "test_top5": test["top5"],
        "test_loss": test["loss"], "best_val_top1": best["val_top1"] if val_idx.size else None,
        "best_epoch": best["epoch"], "epochs_run": cfg.epochs, "train_seconds": train_seconds,
        "compile_seconds": compile_seconds, "params": net.param_count(), "recipe": cfg.recipe, "tta": cfg.tta,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "data_source": data.source,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(f"test (best val epoch {best['epoch']}): top1 {test['top1']:.2f}  top5 {test['top5']:.2f}  "
        f"| {train_seconds:.1f} s training, {compile_seconds:.1f} s compiling")
    return distributed.from_main(results)
