"""Synchronised BatchNorm (sync_bn=true): in train mode every rank normalises with the statistics of all ranks'
images, so N ranks with batch B compute what one process with batch N x B does, BatchNorm included.

Per channel c, each rank sums its own batch (over images and pixels), one all-reduce adds the ranks' sums,

    local = [sum x, sum x^2, count]                      # 2C + 1 numbers, float32 (x may be bf16)
    total = all_reduce_sum(local)                         # the same on every rank
    mean  = total_x / n,   var = total_x2 / n - mean^2    # n = total count; var biased, as BN normalises

and the layer continues as nn.BatchNorm2d does: y = (x - mean) / sqrt(var + eps) * weight + bias, and in place
running_mean <- (1 - m) running_mean + m mean, running_var <- (1 - m) running_var + m var * n / (n - 1),
num_batches_tracked += 1 (momentum m; None: the cumulative average, 1 / num_batches_tracked). Eval mode is
nn.BatchNorm's, unchanged. The statistics, and therefore the running buffers, are the same on every rank.

The gradient: autograd differentiates the lines above; the all-reduce is the one step it cannot see through. Its
output, `total`, feeds the loss of every rank, so the gradient of the summed loss with respect to rank r's
`local` is the sum over ranks of each rank's gradient with respect to `total`: the backward of an all-reduce-sum
is an all-reduce-sum of the incoming gradients (collectives.AllReduceSum). Each rank's parameter gradient then holds
its own images' share of the cross-rank terms, and the gradient average that follows (distributed.py) completes
the large-batch gradient. Cost: one all-reduce of 2C + 1 numbers per BN layer per step in the forward pass and
one in the backward pass, each waited for (latency, not bandwidth: a ResNet-18 has 20 BN layers).

(The arithmetic is nets.blocks.batch_norm_from_sums, given all_reduce_sum.) E[x^2] - E[x]^2 in float32 loses
digits when a channel's mean is large against its spread (about 1e-7 x mean^2 / var, relative); BN inputs are
conv outputs of modest mean, and detectron2's NaiveSyncBatchNorm makes the same trade for a single small
all-reduce. The all-gather of per-rank (mean, var, count) that nn.SyncBatchNorm
combines with Welford's rule would avoid it at N times the message size.

Why not nn.SyncBatchNorm: in torch 2.14 its forward raises "SyncBatchNorm expected input tensor to be on GPU"
for CPU tensors once a process group exists (so gloo tests cannot run it), and its torch.autograd.Function
(torch/nn/modules/_functions.py) has the old forward(ctx, ...) signature without setup_context, which
torch.func.grad_and_value refuses. torch.distributed.nn.functional.all_reduce has the same old signature.
"""

from __future__ import annotations

import torch
from torch import nn

from nets.blocks import batch_norm_from_sums
from nets.core import Net, swap_layers
from train.collectives import all_reduce_sum

# collectives.all_reduce_sum is kept out of torch.compile's graphs, as all_reduce_mean_ is: the compiled step
# breaks around each BN layer's collective and the collectives run eagerly. Checked on the CPU (2 gloo ranks,
# inductor): compiled steps equal eager ones in both gradient forms, but with gradients="func" dynamo cannot
# break a graph inside torch.func.grad_and_value, so the gradient is then computed eagerly (one graph was
# compiled, the SGD update's); with "autograd" (which the trainer picks with sync_bn) the pieces between BN
# layers compile. Not yet timed on several GPUs.


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """nn.BatchNorm1d/2d/3d with train-mode statistics over all ranks (the module doc); the same parameters,
    buffers and state_dict names, so checkpoints load into either. Takes (B, C, ...) inputs."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)  # the running statistics (or, without them, this rank's batch)
        self._check_input_dim(x)
        return batch_norm_from_sums(self, x, all_reduce_sum)


def synchronise_batchnorm(net: Net) -> Net:
    """Swap every BatchNorm layer in `net`'s skeletons (train and eval) for SyncBatchNorm, in place, keeping
    names, hyperparameters and (meta) tensors, so params, state and checkpoints are unchanged. Returns `net`."""
    def synchronised(m: nn.Module) -> SyncBatchNorm | None:
        plain = isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, SyncBatchNorm)
        return _synchronised(m) if plain else None

    for skeleton in net.skeletons.values():  # Net keeps one skeleton per mode; both must agree
        swap_layers(skeleton, synchronised)
    return net


def _synchronised(bn: nn.modules.batchnorm._BatchNorm) -> SyncBatchNorm:
    sync = SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
    # The very tensors (meta on a skeleton), None included (BatchNorm's bias=False option, which torch 2.11 lacks
    # as a constructor argument), so that nothing about them changes but the forward.
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(sync, name, getattr(bn, name))
    return sync.train(bn.training)
