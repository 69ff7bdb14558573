"""K members of a net folded into one net K times as wide, for a members run (train/members.py) with no vmap.

Member k's channels are the k-th block of every layer's channels: the images (K, B, C, H, W) become
(B, K * C, H, W) (`fold_images`); a convolution with `groups` becomes one with K * groups over K times the
channels, whose weight is the members' stacked weights (K, O, C / groups, h, w) viewed as (K * O, ...); a
BatchNorm over C channels becomes one over K * C, whose statistics are per channel, hence per member; a Linear
becomes `FoldedLinear`, a batched product over the members' (K, O, I) weights; ReLU and pooling act per channel
as they are. So the forward is exactly the K members' forwards, with the same parameter trees (the stacked ones
of train/members.py, checkpoints unchanged), and the gradient of the members' summed losses is each member's
own gradient.

Why not vmap: under vmap a convolution of K members also runs as one grouped convolution, but the traced graph
keeps each member's activations apart, (K, B, C, H, W), so every convolution copies its input and output to
and from the grouped layout; folded, the activations stay (B, K * C, H, W) channels_last from end to end (a
compiled ResNet-18 step at K = 8 ran at 0.62 of K = 1's images/s under vmap: `python -m bench members`,
docs/benchmarks.md).

A net folds when every module is a layer that acts per channel once folded (the LEAVES below) or a block whose
own forward only combines such layers with elementwise ops and `flatten(1)` before a Linear (which keeps each
member's features together): such classes say so with a class attribute `folds_members = True`. Not folded:
concatenation along channels (GoogLeNet's Inception mixes the members' blocks), LayerNorm and attention (the
ViTs), and random layers in use (dropout, stochastic depth with p > 0: their masks are drawn per member).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from nets import blocks
from nets.core import Net, Tree, swap_layers

# Layers that act per channel (or are the identity) once the channels are folded; containers whose forward is
# a chain of their children.
LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
          nn.Identity, nn.Sequential, nn.ModuleList, blocks.Dropout, blocks.DropPath)


def foldable(net: Net) -> bool:
    """Whether `Folded(net, k)` computes the members exactly (the module docstring's rule)."""
    for m in net.module.modules():
        if isinstance(m, (blocks.Dropout, blocks.DropPath)) and m.p > 0:
            return False
        if isinstance(m, nn.BatchNorm2d) and (m.momentum is None or not m.track_running_stats):
            return False
        if not isinstance(m, LEAVES) and not getattr(type(m), "folds_members", False):
            return False
    return True


class FoldedLinear(nn.Module):
    """K Linear layers (I -> O) as one: (..., K * I) -> (..., K * O), weight (K, O, I) and bias (K, O), the
    members' stacked nn.Linear parameters as they are."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.k, self.in_features = k, in_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...ki,koi->...ko", x.unflatten(-1, (self.k, self.in_features)), self.weight)
        return (y if self.bias is None else y + self.bias).flatten(-2)


def fold_layer(m: nn.Module, k: int) -> nn.Module | None:
    """The K-member layer for `m`, or None where `m` folds as it is."""
    if isinstance(m, blocks.DepthwiseConv2d):
        return blocks.DepthwiseConv2d(k * m.in_channels, m.kernel_size[0], m.stride[0], m.kernels)
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                         k * m.groups, m.bias is not None, m.padding_mode)
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.Linear):
        return FoldedLinear(k, m.in_features, m.out_features, m.bias is not None)
    return None


def fold_module(module: nn.Module, k: int) -> nn.Module:
    """A copy of `module` (a skeleton on the meta device) with every layer replaced by its K-member layer."""
    def folded(m: nn.Module) -> nn.Module | None:
        new = fold_layer(m, k)
        return None if new is None else new.train(m.training)

    with torch.device("meta"):
        return swap_layers(copy.deepcopy(module), folded)


def fold_images(x: torch.Tensor) -> torch.Tensor:
    """The members' images (K, B, C, H, W) as one batch (B, K * C, H, W), member k's channels the k-th block."""
    return x.movedim(0, 1).flatten(1, 2)


class Folded:
    """K members of `net` as one net: `apply(params, state, x, train)` takes the stacked trees (leading K) and
    folded images (fold_images) and returns the members' logits (K, B, classes) and their new stacked state."""

    def __init__(self, net: Net, k: int):
        if not foldable(net):
            raise ValueError(f"{net.name} does not fold into {k} members (nets/fold.py says which nets do)")
        self.k = k
        self.skeletons = {mode: fold_module(s, k) for mode, s in net.skeletons.items()}
        module = self.skeletons[True]
        self.shapes = {**{n: p.shape for n, p in module.named_parameters()},
                       **{n: b.shape for n, b in module.named_buffers()}}
        # BatchNorm's step counters: one per member in the stacked state, one for the folded layer, which only
        # counts (with a momentum, the statistics never read it): the new count is the old one plus 1.
        self.counters = [n for n in self.shapes if n.endswith("num_batches_tracked")]

    def apply(self, params: Tree, state: Tree, x: torch.Tensor, train: bool) -> tuple[torch.Tensor, Tree]:
        if train:
            state = {n: v.clone() for n, v in state.items()}  # BatchNorm writes its statistics into these
        tree = {n: p.reshape(self.shapes[n]) for n, p in params.items()}
        # view, not reshape: BatchNorm's in-place update of a folded statistic must land in the stacked one.
        tree.update({n: v.view(self.shapes[n]) for n, v in state.items() if n not in self.counters})
        tree.update({n: state[n][0].clone() for n in self.counters})
        logits = functional_call(self.skeletons[train], tree, (x,), strict=True)
        if train:
            state.update({n: state[n] + 1 for n in self.counters})
        return logits.unflatten(1, (self.k, -1)).movedim(1, 0), state
