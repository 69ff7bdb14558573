"""Several members of one net trained together: K copies, each with its own seed, in one step.

A members run (`members=K`, K > 1) holds every tensor of the train state stacked along a new leading dimension
of size K: params, BatchNorm statistics, the optimizer's state and the EMA. How the step computes the K is
members_form's (train.step.members_form; auto: the measured best per net, train.step.auto_members_form):
"fold" and "vmap" compute all K in one compiled graph, one CUDA graph, the nets that fold as one net K times
as wide (nets/fold.py), or the per-member gradient mapped over that dimension by torch.func.vmap, the
optimizer's update and the EMA elementwise on the stacked tensors as they are (train/optim.py,
member_dims=1); "unroll" runs the single run's step, compiled once, for each member in turn on its views of
the stacked tensors (train.step.member_by_member). Member k draws its init, its data order and its
augmentation from seed + k (Config.member_seeds), and all members share the train/val split of
`split_seed` (or `seed`); member k is therefore the single run `seed=<seed + k> split_seed=<that seed>`, step
for step, up to floating-point reassociation (tests/test_members.py).

Evaluation scores each member and the ensemble: the mean of the members' probabilities (after each member's own
TTA average), the usual way to combine the members of a deep ensemble (Lakshminarayanan et al. 2017).

A member whose loss or weights stop being finite is stopped alone: the epoch's check names it in the log and in
the checkpoints ("stopped": a note per member, None while it trains); it goes on through the step (its NaNs
stay in its own slice: every form keeps members apart, BatchNorm included), but the ensemble, the means and the best
checkpoint's choice leave it out from then on. The run stops only when every member has.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

import nets
from data import DeviceBatches
from data.cifar import NUM_CLASSES
from nets import blocks
from nets.fold import foldable
from train.config import ConfigError
from train.step import members_form, scores, stack

Tree = dict[str, torch.Tensor]


def step_keys(cfg, device: torch.device, steps: torch.Tensor) -> torch.Tensor:
    """The random keys of the given global steps (n,), one per member ((n, K) in a members run): each member's
    dropout and stochastic depth draw from its own seed's stream (nets.step_key), the same on every rank, so
    member k draws what the single run of its seed draws."""
    seeds = torch.tensor(cfg.member_seeds() if cfg.members > 1 else cfg.seed)
    return nets.step_key(seeds, steps[:, None] if cfg.members > 1 else steps).to(device)


def init(net, cfg, device) -> tuple[Tree, Tree]:
    """The run's fresh (params, state): the net's init from `seed`, or each member's from its own seed, stacked."""
    inits = [net.init(torch.Generator().manual_seed(seed), device) for seed in cfg.member_seeds()]
    return inits[0] if cfg.members == 1 else (stack([t[0] for t in inits]), stack([t[1] for t in inits]))


class GeneratorGroup:
    """The members' loader generators seen as one: get_state stacks their states, set_state deals a stacked state
    out again, so a checkpoint saves and restores all of them as it does one."""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators

    def get_state(self) -> torch.Tensor:
        return torch.stack([g.get_state() for g in self.generators])

    def set_state(self, state: torch.Tensor) -> None:
        if len(state) != len(self.generators):
            raise ValueError(f"a state of {len(state)} members' generators for {len(self.generators)} members")
        for g, s in zip(self.generators, state):
            g.set_state(s.clone())  # a row of the stack is a view at an offset, which set_state misreads


class MemberBatches:
    """K training loaders over the same device-resident images, each shuffling and augmenting with its own
    generator; each step yields their K batches stacked: x (K, B, C, H, W), y (K, B) or soft (K, B, classes).
    Quacks as the DeviceBatches the loop reads (len, iteration, generator, example, mean, std, images)."""

    def __init__(self, loaders: list[DeviceBatches]):
        self.loaders = loaders
        first = loaders[0]
        self.images, self.labels, self.mean, self.std = first.images, first.labels, first.mean, first.std
        self.batch_size = first.batch_size
        self.generator = GeneratorGroup([b.generator for b in loaders])

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders):
            yield tuple(torch.stack(parts) for parts in zip(*batches))

    def example(self):
        return tuple(torch.stack(parts) for parts in zip(*(b.example() for b in self.loaders)))


def ensemble_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """(K, B, classes) members' log-probabilities -> (B, classes) log of their mean probability."""
    return log_probs.logsumexp(0) - math.log(len(log_probs))


