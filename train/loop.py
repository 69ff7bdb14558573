"""Turn a Config into a trained checkpoint, per-epoch metrics and test results; stop and resume safely.

The run directory gets:
    config.json      the resolved configuration
    metrics.jsonl    one line per epoch: train loss/top-1, val loss/top-1/top-5, lr, seconds, images/s
    last.pt          everything needed to resume (below), rewritten atomically after every epoch and when a
                     run is stopped by SIGINT/SIGTERM
    best.pt          the epoch with the best validation top-1 (same layout)
    results.json     the best-validation checkpoint evaluated once on the test set (its EMA weights with ema > 0:
                     "weights": "ema", else "raw")
    train.log        what each command of the run printed from its header line on, after the command line,
                     line by line (train/out_dir.py)
    tensorboard/     the per-epoch scalars again, when the tensorboard package is installed
    .lock            held (flock) while a process trains here, removed at its end (train/out_dir.py)

A checkpoint (train/checkpoint.py adds "format" and "sha256") holds:
    params, state, momentum, ema  the TrainState (params, BatchNorm statistics, optimizer state, and the EMA of
                                  params and statistics: empty when ema=0)
    epoch, step                   epochs completed, and steps completed of the next epoch (0 at a boundary)
    generator                     the loader's generator state at the start of that next epoch
    torch_rng, cuda_rng           torch's global generators (anything random outside the loader)
    epoch_losses, epoch_correct,  the partial epoch's per-step losses, top-1 hits and seconds (empty/0 at
    epoch_seconds                 a boundary)
    schedule, best                the lr schedule's state; the best val top-1 so far and its epoch
    stopped                       a members run's note per member that stopped alone (train/members.py)
    train_idx, val_idx, data_sha256   the split, and a digest of the data it indexes
    mean, std, classes            the normalisation (0..255 pixel units, (3, 32, 32)) and the class names
    config, model, device_type, train_seconds

Resuming (resume=true) restores all of it; a run stopped mid-epoch replays the loader from the epoch's start
state and skips the steps already taken, so on the CPU, with the same thread count, a resumed run ends with
the same params and metrics, bit for bit, as one never stopped (only timing fields differ).

`train` reads top to bottom: claim the run directory (train/out_dir.py: writable, one trainer at a time, no run
replaced unless overwrite=true), set_up (machinery, net, data, the fresh or restored state, the steps),
start_run_dir, compile_steps, then train_epochs: per epoch train_epoch (stop_here at a step boundary on a signal)
and end_of_epoch (metrics, the schedule, save_checkpoint); and final_test. Beside it: train/device_data.py (the
split on the device), train/resume.py (a checkpoint's keys, the run to resume), train/signals.py (SIGINT/SIGTERM).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, NoReturn

import torch
from tqdm import tqdm

import nets
from data import Cifar, DeviceBatches
from train import checkpoint, collectives, compile_cache, distributed, members, out_dir, sync_bn
from train.config import Config, ConfigError
from train.device_data import DeviceSplit, device_split, load_data
from train.optim import init_state
from train.resume import keep_metrics_until, resume_point, with_added_keys
from train.schedule import OneCycle, Plateau, load_schedule, make_schedule
from train.signals import StopRequests, TrainingDiverged, TrainingInterrupted
from train.step import (
    Precision,
    TrainState,
    all_finite,
    choose_cudnn_algorithms,
    choose_kernel_tuning,
    copy_into,
    eval_weights,
    gradients_for,
    init_ema,
    make_train_step,
    precision_for,
    prepare_step,
    to_memory_format,
    trainer_eval_step,
    uses_custom_kernels,
)

# metrics.jsonl keys -> TensorBoard tags (train and val curves of one quantity share a chart).
TENSORBOARD_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "train_top1": "top1/train", "val_top1": "top1/val",
    "val_top5": "top5/val", "lr": "lr", "seconds": "time/epoch_seconds", "images_per_s": "time/images_per_s",
}
TIMING_KEYS = ("seconds", "images_per_s", "train_seconds", "compile_seconds")  # differ between equal runs


class RunContext(NamedTuple):
    """What stays fixed while one rank trains: the config and machinery, the net, the data and its split on the
    device, and the two steps (built by set_up, compiled by compile_steps)."""

    cfg: Config
    device: torch.device
    out: Path  # the run directory
    main: bool  # the one rank that writes the run directory
    world: int  # ranks
    log: Callable[[str], None]  # a no-op on every rank but rank 0
    net: nets.Net
    data: Cifar  # as load_cifar read it
    split: DeviceSplit
    precision: Precision
    use_compile: bool
    use_graphs: bool
    gradients: str  # "func" | "autograd" (train/step.py)
    step: Callable  # (ts, batch, lr) -> (ts, metrics)
    eval_step: Callable  # (params, state, x, y) -> (summed metrics, logits)
    checkpoints: checkpoint.Writer  # rank 0's checkpoint writes, in the background


@dataclass
class EpochSums:
    """The epoch in progress so far: its steps' losses (device scalars), top-1 hits and seconds."""

    losses: list[torch.Tensor]
    correct: torch.Tensor
    seconds: float

    @staticmethod
    def empty(device, members: int = 1) -> EpochSums:
        return EpochSums([], torch.zeros((members,) if members > 1 else (), device=device, dtype=torch.long), 0.0)


