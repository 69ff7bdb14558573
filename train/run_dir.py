"""A run directory as the tools read it: its configuration, one of its checkpoints, and the net they make.

    load_run(run, checkpoint="best", device="cpu") -> LoadedRun    config.json + a checkpoint + the net
    LoadedRun.logits(images_u8, tta)                                eval-mode fp32 logits, the run's TTA or another
    LoadedRun.module()                                              a plain nn.Module holding the weights
    test_set(loaded, data, log)                                     the run's test split, checked
    parse_args(argv, keys, repeated)                                the tools' key=value words

The net is built from the run's config.json (model, dataset, labels, net.* options); the checkpoint
(`best`, `last`, or a path to any checkpoint) must fit it. Checkpoints are read through train.checkpoint,
so a damaged or crafted file is refused before anything in it is used. Normalisation uses the mean and std
saved in the checkpoint (the training split's, in 0..255 pixel units). The test-time augmentation is, unless a
tool is given tta=, the run's own (config.json's tta; the default recipe's is flip), so a tool scores the test
set as results.json does. The weights are those the trainer evaluated (train.step.eval_weights): the EMA of the
params and BatchNorm statistics for a run trained with ema > 0 (LoadedRun.weights "ema"), else the params and
statistics themselves ("raw"). A members run (members=K, train/members.py) gives one member (`member=<k>`) or,
by default, the ensemble: its logits are the log of the members' mean probability, each member's after its own
TTA average, as the trainer scores it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import nets
from data import DataError, DatasetMixUp, normalise
from data.cifar import NUM_CLASSES, TITLES
from nets import Net
from train import checkpoint as ckpt
from train.config import Config, from_json
from train.members import Ensemble, alive, alive_view, ensemble_log_probs
from train.resume import with_added_keys
from train.step import TTA, eval_weights, tta_averaged
from train.step import member as member_of


class ToolError(ValueError):
    """A bad argument to a tool, or a run directory it cannot use."""


@dataclass(frozen=True)
class LoadedRun:
    run: Path
    cfg: Config
    checkpoint: Path
    epoch: int  # epochs the checkpoint had completed
    net: Net
    params: dict[str, torch.Tensor]  # the EMA's with weights == "ema"
    state: dict[str, torch.Tensor]
    mean: torch.Tensor  # (3, 32, 32), 0..255 pixel units, on `device`
    std: torch.Tensor
    classes: tuple[str, ...]
    device: torch.device
    weights: str = "raw"  # "ema": the checkpoint's EMA of params and statistics (a run with ema > 0)
    members: int = 1  # > 1: params and state are a members run's, stacked, and the logits their ensemble's
    member: str = ""  # of a members run's one member (member=<k>, or the one left): which, for describe()

    def tta_for(self, tta: str = "") -> str:
        """The views a tool evaluates: `tta` ("none", "flip" or "translate"), or "" for the run's own."""
        return checked_tta(tta) or self.cfg.tta

    def logits(self, images_u8: torch.Tensor, tta: str = "", batch_size: int = 1024) -> torch.Tensor:
        """float32 (N, K) eval-mode logits of uint8 images (N, 3, 32, 32), `batch_size` at a time, with the
        views of tta_for(tta): for "flip" or "translate", the log of the probabilities averaged over its views
        (train.step.tta_averaged, the trainer's rule)."""
        tta = self.tta_for(tta)
        out = []
        trees = [(self.params, self.state)] if self.members == 1 else \
            [(member_of(self.params, k), member_of(self.state, k)) for k in range(self.members)]
        with torch.no_grad():
            for start in range(0, len(images_u8), batch_size):
                x = normalise(images_u8[start:start + batch_size].to(self.device), self.mean, self.std)
                # Mirrored and translated after normalising, as the training augmentation does.
                each = [tta_averaged(lambda v, p=p, s=s: self.net.apply(p, s, v, train=False)[0].float(), x, tta)
                        for p, s in trees]
                out.append((each[0] if len(each) == 1 else ensemble_log_probs(torch.stack(each).log_softmax(-1)))
                           .cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def describe(self) -> str:
        """The checkpoint's epoch and, for a run trained with ema > 0, that its weights are the EMA's; of a members
        run, the ensemble's size or the one member: a log line's "epoch 12", "epoch 12, EMA weights", "epoch 12,
        ensemble of 4 members" or "epoch 12, member 2 (seed 2)"."""
        return f"epoch {self.epoch}" + (", EMA weights" if self.weights == "ema" else "") + \
            (f", ensemble of {self.members} members" if self.members > 1 else "") + (self.member and f", {self.member}")

    def module(self) -> nn.Module:
        """The net's nn.Module (CPU, eval mode) holding this checkpoint's params and BatchNorm statistics; for
        the ensemble of a members run, one module of all members returning the log of their mean probability
        (train.members.Ensemble)."""
        if self.members > 1:
            return Ensemble([self.member_module(member_of(self.params, k), member_of(self.state, k))
                             for k in range(self.members)]).eval()
        return self.member_module(self.params, self.state)

    def member_module(self, params, state) -> nn.Module:
        module = copy.deepcopy(self.net.module).to_empty(device="cpu")
        module.load_state_dict({k: v.cpu() for k, v in {**params, **state}.items()})
        return module.eval()


def parse_args(argv: list[str], keys: dict[str, str | None], repeated: str | None = None) -> dict:
    """`key=value` words -> {key: text}; keys with default None are required. The key named `repeated` takes
    a list: `images=a.png b.png` (words without "=" after it are more values)."""
    values: dict = {}
    last = None
    for word in argv:
        key, sep, text = word.partition("=")
        if not sep and repeated is not None and last == repeated:
            values[repeated].append(word)
            continue
        if not sep or not key:
            raise ToolError(f"expected key=value, got {word!r}")
        if key not in keys:
            raise ToolError(f"unknown key {key!r}; valid keys: {', '.join(keys)}")
        values[key] = [text] if key == repeated else text
        last = key
    if repeated is not None and repeated in values:
        values[repeated] = [v for v in values[repeated] if v]  # `images=` with nothing after it: none
    for key, default in keys.items():
        if default is None and not values.get(key):
            raise ToolError(f"{key}=<...> is required (keys: {', '.join(keys)})")
        values.setdefault(key, default)
    return values


def positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ToolError(f"{key}={text!r} is not a valid int") from None
    if value < 1:
        raise ToolError(f"{key} must be positive, got {value}")
    return value


def checkpoint_path(run: Path, which: str) -> Path:
    """best | last -> that file of the run; anything else is a path to a checkpoint."""
    if which in ("best", "last"):
        return run / f"{which}.pt"
    if not Path(which).is_file():
        raise ToolError(f"checkpoint={which}: no such file; use best, last or the path of a checkpoint")
    return Path(which)


def member_index(text: str, members: int) -> int | None:
    """member= of a tool: "" or "ensemble" -> None (all of a members run; the net itself for a single run), or
    an index below `members`."""
    if text in ("", "ensemble"):
        return None
    try:
        k = int(text)
    except ValueError:
        raise ToolError(f"member={text!r} is not a member index or 'ensemble'") from None
    if not 0 <= k < members:
        raise ToolError(f"member={k}: the run has {members} member{'s' * (members > 1)} (0..{members - 1})")
    return k


def load_run(run: str | Path, checkpoint: str = "best", device: str = "cpu", member: str = "") -> LoadedRun:
    from train.loop import resolve_device  # here: the loop imports the trainer's machinery, tools rarely need it

    run = Path(run)
    if not run.is_dir():
        raise ToolError(f"run={run}: no such run directory (the out= of a training run)")
    config_file = run / "config.json"
    if not config_file.is_file():
        raise ToolError(f"{run} has no config.json, so it is not a run directory (make train OUT={run} makes one)")
    cfg = from_json(config_file.read_text(), str(config_file))
    torch_device = resolve_device(device)
    path = checkpoint_path(run, checkpoint)
    saved = with_added_keys(ckpt.load(path, map_location=torch_device))
    ckpt.require(path, saved, ("params", "state", "epoch", "classes", "mean", "std"))
    index = member_index(member, cfg.members)
    net = nets.build(cfg.model, num_classes=NUM_CLASSES[(cfg.dataset, cfg.labels)], **cfg.net)
    params, buffers = dict(net.module.named_parameters()), dict(net.module.named_buffers())  # (meta) shapes
    if cfg.members > 1:  # stacked: a leading member dimension
        params, buffers = ({k: v.expand(cfg.members, *v.shape) for k, v in tree.items()} for tree in (params, buffers))
    ckpt.check_fits(path, saved["params"], params)
    ckpt.check_fits(path, saved["state"], buffers)
    if saved["ema"]:
        ckpt.check_fits(path, saved["ema"], {**params, **buffers})
    classes = tuple(saved["classes"])
    if len(classes) != net.num_classes:
        raise ckpt.CheckpointError(f"{path} names {len(classes)} classes but the run's net has {net.num_classes}")
    weights = eval_weights(saved["params"], saved["state"], saved["ema"])  # the EMA's, when the run kept one
    # The ensemble is that of the members that had not stopped alone (train/members.py); where one is left, it is
    # that member's net, unstacked, as member=<k> gives it.
    live = alive(saved["stopped"]) if saved["stopped"] else list(range(cfg.members))
    one = None  # the member whose net this is, unstacked; None: a single run's net or the ensemble
    if cfg.members > 1:
        one = live[0] if index is None and len(live) == 1 else index
    if one is not None:
        weights = tuple(member_of(tree, one) for tree in weights)
    elif cfg.members > 1:
        weights = tuple(alive_view(tree, saved["stopped"]) for tree in weights)
    which = "" if one is None else f"member {one} (seed {cfg.member_seeds()[one]})" + \
        (", the one that did not stop" if index is None else "")
    return LoadedRun(run, cfg, path, saved["epoch"], net, *weights, saved["mean"], saved["std"], classes, torch_device,
                     "ema" if saved["ema"] else "raw", 1 if one is not None else len(live), which)


def checked_tta(tta: str) -> str:
    """A tool's tta= word, "" (the run's own) or one of TTA; anything else is a ToolError."""
    if tta and tta not in TTA:
        raise ToolError(f"tta={tta!r} is not one of: {', '.join(TTA)}; leave it out for the run's own")
    return tta


def test_set(loaded: LoadedRun, data: str = "", log=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images uint8 (N, 3, 32, 32) and labels int64 (N,) of the run's dataset, read from `data`
    (default: the run's data=, never downloaded); its class names must be the checkpoint's. `log` hears what a
    first decode of an image folder reports (data/progress.py)."""
    from train.device_data import load_data

    cfg = dataclasses.replace(loaded.cfg, data=data or loaded.cfg.data, download=False)
    try:
        found = load_data(cfg, log)
    except DatasetMixUp as e:  # its dataset= hint is the trainer's; a tool takes the run's dataset
        raise DataError(f"{e.where} {e.holds}, but the run trained on {run_dataset(cfg)}: point data=<path> at a "
                        f"{TITLES[cfg.dataset]} copy") from None
    if tuple(found.classes) != loaded.classes:
        raise DataError(f"the data at {cfg.data} has classes {list(found.classes)[:4]}..., not the run's "
                        f"{list(loaded.classes)[:4]}...; point data=<path> at the run's dataset")
    return torch.from_numpy(found.test_images), torch.from_numpy(found.test_labels)


def run_dataset(cfg: Config) -> str:
    """The run's dataset as messages name it: "CIFAR-10 (10 classes)", "CIFAR-100 with labels=coarse (20 classes)"."""
    labels = f" with labels={cfg.labels}" if cfg.dataset == "cifar100" else ""
    return f"{TITLES[cfg.dataset]}{labels} ({NUM_CLASSES[(cfg.dataset, cfg.labels)]} classes)"


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of rows whose label is among the k largest logits (k capped at the class count)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (N, k)
    return 100 * (top == labels[:, None]).any(dim=1).float().mean().item()