class Ensemble(nn.Module):
    """The members as one module: x -> the log of their mean probability (softmax of it: the ensemble's
    probabilities), what `export` writes for a members run."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_log_probs(torch.stack([m(x).float().log_softmax(-1) for m in self.members]))


# --- the trainer's bookkeeping for a members run -----------------------------------------------------------


def alive(stopped: list) -> list[int]:
    """The indices of the members still training (a single run's empty list names none: callers test `stopped`
    first)."""
    return [k for k, note in enumerate(stopped) if note is None]


def alive_view(tree: Tree, stopped: list) -> Tree:
    """A stacked tree's members still training (the tree itself for a single run)."""
    if not stopped:
        return tree
    index = torch.tensor(alive(stopped))
    return {k: v[index.to(v.device)] for k, v in tree.items()}


def stop_diverged(stopped: list, losses: torch.Tensor, params: Tree, seeds: list[int], epoch: int, log) -> None:
    """Marks the members whose epoch losses (steps, K) or params stopped being finite, unless that would stop
    every member still training (the run's own divergence check then stops the run, naming where)."""
    finite = torch.isfinite(losses).all(0)
    for t in params.values():
        finite &= torch.isfinite(t).reshape(len(t), -1).all(1)  # per member, whatever the tensor's own rank
    bad = [k for k in alive(stopped) if not finite[k]]
    if not bad or len(bad) == len(alive(stopped)):
        return
    for k in bad:
        step = int((~torch.isfinite(losses[:, k])).nonzero()[0]) + 1 if not torch.isfinite(losses[:, k]).all() \
            else losses.shape[0]
        stopped[k] = f"diverged at epoch {epoch}, step {step}"
        log(f"member {k} (seed {seeds[k]}) {stopped[k]}: it stops; the other {len(alive(stopped))} go on")


def ensemble_scores(log_probs: torch.Tensor, y: torch.Tensor, stopped: list) -> dict[str, torch.Tensor]:
    """The scores (train.step.scores) of the mean probability of the members still training, log_probs
    (K, B, classes) of every member, as "ensemble_loss", "ensemble_top1", "ensemble_top5"."""
    index = torch.tensor(alive(stopped), device=log_probs.device)
    combined = ensemble_log_probs(log_probs.index_select(0, index).log_softmax(-1))
    return {f"ensemble_{k}": v for k, v in scores(combined, y).items()}


def batchnorm_for_members(net) -> None:
    """The BatchNorm layers of both of the net's skeletons written out (nets.blocks.batch_norm_from_sums: float32
    statistics from per-channel sums, running statistics as torch's, the output in the input's dtype), for the
    vmapped members steps. Why not torch's batch_norm: under vmap its batching rule wants input, weight and
    running statistics in one dtype ("expected scalar type BFloat16 but found Float") while autocast leaves the
    float32 parameters as they are, and under torch.compile on CUDA its fake implementation clones a
    channels_last input with that memory format, which vmap refuses ("Tensor.clone(memory_format) inside vmap is
    only supported with ... preserve_format", torch 2.11 on an H100). Written out, it is reductions and
    elementwise ops, which vmap maps and Inductor fuses as it does its own decomposition of batch_norm; cuDNN's
    and Inductor's BatchNorm compute in float32 from a bf16 input too, so a member's numbers stay a single run's
    up to reassociation and the rounding of the output."""
    for skeleton in net.skeletons.values():
        for module in skeleton.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.momentum is None or not module.track_running_stats:
                    raise ValueError(f"members need BatchNorm with momentum and running statistics: {module}")
                module.forward = functools.partial(blocks.batch_norm_from_sums, module)


def build_net(cfg, device: torch.device, log) -> nets.Net:
    """The run's net. A members run's on a GPU takes PyTorch's convolution and attention where the net would
    choose its Triton kernels (net.kernels=auto; the log says so), unless its members are unrolled
    (members_form=unroll: auto's choice for every net but the narrow ones that fold, MobileNetV1, Xception and
    the ViT included; train.step.auto_members_form), whose members run the kernels as single runs do.
    torch.compile cannot trace the kernels' gradients under vmap (the ViT's members), and folded members
    (nets/fold.py: MobileNetV1, Xception), whose depthwise layers the kernel could run over K times the
    channels (train.step's autograd form, tests/test_kernels_vmap.py), have not been checked with them on a
    GPU yet (docs/kernels.md). BatchNorm layers are written out in float32 for the vmapped steps
    (batchnorm_for_members)."""
    options = dict(cfg.net)
    classes = NUM_CLASSES[(cfg.dataset, cfg.labels)]
    net = nets.build(cfg.model, num_classes=classes, **options)
    if cfg.members > 1 and members_form(cfg, net) != "unroll" and device.type == "cuda" \
            and "kernels" in nets.options(cfg.model) and options.get("kernels", "auto") == "auto":
        log(f"members={cfg.members}: PyTorch's convolution and attention in place of the Triton kernels "
            "(docs/kernels.md, members)")
        net = nets.build(cfg.model, num_classes=classes, **{**options, "kernels": "reference"})
    batchnorm_where_vmapped(cfg, net)
    return net