@dataclass
class Progress:
    """Where the run is, as its checkpoints save it: the train state and schedule, `epoch` epochs completed and
    `step` steps of the next one (`sums`), the best val top-1 and its epoch, the seconds spent training; and
    `kept`, what a divergence message says about the checkpoint left behind."""

    ts: TrainState
    schedule: Plateau | OneCycle
    epoch: int
    step: int
    sums: EpochSums
    best: dict
    train_seconds: float
    kept: str
    stopped: list = field(default_factory=list)  # a members run's: per member None, or why it stopped alone
    compile_seconds: float = 0.0  # summed over the run's commands, as train_seconds (a resumed run compiles again)


def run(cfg: Config, log=print, command: str = "") -> dict:
    """Train and test `cfg`; under torchrun (WORLD_SIZE set) as one rank of a data-parallel job, in which
    only rank 0 logs and writes files (see train/distributed.py and the README's "Several GPUs"). `command`,
    the command line that asked for the run, heads its lines in train.log."""
    device = resolve_device(cfg.device)
    rank, world, local_rank = distributed.init_from_env(device.type)
    try:
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", local_rank)  # one GPU per process
        return train(cfg, device, rank, world, log if distributed.is_main() else lambda line: None, command)
    finally:
        distributed.close()


def train(cfg: Config, device: torch.device, rank: int, world: int, log, command: str = "") -> dict:
    """One rank's run, top to bottom: set up (fresh, or resumed from last.pt), compile, then epoch by epoch
    train, evaluate and checkpoint, stopping at a safe point on SIGINT/SIGTERM; finally test the best
    checkpoint. Returns results.json's dict."""
    with out_dir.claim(cfg, main=rank == 0):  # before anything is read or written
        ctx, progress = set_up(cfg, device, rank, world, log)
        ctx = start_run_dir(ctx, progress, command)
        progress.compile_seconds += compile_steps(ctx, progress.ts)
        train_epochs(ctx, progress)
        return final_test(ctx, progress)


def train_epochs(ctx: RunContext, progress: Progress) -> None:
    """Epoch by epoch from progress.epoch to cfg.epochs: train, evaluate, checkpoint, log to TensorBoard; a
    SIGINT/SIGTERM stops at the next safe point (TrainingInterrupted), with last.pt saved there."""
    # purge_step: TensorBoard hides events at epochs >= it written earlier into the folder (a stopped run's
    # later epochs, or a previous run's), so the curves show this run's history once.
    writer = tensorboard_writer(ctx.out / "tensorboard", progress.epoch + 1, ctx.log) if ctx.main else None
    host = distributed.host_group()  # for agreeing on a stop request without a GPU sync
    try:
        with StopRequests() as stop:
            while progress.epoch < ctx.cfg.epochs:
                lrs = train_epoch(ctx, progress, stop, host)
                end_of_epoch(ctx, progress, lrs, writer)
                if stop.signum is not None and progress.epoch < ctx.cfg.epochs:  # the signal came after the last step
                    raise TrainingInterrupted(f"{signal.Signals(stop.signum).name}: stopped after epoch "
                                              f"{progress.epoch} and saved {ctx.out / 'last.pt'}", stop.signum)
    finally:
        if writer is not None:
            writer.close()
        ctx.checkpoints.wait()  # every checkpoint asked for is on disk before the run stops or tests


