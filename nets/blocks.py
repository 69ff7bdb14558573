"""Building blocks shared by several families, written once.

    conv_bn_relu(cin, cout, k, stride)   Conv2d (no bias: BN's shift replaces it) -> BatchNorm2d -> ReLU
    DepthwiseConv2d(channels, k, stride) a k x k convolution per channel, through `depthwise` below
    SeparableConv2d(cin, cout, stride)   depthwise 3x3 then pointwise 1x1 (Chollet 2017; Howard et al. 2017)
    attention(qkv)                       softmax(Q K^T / sqrt(D)) V from a fused QKV projection
    Dropout(p)                           nn.Dropout drawing from Net.apply's key where there is one (nets/rng.py)
    DropPath(p)                          stochastic depth: a residual branch dropped per sample in training

`depthwise` and `attention` are the single doors to the Triton kernels in kernels/: `impl="auto"` takes
the kernel for CUDA tensors it supports and the plain PyTorch reference elsewhere; `impl="reference"` forces
the reference (the nets expose it as their `kernels` option).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from nets import rng
from nets.options import OneOf

# The nets' `kernels` option: a literal, so that importing nets imports no Triton (kernels/ accepts more impls,
# e.g. "triton", which forces the kernel and fails off CUDA: not a choice a net offers).
KERNEL_CHOICES = ("auto", "reference")
Kernels = Annotated[str, OneOf(*KERNEL_CHOICES)]


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def depthwise(x: torch.Tensor, weight: torch.Tensor, stride: int, impl: str = "auto") -> torch.Tensor:
    """Depthwise k x k convolution with 'same' padding: x (N, C, H, W), weight (C, 1, k, k)."""
    from kernels.depthwise import depthwise_conv2d  # imported at first use: importing nets needs no Triton

    return depthwise_conv2d(x, weight, stride=stride, impl=impl)


def attention(qkv: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """qkv (B, S, 3, heads, D), the QKV projection's output viewed per head -> (B, S, heads * D)."""
    from kernels.attention import attention as fused_attention

    return fused_attention(qkv, impl=impl)


class DepthwiseConv2d(nn.Conv2d):
    """An nn.Conv2d(C, C, k, groups=C, bias=False) (same parameters and state_dict) computed by `depthwise`."""

    def __init__(self, channels: int, k: int = 3, stride: int = 1, kernels: str = "auto"):
        super().__init__(channels, channels, k, stride=stride, padding=k // 2, groups=channels, bias=False)
        self.kernels = kernels

    def forward(self, x):
        return depthwise(x, self.weight, self.stride[0], self.kernels)


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (stride `stride`) then pointwise 1x1; BN and ReLU placement are the caller's."""
    folds_members = True  # its forward keeps each member's channels apart: K members fold into one (nets/fold.py)

    def __init__(self, cin: int, cout: int, stride: int = 1, kernels: str = "auto"):
        super().__init__()
        self.depthwise = DepthwiseConv2d(cin, 3, stride, kernels)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class Dropout(nn.Dropout, rng.Keyed):
    """nn.Dropout (Srivastava et al. 2014) with explicit randomness: in train mode each element is zeroed with
    probability p and the others scaled by 1 / (1 - p); the identity in eval mode and at p = 0. Under a key
    (`Net.apply`'s; nets/rng.py) the mask is the layer's own draw from it, else torch's global generator's. No
    parameters or buffers: replacing nn.Dropout changes no state_dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.key() is None:
            return super().forward(x)
        keep = self.uniform(x.shape, x.device) >= self.p
        return x * (keep.to(x.dtype) / (1 - self.p))


class DropPath(nn.Module, rng.Keyed):
    """Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"), per sample, as the ViTs of
    DeiT (Touvron et al. 2021) use it on their residual branches: in train mode each sample's branch output is
    zeroed with probability p and the others are scaled by 1 / (1 - p), so its expectation is unchanged; the
    identity in eval mode and at p = 0. The draw (in float32, whatever the branch's dtype) comes from the key of
    `Net.apply` (nets/rng.py) where there is one, else from PyTorch's global generator, which the trainer seeds
    and checkpoints."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        per_sample = (x.shape[0],) + (1,) * (x.ndim - 1)
        u = torch.rand(per_sample, device=x.device) if self.key() is None else self.uniform(per_sample, x.device)
        return x * ((u >= self.p).to(x.dtype) / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def batch_norm_from_sums(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, reduce=None) -> torch.Tensor:
    """`bn`'s forward written out in float32 at least (bf16 activations would lose the statistics' digits), its
    output in x's dtype. Train mode (or no running statistics): the batch's per-channel [sum x, sum x^2, count]
    (2C + 1 numbers, `reduce`d first when given: train/sync_bn.py sums them over ranks) give the mean and the
    biased variance E[x^2] - E[x]^2 it normalises with; the running statistics move toward them as nn.BatchNorm's
    do (momentum m, or the cumulative average without one; the variance unbiased, n / (n - 1)). Eval mode: the
    running statistics. Then y = x * scale + shift per channel, one pass over x in its layout (channels_last
    stays so). Reductions and elementwise ops only, so torch.func.vmap maps it (a members run's BatchNorm,
    train/members.py) where torch's batch_norm refuses. E[x^2] - E[x]^2 in float32 loses digits when a channel's
    mean is large against its spread (about 1e-7 x mean^2 / var, relative); BN inputs are conv outputs of modest
    mean."""
    C = x.shape[1]
    dims = [0, *range(2, x.dim())]  # all but the channels
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    if bn.training or not bn.track_running_stats:
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_full((1,), x.numel() // C)])
        total = local if reduce is None else reduce(local)
        n = total[2 * C]
        mean = total[:C] / n
        var = (total[C: 2 * C] / n - mean * mean).clamp_min(0)  # biased; rounding can dip below 0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            # momentum None: the cumulative average, with nn.BatchNorm's host-side float (a sync, as there)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            with torch.no_grad():
                bn.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                bn.running_var.mul_(1 - factor).add_(factor * var.detach() * n / (n - 1))
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    per_channel = (1, C) + (1,) * (x.dim() - 2)
    return (xf * scale.view(per_channel) + shift.view(per_channel)).to(x.dtype)