def batchnorm_where_vmapped(cfg, net) -> None:
    """batchnorm_for_members where cfg's members step is vmapped (train.step.members_form); folded and unrolled
    members keep torch's BatchNorm, as single runs."""
    if cfg.members > 1 and members_form(cfg, net) == "vmap":
        batchnorm_for_members(net)


def check_supported(cfg, net, synced: bool, custom_kernels: bool) -> None:
    """What a members run cannot do yet, as one-line errors (ConfigError)."""
    if synced and members_form(cfg, net) != "unroll":
        raise ConfigError(f"members={cfg.members} trains with sync_bn=true only with members_form=unroll (its "
                          "BatchNorm collectives are a single run's, not a folded or vmapped net's); add "
                          "members_form=unroll or drop sync_bn=true")
    if cfg.members_form == "fold" and not foldable(net):
        raise ConfigError(f"members_form=fold: {cfg.model} does not fold into members (nets/fold.py says which "
                          "nets do); use members_form=unroll or vmap")
    if custom_kernels and members_form(cfg, net) == "vmap":
        raise ConfigError(f"members={cfg.members} of {cfg.model} cannot take the Triton kernels vmapped (torch.compile "
                          "cannot trace their gradients under vmap); use members_form=unroll or net.kernels=reference")


def per_member(f, value):
    """f of a float, or of each member's entry of a list."""
    return [f(v) for v in value] if isinstance(value, list) else f(value)


MEMBER_KEYS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5")


def summarised(record: dict, stopped: list) -> dict:
    """A members run's metrics.jsonl line: each quantity the mean of the members still training (the keys a
    single run's line has, so plots and tables read it alike), the ensemble's validation scores, and each
    member's under "members" (None for a stopped member)."""
    live = alive(stopped)
    each = {k: [v if i in live else None for i, v in enumerate(record[k])] for k in MEMBER_KEYS}
    means = {k: sum(record[k][i] for i in live) / len(live) for k in MEMBER_KEYS}
    ensemble = {f"ensemble_val_{k}": record.pop(f"ensemble_{k}") for k in ("loss", "top1", "top5")
                if f"ensemble_{k}" in record}
    return {**record, **means, **ensemble, "members": each}


def no_best(members: int) -> dict:
    best = {"val_top1": -1.0, "epoch": 0}
    return best if members == 1 else {**best, "members_val_top1": [-1.0] * members}


def best_so_far(best: list[float], record: dict) -> list[float]:
    return [b if v is None else max(b, v) for b, v in zip(best, record["members"]["val_top1"])]


def log_words(record: dict) -> str:
    return f"  ensemble val top1 {record['ensemble_val_top1']:5.2f}" if "ensemble_val_top1" in record else ""


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, var**0.5


def results(single: dict, test: dict, best: dict, cfg, train_seconds: float, steps_per_epoch: int,
            stopped: list) -> dict:
    """results.json of a members run: test_top1/top5/loss and best_val_top1 become the ensemble's (the best
    checkpoint is the epoch of the ensemble's best validation top-1); "members" lists each member's seed, test
    scores and own best validation top-1 (a stopped member: "stopped" and no test scores); "member_mean" and
    "member_std" summarise the members still training; images_per_s is the step's throughput summed over
    members."""
    each = [{"seed": seed, "test_top1": t1, "test_top5": t5, "test_loss": loss, "best_val_top1": v}
            if note is None else {"seed": seed, "stopped": note, "best_val_top1": v}
            for seed, t1, t5, loss, v, note in zip(cfg.member_seeds(), test["top1"], test["top5"], test["loss"],
                                                    best["members_val_top1"], stopped)]
    live = [m for m in each if "stopped" not in m]
    stats = {k: mean_std([m[k] for m in live]) for k in ("test_top1", "test_top5", "best_val_top1")}
    return {**single, "test_top1": test["ensemble_top1"], "test_top5": test["ensemble_top5"],
            "test_loss": test["ensemble_loss"], "members": each,
            "member_mean": {k: v[0] for k, v in stats.items()}, "member_std": {k: v[1] for k, v in stats.items()},
            "images_per_s": cfg.members * cfg.epochs * steps_per_epoch * cfg.batch_size / train_seconds
            if train_seconds else None}


def test_words(results: dict) -> str:
    if "members" not in results:
        return ""
    mean, std = results["member_mean"]["test_top1"], results["member_std"]["test_top1"]
    live = sum("stopped" not in m for m in results["members"])
    return f" (ensemble of {live}; members {mean:.2f} +- {std:.2f})"