# --- set-up and resume ----------------------------------------------------------------------------------


def set_up(cfg: Config, device: torch.device, rank: int, world: int, log) -> tuple[RunContext, Progress]:
    """The machinery, the net, the data on the device, the starting point (fresh, or resume=true's last.pt,
    checked against cfg) and the steps, built but not compiled yet."""
    precision = precision_for(device, cfg.precision)
    choose_cudnn_algorithms(device, cfg.cudnn_benchmark)
    choose_kernel_tuning(cfg.inductor_autotune)
    use_compile = cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")
    use_graphs = graphs_for(cfg, use_compile, device, world)
    out = Path(cfg.run_dir())

    # The net first: a wrong model name or option fails before any data is read; then the checkpoint to resume.
    net = members.build_net(cfg, device, log)
    synced = world > 1 and cfg.sync_bn
    if synced:  # BatchNorm statistics over all ranks' images (1 rank: it has them all)
        sync_bn.synchronise_batchnorm(net)
    if cfg.members > 1:
        members.check_supported(cfg, net, synced, uses_custom_kernels(net, device))
    saved = resume_point(cfg, out, device) if cfg.resume else None

    # Data: split and statistics from the training images only; everything then lives on the device.
    data = load_data(cfg, log)
    split = device_split(cfg, data, saved, out, device, rank, world, net.num_classes)
    progress = starting_point(cfg, device, net, precision, split.train, saved, out)

    gradients = gradients_for(net, device, synced)
    grad_hook = collectives.all_reduce_mean_ if world > 1 else None  # every rank takes the same averaged step
    # With graphs, ts's tensors are the state's persistent buffers, which each replay overwrites.
    step, progress.ts = prepare_step(make_train_step(net, cfg, precision, gradients, grad_hook), progress.ts,
                                     gradients, use_compile, use_graphs)
    eval_step = trainer_eval_step(net, cfg, precision, use_compile)
    ctx = RunContext(cfg, device, out, rank == 0, world, log, net, data, split, precision, use_compile, use_graphs,
                     gradients, step, eval_step, checkpoint.Writer())
    return ctx, progress


def starting_point(cfg: Config, device: torch.device, net, precision: Precision, train_batches: DeviceBatches,
                   saved: dict | None, out: Path) -> Progress:
    """The run before its first step: the seeded init and an empty history, or the saved run's (restore)."""
    params, state = members.init(net, cfg, device)
    schedule = make_schedule(cfg)
    torch.manual_seed(cfg.seed)  # torch's global generators: anything random outside the loader's generator
    momentum = init_state(cfg.optimizer, params, cfg.members)  # the optimizer's state, in the params' layout
    ema = init_ema(params, state, cfg.ema)  # empty when cfg.ema is 0
    progress = Progress(TrainState(params, state, momentum, ema), schedule, epoch=0, step=0,
                        sums=EpochSums.empty(device, cfg.members), best=members.no_best(cfg.members),
                        train_seconds=0.0,
                        kept="no checkpoint was written yet", stopped=[None] * cfg.members if cfg.members > 1 else [])
    if saved is not None:
        restore(progress, saved, cfg, device, train_batches, out / "last.pt")
    progress.ts = TrainState(*(to_memory_format(tree, precision) for tree in progress.ts))  # 4-d: conv weights
    return progress


