"""The pure training and evaluation steps.

    step(train_state, (x, y), lr) -> (train_state, metrics)

`train_state` bundles params, BatchNorm state and momentum buffers; nothing is changed in place, so the step
can be compiled once with torch.compile and re-run, and a warm-up call on a copy changes nothing. Gradients
come from torch.func.grad_and_value over the net's pure forward.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from train.optim import Tree, decay_rule, sgd


class TrainState(NamedTuple):
    params: Tree
    state: Tree  # BatchNorm running statistics
    momentum: Tree  # SGD momentum buffers, one per parameter


@dataclass(frozen=True)
class Precision:
    """How the trainer runs a net on a device: autocast dtype (None = fp32) and memory format."""

    autocast: torch.dtype | None
    channels_last: bool
    device_type: str

    def context(self):
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def precision_for(device: torch.device, precision: str) -> Precision:
    """bf16 autocast and channels_last on CUDA (tensor cores want NHWC); fp32 NCHW on the CPU."""
    on_cuda = device.type == "cuda"
    use_bf16 = precision == "bf16" or (precision == "auto" and on_cuda)
    return Precision(torch.bfloat16 if use_bf16 else None, on_cuda, device.type)


def to_memory_format(params: Tree, precision: Precision) -> Tree:
    """Conv weights in channels_last when activations are, so convolutions need no layout conversion."""
    if not precision.channels_last:
        return params
    return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in params.items()}


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their label among the k largest logits (k capped at the class count)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (B, k)
    return (top == y[:, None]).any(dim=1).sum()


def make_train_step(net, cfg, precision: Precision):
    decays = decay_rule(cfg.decay_all)

    def loss_fn(params, bn_state, x, y):
        with precision.context():
            logits, new_state = net.apply(params, bn_state, precision.prepare(x), train=True)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        return loss, (new_state, logits.detach())

    grad_and_loss = torch.func.grad_and_value(loss_fn, has_aux=True)

    def step(ts: TrainState, batch, lr: torch.Tensor):
        x, y = batch
        grads, (loss, (new_state, logits)) = grad_and_loss(ts.params, ts.state, x, y)
        params, momentum = sgd(
            ts.params, grads, ts.momentum, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, decays
        )
        metrics = {"loss": loss.detach(), "correct": topk_correct(logits, y, 1)}
        return TrainState(params, new_state, momentum), metrics

    return step


def make_eval_step(net, precision: Precision):
    """(params, state, x, y) -> summed loss, top-1 and top-5 hits, and logits, for a batch in eval mode."""

    def evaluate(params, bn_state, x, y):
        with torch.no_grad(), precision.context():
            logits, _ = net.apply(params, bn_state, precision.prepare(x), train=False)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        return {"loss": loss, "top1": topk_correct(logits, y, 1), "top5": topk_correct(logits, y, 5)}, logits

    return evaluate


def maybe_compile(fn, enabled: bool):
    # dynamic=False: one graph per input shape. Training batches all have one shape (drop_last), evaluation
    # has at most two (full and last partial batch): each compiles once, never again in later epochs.
    return torch.compile(fn, dynamic=False) if enabled else fn
