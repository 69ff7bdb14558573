"""Learning-rate schedules, as small state machines the trainer checkpoints.

`lrs(epoch, steps)` gives the learning rate of every step of an epoch; `observe(val_error)` is called once an
epoch has been evaluated (the plateau rule reads it, the others ignore it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass
class Plateau:
    """The seed's rule: divide the lr by 10 when the validation error stops improving.

    Same decisions as torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min", threshold_mode="rel",
    cooldown=0): an epoch improves when error < best * (1 - threshold); after `patience` epochs in a row
    without improvement the lr is multiplied by `factor` (not below `min_lr`) and the count restarts.
    """

    lr: float
    patience: int
    factor: float = 0.1
    min_lr: float = 0.0
    threshold: float = 1e-4  # relative improvement that counts (torch's default)
    best: float = float("inf")
    bad_epochs: int = 0

    def lrs(self, epoch: int, steps: int) -> list[float]:
        return [self.lr] * steps

    def observe(self, val_error: float) -> None:
        if val_error < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = val_error, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            # torch ignores reductions smaller than eps = 1e-8.
            if self.lr - new_lr > 1e-8:
                self.lr = new_lr
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)


# The decay's shapes after the warm-up, as the share of the peak lr left at a fraction u in [0, 1] of the decay.
#   linear  1 - u: Smith & Topin 2017's one-cycle, as fast speed runs use it
#   cosine  (1 + cos(pi u)) / 2: Loshchilov & Hutter 2017, longer near the peak and slower to leave 0 at the end
DECAYS = {"linear": lambda u: 1.0 - u, "cosine": lambda u: 0.5 * (1.0 + math.cos(math.pi * u))}


@dataclass
class OneCycle:
    """A fixed-length schedule: linear warm-up from 0 to `peak` over `warmup_fraction` of all steps, then a decay
    of shape `decay` (DECAYS) to 0 at the last step."""

    peak: float
    epochs: int
    warmup_fraction: float
    decay: str = "linear"  # older runs saved no decay: theirs was linear

    def lrs(self, epoch: int, steps: int) -> list[float]:
        total = self.epochs * steps
        warm = max(1, round(self.warmup_fraction * total))
        shape = DECAYS[self.decay]
        out = []
        for i in range(epoch * steps, (epoch + 1) * steps):
            t = i + 1  # the lr of step i is reached at its end, so step 0 is not wasted at lr 0
            u = min(1.0, (t - warm) / (total - warm)) if total > warm else 1.0
            out.append(self.peak * (t / warm if t <= warm else max(0.0, shape(u))))
        return out

    def observe(self, val_error: float) -> None:
        pass

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)


# schedule= names: plateau adapts to the validation error; the others are OneCycle, fixed in length.
FIXED_LENGTH = {"onecycle": "linear", "cosine": "cosine"}
SCHEDULES = ("plateau", *FIXED_LENGTH)


def make_schedule(cfg) -> Plateau | OneCycle:
    if cfg.schedule == "plateau":
        return Plateau(lr=cfg.lr, patience=cfg.patience, factor=cfg.lr_factor, min_lr=cfg.min_lr)
    return OneCycle(peak=cfg.lr, epochs=cfg.epochs, warmup_fraction=cfg.warmup_fraction,
                    decay=FIXED_LENGTH[cfg.schedule])


def load_schedule(cfg, saved: dict) -> Plateau | OneCycle:
    return type(make_schedule(cfg))(**saved)