def restore(progress: Progress, saved: dict, cfg: Config, device: torch.device, train_batches: DeviceBatches,
            where: Path) -> None:
    """Everything of the saved run into `progress`, the loader's generator and torch's global generators; the
    saved tensors must fit the fresh ones (CheckpointError)."""
    for key, expected in zip(TrainState._fields, progress.ts):  # params, state, momentum, ema
        checkpoint.check_fits(where, saved[key], expected)
    progress.ts = TrainState(*({k: v.to(device) for k, v in saved[key].items()} for key in TrainState._fields))
    train_batches.generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if device.type == "cuda" and len(saved["cuda_rng"]):
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    progress.schedule = load_schedule(cfg, saved["schedule"])
    progress.best, progress.train_seconds = dict(saved["best"]), saved["train_seconds"]
    progress.compile_seconds = saved["compile_seconds"]
    progress.stopped = list(saved["stopped"]) or progress.stopped
    progress.epoch, progress.step = saved["epoch"], saved["step"]
    if progress.step:  # the stopped epoch's partial sums, so its metrics line is the uninterrupted one
        progress.sums = EpochSums(list(saved["epoch_losses"].to(device)), saved["epoch_correct"].to(device),
                                  saved["epoch_seconds"])
    position = f"epoch {progress.epoch + 1}, after step {progress.step}" if progress.step else \
        f"after epoch {progress.epoch}"
    progress.kept = f"the last good checkpoint, {where} ({position}), is kept"


def start_run_dir(ctx: RunContext, progress: Progress, command: str = "") -> RunContext:
    """Rank 0 writes config.json (after removing the old run's files, with overwrite=true), cuts metrics.jsonl
    back to the epochs completed and starts train.log (a fresh run's empty; `command` its next line); the
    run's header lines. Returns ctx logging to train.log too."""
    cfg, out = ctx.cfg, ctx.out
    if ctx.main:
        if cfg.overwrite:  # here, not when claiming: a run that fails before its first file keeps the old one
            out_dir.start_afresh(out)
        (out / "config.json").write_text(cfg.to_json() + "\n")
        keep_metrics_until(out / "metrics.jsonl", progress.epoch)  # a fresh run: empty
        ctx = ctx._replace(log=out_dir.logged_to_file(out, ctx.log, fresh=not cfg.resume, command=command))
    split, data = ctx.split, ctx.data
    ranks = f" x {ctx.world} ranks ({len(split.train.images)} train each)" if ctx.world > 1 else ""
    ctx.log(f"{ctx.net.name}: {ctx.net.param_count():,} params | {cfg.dataset} ({data.source}): "
            f"{len(split.train_idx)} train, {len(split.val_idx)} val, {len(data.test_labels)} test | "
            f"{ctx.device.type}{ranks}, {'bf16' if ctx.precision.autocast else 'fp32'}, compile={ctx.use_compile}, "
            f"cudagraphs={ctx.use_graphs}, gradients={ctx.gradients} | run dir {out}")
    if cfg.ema:
        ctx.log(f"weights averaged (ema={cfg.ema} per step): validation, the best checkpoint and the test use the "
                f"EMA weights")
    if cfg.resume:
        ctx.log(f"resuming from {out / 'last.pt'} at epoch {progress.epoch + 1}, step {progress.step + 1}")
    return ctx


# --- warm-up (compile) ------------------------------------------------------------------------------------


def graphs_for(cfg: Config, use_compile: bool, device: torch.device, world: int) -> bool:
    """Whether the step runs as CUDA graphs. They need compile, CUDA and one process (the gradient all-reduce
    and sync BN's collectives stay outside graphs); cudagraphs=true outside those conditions is an error."""
    possible = use_compile and device.type == "cuda" and world == 1
    if cfg.cudagraphs == "true" and not possible:
        raise ConfigError("cudagraphs=true needs compile on, a CUDA device and one process; "
                          "use cudagraphs=auto or false")
    return cfg.cudagraphs == "true" or (cfg.cudagraphs == "auto" and possible)


def compile_steps(ctx: RunContext, ts: TrainState) -> float:
    """Compiles outside the timed epochs (with compile on); returns the seconds it took, 0 without compile."""
    compile_seconds = 0.0
    if ctx.use_compile:  # warm_up leaves ts as it found it
        before = compile_cache.cache_counts()
        with compile_cache.heartbeat(ctx.log, "compiling"):
            key = members.step_keys(ctx.cfg, ctx.device, torch.zeros(1, dtype=torch.long))[0]  # as keys[i] will be
            compile_seconds = warm_up(ctx.step, ctx.eval_step, ts, ctx.split, key)
        ctx.log(f"compiled in {compile_seconds:.1f} s ({compile_cache.describe(before, compile_cache.cache_counts())})")
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()  # the warm-up's activations, back to the driver for other processes on the GPU
    return compile_seconds


