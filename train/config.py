"""The run configuration: one frozen dataclass, recipe presets, and the `key=value` parser of the command line.

Precedence: the dataclass defaults, then the recipe (`recipe=<name>`, default `fast`: RECIPES, then its settings
for the chosen model, RECIPE_BY_MODEL), then every explicit `key=value`, which wins over all of them. Net options
travel as `net.<option>=<value>` (e.g. `net.width=32`).

The dataclass defaults are the plain trainer, not a recipe: SGD with every addition off (no cutout, mixing,
RandAugment, label smoothing, weight averaging or TTA). A key added later keeps its default when an older run's
config.json is loaded, so its default must be what older runs did: off. `fast` lists what it changes from the
plain trainer; `seed` spells out every key of the seed README's recipe, so it does not depend on the defaults
matching it. Config.recipe names the preset parse applies by default; a Config built directly applies none.

Resuming (`resume=true`): the run directory's saved configuration replaces the defaults and the recipe, so
`out=<run dir> resume=true` alone continues a run; explicit keys still win, and the trainer refuses any that
differs from the saved run unless it is in RESUMABLE. A new run into a directory that holds a run is refused
unless `overwrite=true` (train/out_dir.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import nets
from data.loader import MIXES
from data.randaugment import MAGNITUDE_BINS
from train.optim import OPTIMIZERS
from train.schedule import SCHEDULES
from train.step import TTA


class ConfigError(ValueError):
    """A bad key or value on the command line."""


@dataclass(frozen=True)
class Config:
    # What to train, on what.
    model: str = "resnet18"
    dataset: str = "cifar10"  # cifar10 | cifar100
    data: str = ".data"  # a directory (official pickles or train/ test/ class folders) or an archive of one
    download: bool = True  # fetch the official files through torchvision when `data` holds none
    labels: str = "fine"  # cifar100 only: fine (100 classes) | coarse (20 superclasses)
    out: str = ""  # run directory; "" -> runs/<model>-<dataset>; one that holds a run needs resume= or overwrite=
    net: dict[str, Any] = field(default_factory=dict)  # options of the net's builder (`net.width=32`)
    recipe: str = "fast"  # fast | speedrun | seed: the preset parse applies before the explicit keys (RECIPES)
    # What to train with (the plain trainer's values; the recipe sets most of them).
    epochs: int = 200
    batch_size: int = 256  # images per SGD step
    lr: float = 0.1  # peak learning rate, per step of `batch_size` images
    optimizer: str = "sgd"  # sgd | adamw (then momentum is beta1, and weight decay is decoupled, as AdamW's)
    momentum: float = 0.9
    nesterov: bool = False  # sgd only
    beta2: float = 0.999  # adamw: decay of the second-moment average
    weight_decay: float = 5e-4  # sgd: L2 coefficient added to the gradient, as torch.optim.SGD does; adamw: decoupled
    decay_all: bool = True  # true: every tensor decays (torch.optim.SGD); false: only weights with ndim >= 2
    label_smoothing: float = 0.0
    schedule: str = "plateau"  # plateau: lr / 10 when val error stalls | onecycle: linear warm-up, linear decay
    #                            to 0 | cosine: linear warm-up, cosine decay to 0 (train.schedule.OneCycle)
    patience: int = 10  # plateau: epochs without a val-error improvement before dividing the lr
    lr_factor: float = 0.1  # plateau: lr multiplier at each plateau (the seed's "divided by 10")
    min_lr: float = 1e-5  # plateau: the lr is never reduced below this
    warmup_fraction: float = 0.2  # onecycle, cosine: share of all steps spent rising from 0 to lr
    val_fraction: float = 0.1  # share of each class held out for validation: 45k/5k on the full set
    normalisation: str = "pixel"  # pixel: per-pixel mean/std of the training split | channel: per channel
    cutout: int = 0  # side (pixels) of a random square zeroed in each training image after crop+flip; 0: off
    randaugment: int = 0  # RandAugment ops per training image, before crop+flip (Cubuk et al. 2020); 0: off
    randaugment_magnitude: int = 9  # RandAugment's magnitude bin, 0..30 (torchvision's 31 bins)
    mix: str = "none"  # none | mixup | cutmix: mix each training batch with a permutation of itself, soft labels
    ema: float = 0.0  # decay per optimizer step of an exponential moving average of the params and BatchNorm
    #                   statistics, in [0, 1) (e.g. 0.999: about 1 / (1 - 0.999) = 1000 steps); validation, the best
    #                   checkpoint, the test and the tools then use the averaged weights; 0: off
    tta: str = "none"  # none | flip | translate: evaluate each image alone, with its mirror image (2 views), or
    #                    with both also translated by 2 pixels each way (6 views), averaging the softmax outputs
    #                    (train.step.tta_views); true/false, the older spelling, mean flip/none
    sync_bn: bool = False  # several ranks: BatchNorm statistics over all ranks' images (default: per rank)
    seed: int = 0  # seeds the split, the init, the shuffling and the augmentation
    split_seed: int = -1  # seeds the train/val split alone when >= 0 (-1: `seed` does); a seed sweep's runs can
    #                       then share one validation set, as the members of one run do
    members: int = 1  # K copies of the net trained together in one step, seeds seed, seed + 1, ...
    #                   (member_seeds), sharing the split of `split_seed` (or `seed`); train/members.py
    members_form: str = "auto"  # how the step computes them (train.step.members_form): fold (one net K times as
    #                             wide, nets/fold.py) | unroll (the single run's step, compiled once, for each
    #                             member in turn) | vmap | auto (fold for nets that fold and are narrow, else
    #                             unroll: train.step.auto_members_form)
    # Machinery (the trainer owns device, precision and memory format; nets never choose them).
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # auto (= on CUDA) | true | false: torch.compile around the whole step
    cudagraphs: str = "auto"  # auto (= when compiled on one GPU) | true | false: the compiled step replayed as a
    #                           CUDA graph, its state written in place (train.step.compile_in_place)
    precision: str = "auto"  # auto (= bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    cudnn_benchmark: bool = True  # CUDA: cuDNN times its algorithms for each new convolution shape at its first
    #                               call and keeps the fastest (torch.backends.cudnn.benchmark); false: its heuristics
    inductor_autotune: bool = False  # compiled: Inductor times several configurations of each kernel it writes
    #                                  and keeps the fastest (true), or builds its heuristics' one (false: a
    #                                  shorter cold compile, as fast a step; train.step.choose_kernel_tuning)
    eval_batch_size: int = 1024  # images per evaluation batch (no gradients, so larger)
    progress: bool = True  # a progress bar on a terminal (never in logs; one summary line per epoch always)
    resume: bool = False  # continue the run in `out` from its last.pt (the keys below RESUMABLE may change)
    overwrite: bool = False  # a new run into an `out` that holds a run: remove that run's files and start afresh

    def member_seeds(self) -> list[int]:
        """Each member's seed for its init, data order, augmentation and random layers: seed, seed + 1, ...; member
        k is the single run `seed=<seed + k> split_seed=<the split's seed>`."""
        return [self.seed + k for k in range(self.members)]

    def seed_of_split(self) -> int:
        return self.seed if self.split_seed < 0 else self.split_seed

    def run_dir(self) -> str:
        return self.out or f"runs/{self.model}-{self.dataset}"

    def to_json(self) -> str:
        """The keys, and with several members their seeds (DERIVED: written for the reader, recomputed on load)."""
        keys = dataclasses.asdict(self)
        if self.members > 1:
            keys["member_seeds"] = self.member_seeds()
        return json.dumps(keys, indent=2, sort_keys=True)


# Presets applied by `recipe=`.
# "fast", the default, trains in a fixed number of epochs: one-cycle lr (linear up over the first 20% of steps,
#   linear down to 0; Smith & Topin 2017), so no epochs are spent waiting for a plateau; batch 512 with lr 0.2 (the
#   seed's 0.1 per 256, scaled linearly: Goyal et al. 2017); Nesterov momentum; no weight decay on biases and BN
#   scales; label smoothing 0.1 (Szegedy et al. 2016); cutout (DeVries & Taylor 2017); flip test-time
#   augmentation. These values come from the literature, not from a search. Then RECIPE_BY_MODEL, where each
#   family's best measured settings are.
# "seed" is the seed README's recipe, the same for every family: a 45k/5k train/validation split, pad-4 random
#   crop and horizontal flip only, per-pixel mean/std normalisation from the training split, SGD lr 0.1, momentum
#   0.9, weight decay 5e-4 on every tensor, batch 256, 200 epochs, lr / 10 when the validation error plateaus
#   (after `patience` epochs without an improvement, down to `min_lr`), the best-validation checkpoint kept (as
#   every recipe keeps it).
RECIPES: dict[str, dict[str, Any]] = {
    "fast": {"epochs": 40, "batch_size": 512, "lr": 0.2, "nesterov": True, "decay_all": False,
             "label_smoothing": 0.1, "schedule": "onecycle", "cutout": 8, "tta": "flip"},
    "seed": {"val_fraction": 0.1, "normalisation": "pixel", "cutout": 0, "randaugment": 0, "mix": "none",
             "label_smoothing": 0.0, "tta": "none", "ema": 0.0, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
             "nesterov": False, "weight_decay": 5e-4, "decay_all": True, "batch_size": 256, "epochs": 200,
             "schedule": "plateau", "lr_factor": 0.1, "patience": 10, "min_lr": 1e-5},
}
# "speedrun": a fixed short run, chosen for ResNet-18 on the validation split of CIFAR-10 (JPEG copy) among twelve
#   38-epoch variants of "fast" with mix=none, then four combinations of the best of them (docs/training.md,
#   "Speed run"): 38 epochs (38 x 0.60 s, under 24 s of training on an H100; an H200's 24 s hold epochs=43 of
#   0.54 s, the README's speed run), lr 0.4, cutout 12, an EMA of the weights (0.99 per step, about 1.1 epochs
#   at batch 512), translate TTA. Best validation top-1 92.52, over
#   92.34 (cutout 8), 92.32 (lr 0.2), 92.30 (cosine decay) and 91.76 (fast's flip TTA, cutout 8, lr 0.2, no EMA).
#   Other families take the same settings, unmeasured; the ViTs keep their AdamW (SGD at lr 0.4 diverges there).
RECIPES["speedrun"] = {**RECIPES["fast"], "epochs": 38, "lr": 0.4, "mix": "none", "cutout": 12, "ema": 0.99,
                       "tta": "translate"}
# A recipe's settings for one family, on top of RECIPES (explicit keys still win). "fast": each family's
# settings are those of its README accuracy row, chosen on the validation split among the runs that
# docs/results.md reports (best validation top-1; the test set chose nothing); families not listed keep 40 epochs.
#   VGG-16, ResNet-18, GoogLeNet: cutmix (Yun et al. 2019) in place of cutout. VGG-16 250 epochs: val 93.24,
#     over 92.58 (200, cutmix) and 91.90 (200, cutout); ResNet-18 200: 93.94, over 93.14 (150, cutout);
#     GoogLeNet 120: 93.82, over 92.86 (80, cutout).
#   MobileNetV1 200 epochs (val 91.00; 120: 90.22), Xception 100 (92.94; 25: 88.66), AlexNet 60 (89.56).
#   The ViT: AdamW (lr 1e-3, decoupled weight decay 0.05: Dosovitskiy et al. 2021, Touvron et al. 2021), cutmix
#     on top of cutout, RandAugment (2 ops, magnitude 9: Cubuk et al. 2020, as DeiT trains) and stochastic depth
#     0.1 (net.drop_path; Huang et al. 2016, DeiT's rate), 300 epochs: val 90.58, over 90.10 (the same without
#     stochastic depth), 87.04 (neither, 350 epochs), 86.36 (neither, 200), 81.16 (AdamW, 150 epochs, no
#     mixing) and 73.72 (SGD lr 0.05, 80 epochs; lr 0.2 diverged). The other ViT sizes, not run here, take the
#     same settings.
_CUTMIX = {"mix": "cutmix", "cutout": 0}
_VIT = {"optimizer": "adamw", "nesterov": False, "lr": 1e-3, "weight_decay": 0.05, "mix": "cutmix",
        "randaugment": 2, "net": {"drop_path": 0.1}}
RECIPE_BY_MODEL: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {
        "alexnet": {"epochs": 60},
        "vgg16": {"epochs": 250, **_CUTMIX},
        "resnet18": {"epochs": 200, **_CUTMIX},
        "googlenet": {"epochs": 120, **_CUTMIX},
        "mobilenetv1": {"epochs": 200},
        "xception": {"epochs": 100},
        "vit": {"epochs": 300, **_VIT},
        **{name: _VIT for name in ("vit_tiny", "vit_small", "vit_base")},
    },
    "speedrun": {name: {k: v for k, v in _VIT.items() if k != "mix"}
                 for name in ("vit", "vit_tiny", "vit_small", "vit_base")},
}

CHOICES = {
    "dataset": ("cifar10", "cifar100"),
    "optimizer": OPTIMIZERS,
    "labels": ("fine", "coarse"),
    "schedule": SCHEDULES,
    "normalisation": ("pixel", "channel"),
    "mix": MIXES,
    "tta": TTA,
    "device": ("auto", "cpu", "cuda"),
    "compile": ("auto", "true", "false"),
    "cudagraphs": ("auto", "true", "false"),
    "precision": ("auto", "fp32", "bf16"),
    "members_form": ("auto", "fold", "unroll", "vmap"),
}
# Keys that may differ from the saved run on resume=true (train/resume.py checks the conditions):
#   epochs                   how far to train; with schedule=plateau only (the others' lr curves span all epochs)
#   data, download, out      where things are; the data's digest must still match the saved one
#   progress, compile,       machinery that does not change what is computed (compile and the evaluation batch
#   eval_batch_size, device, change float rounding only; cudnn_benchmark picks among algorithms for the same
#   cudnn_benchmark,         convolution, cudagraphs replays the same kernels, inductor_autotune picks among
#   cudagraphs,              configurations of the same kernels); device may be respelled (auto for cuda) but must
#   inductor_autotune        resolve to the same kind, as the loader's random stream lives on the device
#   members_form             the same members computed another way (float rounding only)
#   resume, overwrite        what this command does with the run directory, not what the run computes
RESUMABLE = ("epochs", "progress", "device", "compile", "eval_batch_size", "data", "download", "out", "resume",
             "cudnn_benchmark", "cudagraphs", "overwrite", "members_form", "inductor_autotune")
# Keys of one command, not of the run: a resumed run takes them from the words or the defaults, never from its
# saved configuration (a run started with overwrite=true resumes without replacing itself).
PER_COMMAND = ("resume", "overwrite")
# Keys that older versions saved and this one no longer has: from_json drops them, so those runs still load and
# resume. gpu_lock and gpu_slots ordered runs that shared a GPU; they never changed what a run computed.
RETIRED = ("gpu_lock", "gpu_slots")
DERIVED = ("member_seeds",)  # written by to_json for the reader, dropped by from_json
# tta was a bool before it had more than one kind: its words (and their JSON values) still mean flip or none.
TTA_BOOLEANS = {"true": "flip", "1": "flip", "yes": "flip", "false": "none", "0": "none", "no": "none"}
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "lr", "members")
NON_NEGATIVE = ("momentum", "weight_decay", "label_smoothing", "patience", "min_lr", "cutout", "randaugment")
FRACTIONS = ("val_fraction", "warmup_fraction", "lr_factor", "label_smoothing", "beta2")


def _coerce(key: str, text: str, kind: type) -> Any:
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a valid {kind.__name__}") from None


def parse(argv: list[str], base: Config | None = None) -> Config:
    """`key=value` words -> Config, checked. Raises ConfigError (NetError for the model or a net. option) with a
    one-line reason.

    `base` (a resumed run's saved configuration) replaces the defaults and the recipe; the words win over it,
    `net.` options key by key."""
    fields = {f.name: f for f in dataclasses.fields(Config) if f.name != "net"}
    values: dict[str, Any] = {}
    net: dict[str, Any] = {}
    for word in argv:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {word!r} (e.g. epochs=30)")
        if key.startswith("net."):
            net[key[4:]] = text  # typed below, by the net's declaration of the option
        elif key == "tta":
            values[key] = TTA_BOOLEANS.get(text.lower(), text)
        elif key in fields:
            kind = {"int": int, "float": float, "bool": bool, "str": str}[str(fields[key].type)]
            values[key] = _coerce(key, text, kind)
        else:
            raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(fields)}, net.<option>")
    if base is not None:
        per_command = {key: getattr(Config, key) for key in PER_COMMAND}
        cfg = dataclasses.replace(base, **{**per_command, **values}, net={**base.net, **net})
    else:
        recipe = values.get("recipe", Config.recipe)
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
        model = values.get("model", Config.model)
        preset = {**RECIPES[recipe], **RECIPE_BY_MODEL.get(recipe, {}).get(model, {})}
        cfg = Config(**{**preset, **values, "net": {**preset.get("net", {}), **net}})  # net. words win key by key
    check(cfg)
    # The words' net options, typed and checked by the net's own declarations (NetError), so config.json holds
    # typed values. An option the model does not declare is left for nets.build to refuse: with resume=true and
    # no base, cfg.model is not yet the saved run's.
    return dataclasses.replace(cfg, net={**cfg.net, **nets.parse_options(cfg.model, net)})


def from_json(text: str, where: str) -> Config:
    """The Config saved as `text` (Config.to_json) in `where`; keys added since then take their defaults,
    RETIRED keys are dropped, and a boolean tta (the older spelling) becomes flip or none."""
    try:
        saved = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"{where}: not a saved configuration ({getattr(e, 'msg', e)})") from None
    names = {f.name for f in dataclasses.fields(Config)}
    if isinstance(saved, dict):
        saved = {k: v for k, v in saved.items() if k not in RETIRED + DERIVED}
        if isinstance(saved.get("tta"), bool):
            saved["tta"] = TTA_BOOLEANS[str(saved["tta"]).lower()]
    if not isinstance(saved, dict) or set(saved) - names:
        unknown = sorted(set(saved) - names) if isinstance(saved, dict) else "not a JSON object"
        raise ConfigError(f"{where}: not a configuration of this version (unknown keys: {unknown})")
    cfg = Config(**saved)
    try:
        check(cfg)
    except (ConfigError, TypeError) as e:  # TypeError: a value of the wrong type compared with a number
        raise ConfigError(f"{where}: the saved configuration is invalid ({e})") from None
    return cfg


def resume_differences(cfg: Config, saved: Config) -> list[str]:
    """`key=value` of every key of `cfg` that differs from the saved run's and may not change on resume."""
    now, then = dataclasses.asdict(cfg), dataclasses.asdict(saved)
    return [f"{k}={now[k]!r} (saved: {then[k]!r})" for k in now if k not in RESUMABLE and now[k] != then[k]]


def check(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is not one of: {', '.join(allowed)}")
    for key in POSITIVE:
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key} must be positive, got {getattr(cfg, key)}")
    for key in NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must not be negative, got {getattr(cfg, key)}")
    for key in FRACTIONS:
        if not 0 <= getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be in [0, 1), got {getattr(cfg, key)}")
    if not 0 <= cfg.ema < 1:
        raise ConfigError(f"ema must be in [0, 1) (a decay per step, e.g. 0.999; 0: off), got {cfg.ema}")
    if not 0 <= cfg.randaugment_magnitude < MAGNITUDE_BINS:
        raise ConfigError(f"randaugment_magnitude must be in 0..{MAGNITUDE_BINS - 1}, got {cfg.randaugment_magnitude}")
    if cfg.optimizer == "adamw" and (cfg.nesterov or not cfg.momentum < 1):
        raise ConfigError("optimizer=adamw takes no nesterov and needs momentum (its beta1) below 1, got "
                          f"nesterov={cfg.nesterov} momentum={cfg.momentum} (the default recipe, fast, sets "
                          "nesterov=true for every model but the ViT: add nesterov=false)")
    if cfg.labels == "coarse" and cfg.dataset != "cifar100":
        raise ConfigError("labels=coarse exists only for dataset=cifar100")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume=true continues the run in out= and overwrite=true replaces it; choose one")