def warm_up(step, eval_step, ts: TrainState, split: DeviceSplit, key: torch.Tensor) -> float:
    """Seconds to compile every graph the run will call: the train step, and the eval step at each batch
    shape of the evaluation sets. Calls on the first training images (not augmented), at lr 0; ts is then
    restored (the CUDA-graph step writes its state in place, and at lr 0 the momentum and BatchNorm statistics
    still move), so nothing of the run changes."""
    device = split.train.images.device
    t0 = time.perf_counter()
    kept = TrainState(*({k: v.detach().clone() for k, v in tree.items()} for tree in ts))
    batch = split.train.example()
    zero_lr = torch.zeros(1, device=device)[0]  # a 0-dim view, as the epochs pass lrs[i]
    # Twice: the second call sees the step's own outputs, whose layouts (strides) a first call may not have had;
    # the eval step is then warmed on those outputs, the tensors it will see after every epoch.
    warm_ts, _ = step(step(ts, batch, zero_lr, key)[0], batch, zero_lr, key)
    # One call per distinct batch shape compiles every graph (one, as the trainer pads partial batches).
    shapes = {x.shape: (x, y) for batches in (split.val, split.test) for x, y in batches}
    for x, y in shapes.values():  # on the weights evaluated after each epoch (the EMA's, with ema > 0)
        eval_step(*eval_weights(*warm_ts[:2], warm_ts.ema), x, y)
    copy_into(ts, kept)
    _sync(device)
    return time.perf_counter() - t0


# --- one epoch ----------------------------------------------------------------------------------------------


def train_epoch(ctx: RunContext, progress: Progress, stop: StopRequests, host) -> torch.Tensor:
    """Epoch progress.epoch + 1's steps from progress.step on (a stopped epoch resumes there: the loader replays
    from the epoch's start state and the steps already taken are drawn and dropped), summed into
    progress.sums; returns the epoch's lrs. A stop request ends it at the next step boundary (stop_here)."""
    epoch_generator = ctx.split.train.generator.get_state()  # on resume, the saved state: the epoch replays
    steps = len(ctx.split.train)
    lrs = torch.tensor(progress.schedule.lrs(progress.epoch, steps), device=ctx.device)
    keys = members.step_keys(ctx.cfg, ctx.device, progress.epoch * steps + torch.arange(steps))
    first, sums = progress.step, progress.sums
    bar = tqdm(total=steps, initial=first, desc=f"epoch {progress.epoch + 1}/{ctx.cfg.epochs}", leave=False,
               disable=not (ctx.cfg.progress and sys.stderr.isatty()))
    _sync(ctx.device)
    t0 = time.perf_counter()
    for i, batch in enumerate(ctx.split.train):
        if i < first:
            continue  # drawn and dropped: the loader's random stream reaches step `first`
        # A safe point: after a step, before the next; every rank stops at the same one.
        if distributed.any_rank(stop.signum is not None, host):
            add_seconds(ctx, progress, t0)
            bar.close()
            progress.step = i
            stop_here(ctx, progress, epoch_generator, stop)
        progress.ts, m = ctx.step(progress.ts, batch, lrs[i], keys[i])
        sums.losses.append(m["loss"])
        sums.correct += m["correct"]
        bar.update()
    add_seconds(ctx, progress, t0)
    bar.close()
    return lrs


def add_seconds(ctx: RunContext, progress: Progress, t0: float) -> None:
    """The seconds since t0 (after a device sync) to the epoch's and the run's training time."""
    _sync(ctx.device)
    elapsed = time.perf_counter() - t0
    progress.sums.seconds, progress.train_seconds = progress.sums.seconds + elapsed, progress.train_seconds + elapsed


def stop_here(ctx: RunContext, progress: Progress, epoch_generator: torch.Tensor, stop: StopRequests) -> NoReturn:
    """Stops inside an epoch, before its step progress.step: last.pt then resumes at that step (unless the run
    diverged, which keeps the last good checkpoint)."""
    sums, steps = progress.sums, len(ctx.split.train)
    stacked = {"loss": torch.stack(sums.losses)} if sums.losses else {}  # none yet when stopped at its first step
    losses = {k: v[..., members.alive(progress.stopped)] if progress.stopped else v for k, v in stacked.items()}
    if not all_finite(losses, members.alive_view(progress.ts.params, progress.stopped)):
        raise diverged(ctx, progress, f"the loss or parameters became non-finite in epoch {progress.epoch + 1} "
                                      f"(found when stopping at step {progress.step} of {steps})")
    if ctx.main:
        ctx.checkpoints.save(ctx.out / "last.pt", payload(ctx, progress, epoch_generator, sums))
    signum = stop.signum or signal.SIGTERM  # a rank that did not see it stops as the others
    raise TrainingInterrupted(f"{signal.Signals(signum).name}: stopped in epoch {progress.epoch + 1} after step "
                              f"{progress.step} of {steps} and saved {ctx.out / 'last.pt'}", signum)


# --- evaluation and checkpoint -------------------------------------------------------------------------


def end_of_epoch(ctx: RunContext, progress: Progress, lrs: torch.Tensor, writer) -> None:
    """After an epoch's last step: its metrics line (all ranks' steps, rank 0's validation), the schedule's and
    the best epoch's update, best.pt and last.pt, one log line."""
    record = epoch_record(ctx, progress, lrs)
    write_record(ctx, record, writer)
    improved = observe(ctx, progress, record)
    progress.epoch, progress.step, progress.sums = progress.epoch + 1, 0, EpochSums.empty(ctx.device,
                                                                                          ctx.cfg.members)
    save_checkpoint(ctx, progress, improved)
    ctx.log(f"epoch {record['epoch']:3d}/{ctx.cfg.epochs}  train loss {record['train_loss']:.4f} top1 "
            f"{record['train_top1']:5.2f}  val loss {record['val_loss']:.4f} top1 {record['val_top1']:5.2f} top5 "
            f"{record['val_top5']:5.2f}  lr {record['lr']:.4g}  {record['seconds']:5.1f} s  "
            f"{record['images_per_s']:,.0f} img/s" + members.log_words(record) + ("  *" if improved else ""))


def epoch_record(ctx: RunContext, progress: Progress, lrs: torch.Tensor) -> dict:
    """The epoch's metrics.jsonl line, after checking that the loss and the parameters are finite. Per-step
    losses and top-1 hits of all ranks (one collective each per epoch): every rank then sees the same numbers
    and takes the same decisions."""
    epoch, steps, world, ts = progress.epoch + 1, len(ctx.split.train), ctx.world, progress.ts
    losses = collectives.all_reduce_sum(torch.stack(progress.sums.losses)) / world
    correct = collectives.all_reduce_sum(progress.sums.correct)
    if ctx.cfg.members > 1:  # a member that diverged alone stops alone (train/members.py)
        members.stop_diverged(progress.stopped, losses, ts.params, ctx.cfg.member_seeds(), epoch, ctx.log)
    live = members.alive(progress.stopped)
    finite = torch.isfinite(losses[:, live] if progress.stopped else losses)
    if not finite.all():
        bad, *member = (~finite).nonzero()[0].tolist()  # (step,) or (step, member still training)
        which = f" of member {live[member[0]]} (seed {ctx.cfg.member_seeds()[live[member[0]]]})" if member else ""
        raise diverged(ctx, progress, f"loss{which} became {losses[bad].flatten()[live[member[0]] if member else 0]}"
                                      f" at epoch {epoch}, step {bad + 1} of {steps}")
    if not all_finite(members.alive_view(ts.params, progress.stopped), members.alive_view(ts.state, progress.stopped)):
        raise diverged(ctx, progress, f"parameters became non-finite at epoch {epoch}, step {steps} of {steps}")
    seen, seconds = steps * ctx.cfg.batch_size * world, progress.sums.seconds
    # Rank 0's BatchNorm statistics, evaluated and saved; the EMA's too (its params are the same on every rank).
    params, state = eval_weights(ts.params, ts.state, ts.ema)  # the EMA's entries with ema > 0
    distributed.broadcast_tree_(ts.state)
    distributed.broadcast_tree_(state if ts.ema else {})
    # Rank 0 evaluates; its numbers drive every rank's schedule, so the lrs stay the same everywhere.
    val = distributed.from_main(evaluate(ctx.eval_step, params, state, ctx.split.val, progress.stopped)
                                if ctx.main else None)
    record = {
        "epoch": epoch, "train_loss": losses.mean(0).tolist(),
        "train_top1": members.per_member(lambda c: 100 * c / seen, correct.tolist()),
        "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
        "lr": lrs[-1].item(), "seconds": seconds, "images_per_s": seen * ctx.cfg.members / seconds,
        **{k: v for k, v in val.items() if k.startswith("ensemble_")},  # a members run's
    }
    return members.summarised(record, progress.stopped) if ctx.cfg.members > 1 else record


def write_record(ctx: RunContext, record: dict, writer) -> None:
    """The epoch's line appended to metrics.jsonl (rank 0), its scalars to TensorBoard (when installed)."""
    if ctx.main:
        with (ctx.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, tag in TENSORBOARD_TAGS.items():
            writer.add_scalar(tag, record[key], record["epoch"])
        writer.flush()


def observe(ctx: RunContext, progress: Progress, record: dict) -> bool:
    """The schedule sees the epoch's error; whether the epoch is the new best (then progress.best names it).
    Without a validation split the training error drives the schedule and the last epoch is kept."""
    with_val = bool(ctx.split.val_idx.size)
    val_key = "ensemble_val_top1" if ctx.cfg.members > 1 else "val_top1"  # a members run keeps its ensemble's best
    progress.schedule.observe(100 - (record[val_key] if with_val else record["train_top1"]))
    improved = record[val_key] > progress.best["val_top1"] if with_val else True
    if improved:
        progress.best = {**progress.best, "val_top1": record[val_key], "epoch": record["epoch"]}
    if ctx.cfg.members > 1:
        progress.best["members_val_top1"] = members.best_so_far(progress.best["members_val_top1"], record)
    return improved


def save_checkpoint(ctx: RunContext, progress: Progress, improved: bool) -> None:
    """last.pt at the epoch boundary progress.epoch, best.pt too when the epoch improved (rank 0 writes).
    best.pt before last.pt: a crash between the two leaves last.pt at the previous epoch, whose replay writes
    this best.pt again, never a last.pt whose "best" names a best.pt not written."""
    if ctx.main:
        at_boundary = EpochSums([], torch.zeros((), dtype=torch.long), 0.0)  # no partial epoch (on the CPU)
        ckpt = payload(ctx, progress, ctx.split.train.generator.get_state(), at_boundary)
        ctx.checkpoints.save([ctx.out / "best.pt", ctx.out / "last.pt"] if improved else [ctx.out / "last.pt"], ckpt)
    progress.kept = f"the last good checkpoint, {ctx.out / 'last.pt'} (after epoch {progress.epoch}), is kept"


def payload(ctx: RunContext, progress: Progress, epoch_generator: torch.Tensor, sums: EpochSums) -> dict:
    """Everything needed to continue after progress.step steps of epoch index progress.epoch, whose sums so far
    are `sums` and whose loader starts from `epoch_generator` (see the module doc)."""
    ts, device, split = progress.ts, ctx.device, ctx.split
    return {  # train.resume.CHECKPOINT_KEYS, in that order
        "params": ts.params, "state": ts.state, "momentum": ts.momentum, "ema": ts.ema, "epoch": progress.epoch,
        "step": progress.step, "generator": epoch_generator, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.zeros(0),
        "epoch_losses": torch.stack(sums.losses) if sums.losses else torch.zeros(0), "epoch_correct": sums.correct,
        "epoch_seconds": sums.seconds, "schedule": progress.schedule.state_dict(), "best": dict(progress.best),
        "config": ctx.cfg.to_json(), "model": ctx.cfg.model, "device_type": device.type,
        "classes": list(ctx.data.classes), "mean": split.train.mean, "std": split.train.std,
        "train_idx": torch.from_numpy(split.train_idx), "val_idx": torch.from_numpy(split.val_idx),
        "data_sha256": split.digest, "train_seconds": progress.train_seconds, "stopped": list(progress.stopped),
        "compile_seconds": progress.compile_seconds,
    }


# --- the final test -----------------------------------------------------------------------------------------


def final_test(ctx: RunContext, progress: Progress) -> dict:
    """The best-validation checkpoint, evaluated once on the test set: rank 0 writes results.json and every
    rank returns its dict."""
    if not ctx.main:
        return distributed.from_main(None)
    cfg, best, best_path = ctx.cfg, progress.best, ctx.out / "best.pt"
    best_saved = with_added_keys(checkpoint.load(best_path, map_location=ctx.device))
    if best_saved["epoch"] != best["epoch"]:
        raise checkpoint.CheckpointError(f"{best_path} holds epoch {best_saved['epoch']} but the run's best "
                                         f"validation epoch is {best['epoch']}; was it replaced?")
    params, state = eval_weights(best_saved["params"], best_saved["state"], best_saved["ema"])  # EMA's with ema > 0
    test = evaluate(ctx.eval_step, to_memory_format(params, ctx.precision), state, ctx.split.test, progress.stopped)
    weights = "ema" if best_saved["ema"] else "raw"
    results = {
        "model": cfg.model, "dataset": cfg.dataset, "test_top1": test["top1"], "test_top5": test["top5"],
        "test_loss": test["loss"], "best_val_top1": best["val_top1"] if ctx.split.val_idx.size else None,
        "best_epoch": best["epoch"], "epochs_run": cfg.epochs, "train_seconds": progress.train_seconds,
        "compile_seconds": progress.compile_seconds, "params": ctx.net.param_count(), "recipe": cfg.recipe,
        "tta": cfg.tta, "weights": weights,
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        "torch": torch.__version__, "data_source": ctx.data.source,
    }
    if cfg.members > 1:  # the ensemble's scores above; each member's, their mean and spread beside them
        results = members.results(results, test, best, cfg, progress.train_seconds, len(ctx.split.train),
                                  progress.stopped)
    (ctx.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    averaged = ", EMA weights" if weights == "ema" else ""
    ctx.log(f"test (best val epoch {best['epoch']}{averaged}): top1 {results['test_top1']:.2f}  top5 "
            f"{results['test_top5']:.2f}{members.test_words(results)}  | {progress.train_seconds:.1f} s training, "
            f"{progress.compile_seconds:.1f} s compiling")
    return distributed.from_main(results)


# --- helpers -------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(eval_step, params, state, batches: DeviceBatches, stopped: list = ()) -> dict[str, float]:
    """Mean loss and top-1/top-5 accuracy (percent) over all batches, one device sync at the end; a members
    run's per member, and its ensemble's over the members not `stopped`."""
    totals, n = None, 0
    for x, y in batches:
        m, logits = eval_step(params, state, x, y)
        if stopped:
            m = {**m, **members.ensemble_scores(logits, y, stopped)}
        totals = m if totals is None else {k: totals[k] + m[k] for k in m}
        n += len(y)
    if n == 0:
        return {"loss": math.nan, "top1": math.nan, "top5": math.nan}
    # A float per quantity, or a members run's list of one per member (and the ensemble's floats).
    return {k: members.per_member((lambda x: x / n) if k.endswith("loss") else (lambda x: 100 * x / n), v.tolist())
            for k, v in totals.items()}


def divergence_hint(cfg: Config) -> str:
    """What to try after a NaN: a lower lr; for a ViT on SGD (lr 0.2 at batch 512 diverged on the H100, see
    docs/results.md), recipe=fast, which gives the ViTs AdamW."""
    if cfg.model.startswith("vit") and cfg.optimizer == "sgd":
        return "try a lower lr, or recipe=fast (AdamW for the ViTs)"
    return "try a lower lr"


def diverged(ctx: RunContext, progress: Progress, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"{what}; stopped: {progress.kept}; {divergence_hint(ctx.cfg)}")


def tensorboard_writer(log_dir: Path, purge_step: int | None, log):
    """A SummaryWriter into `log_dir`, or None (with one log line) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without the tensorboard package
    except ImportError:
        log("tensorboard is not installed: no tensorboard/ logs (pip install 'cifar-zoo[tensorboard]')")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
