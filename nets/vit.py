"""Vision Transformer (ViT) for 32x32 inputs.

Paper: A. Dosovitskiy, L. Beyer, A. Kolesnikov, D. Weissenborn, X. Zhai, T. Unterthiner, M. Dehghani,
M. Minderer, G. Heigold, S. Gelly, J. Uszkoreit, N. Houlsby, "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", ICLR 2021 (arXiv:2010.11929). The image is cut into patch x patch squares, each
flattened and projected linearly (the paper's eq. 1), a learned position embedding is added, then pre-norm
transformer blocks (LayerNorm -> multi-head self-attention -> residual; LayerNorm -> MLP with GELU ->
residual), a final LayerNorm and a linear head on the class token (`pool="cls"`, the paper's choice) or on the
mean of the tokens (`pool="mean"`, the paper's "GAP" variant of appendix D.3). Attention is one
Linear(dim, 3 dim) projection whose output is viewed as (B, S, 3, heads, D) and handed to
`nets.blocks.attention`: the fused Triton kernel on CUDA (float16/bfloat16), plain PyTorch elsewhere
(`kernels="reference"` forces the latter). LayerNorm eps 1e-6 and the exact (erf) GELU, as the reference
implementation and torchvision have them.

Adapted for CIFAR: 16x16 patches would leave a 32x32 image 4 tokens, so the patches are 4x4: 64 tokens (65
with the class token), a sequence the fused kernel keeps on chip. The paper's sizes are configurations:
vit_tiny (dim 192, depth 12, heads 3; from DeiT, Touvron et al. 2021), vit_small (384, 12, 6; DeiT), vit_base
(768, 12, 12; the paper's ViT-B). `vit`, the CIFAR default the zoo trains, is ViT-S's width and heads at depth
7, the depth of Hassani et al. 2021's ViT-Lite-7/4 for CIFAR ("Escaping the Big Data Paradigm with Compact
Transformers", arXiv:2104.05704; theirs is narrower: dim 256, MLP ratio 2): 12.5M parameters and 1.7 forward
GFLOPs per image, near the CIFAR ResNet-18's 11.2M and 1.1 GFLOPs. Every size keeps the paper's head
dimension of 64 (the fused attention kernel is tuned for head dimensions 32 and 64) and an MLP ratio of 4.

The ImageNet ViT-B/16 is `nets.build("vit_base", 1000, patch=16, image_size=224)`: its parameter count
equals torchvision's vit_b_16 (86,567,656) and, with torchvision's tensors loaded under our names (the patch
projection's (768, 3, 16, 16) convolution weight flattens to our (768, 768) linear weight, since patches are
flattened in (channel, row, column) order), it gives torchvision's logits; tests/test_paper_families.py
holds the name map.

Parameters (patch 4, pool "cls"):   10 classes    100 classes
    vit                             12,470,026    12,504,676
    vit_tiny                         5,362,762     5,380,132
    vit_small                       21,342,346    21,376,996
    vit_base                        85,152,010    85,221,220
`pool="mean"` has no class token: 2 x dim parameters fewer (the token and its position embedding row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from einops import rearrange
from torch import nn

from nets import blocks
from nets.blocks import Kernels
from nets.core import Net, NetError
from nets.options import AtLeast, DropRate, OneOf
from nets.registry import register


@dataclass(frozen=True)
class ViTSize:
    dim: int  # token width
    depth: int  # transformer blocks
    heads: int  # attention heads; head dim = dim / heads (64 for every size below)
    mlp_ratio: int = 4  # MLP hidden width / dim


SIZES = {
    "vit": ViTSize(dim=384, depth=7, heads=6),
    "vit_tiny": ViTSize(dim=192, depth=12, heads=3),
    "vit_small": ViTSize(dim=384, depth=12, heads=6),
    "vit_base": ViTSize(dim=768, depth=12, heads=12),
}
POOLS = ("cls", "mean")
LAYER_NORM_EPS = 1e-6  # the reference implementation's (flax) and torchvision's, not PyTorch's 1e-5
INIT_STD = 0.02  # BERT's and timm's standard deviation for linear weights and embeddings


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kernels: str):
        super().__init__()
        self.heads, self.kernels = heads, kernels
        self.qkv = nn.Linear(dim, 3 * dim)  # rows: [q; k; v], each split into heads (torchvision's in_proj)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # x: (B, S, dim)
        qkv = rearrange(self.qkv(x), "b s (three h d) -> b s three h d", three=3, h=self.heads)  # a view
        return self.proj(blocks.attention(qkv, self.kernels))  # attention: (B, S, heads * D) = (B, S, dim)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = blocks.Dropout(dropout)  # called twice: each call draws its own mask (nets/rng.py)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block (the paper's eqs. 2 and 3)."""

    def __init__(self, size: ViTSize, dropout: float, kernels: str, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(size.dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(size.dim, size.heads, kernels)
        self.norm2 = nn.LayerNorm(size.dim, eps=LAYER_NORM_EPS)
        self.mlp = MLP(size.dim, size.mlp_ratio * size.dim, dropout)
        self.drop = blocks.Dropout(dropout)
        self.drop_path = blocks.DropPath(drop_path)  # on both branches, each call its own draw (nets/rng.py)

    def forward(self, x):  # x: (B, S, dim)
        x = x + self.drop_path(self.drop(self.attn(self.norm1(x))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, size: ViTSize, num_classes: int, patch: int, image_size: int, pool: str, dropout: float,
                 kernels: str, drop_path: float = 0.0):  # fmt: skip
        super().__init__()
        self.patch, self.grid, self.pool = patch, image_size // patch, pool
        self.patch_embed = nn.Linear(3 * patch * patch, size.dim)
        tokens = self.grid**2
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.empty(1, 1, size.dim))  # filled by init_param
            tokens += 1
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, size.dim))  # filled by init_param
        self.drop = blocks.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(size, dropout, kernels, p) for p in drop_path_rates(drop_path, size.depth)))
        self.norm = nn.LayerNorm(size.dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(size.dim, num_classes)
        linears = [prefix for prefix, m in self.named_modules() if isinstance(m, nn.Linear)]
        self.truncated_normal = {f"{p}.weight" for p in linears} | {"pos_embed", "cls_token"}
        self.zeros = {f"{p}.bias" for p in linears}

    def forward(self, x):  # x: (B, 3, H, W)
        # One row per patch, patches in row-major order, each flattened as (channel, row, column).
        g, p = self.grid, self.patch
        x = rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", h=g, w=g, p1=p, p2=p)  # (B, N, 3 p p)
        x = self.patch_embed(x)  # (B, N, dim)
        if self.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, dim)
        x = self.norm(self.blocks(self.drop(x + self.pos_embed)))
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)  # (B, dim)
        return self.head(x)  # (B, num_classes)

    def init_param(self, name, t, generator) -> bool:
        # timm's ViT init, after BERT's (the one most CIFAR ViT results train with): every linear weight, the
        # position embedding and the class token from a normal of std 0.02 truncated at two standard deviations
        # (timm passes absolute bounds +-2, which at this std truncate nothing), biases zero: one scale at every
        # width, where PyTorch's Linear default, uniform(+-1/sqrt(fan_in)), shrinks with fan_in. The
        # LayerNorms keep the default identity start.
        if name in self.truncated_normal:
            truncated_normal_(t, INIT_STD, generator)
            return True
        if name in self.zeros:
            nn.init.zeros_(t)
            return True
        return False


def truncated_normal_(t: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Fill t from a normal of mean 0 and deviation std truncated at +-2 std, in place.

    The distribution of nn.init.trunc_normal_, drawn by redrawing the samples that fall outside (4.6% of them,
    then 4.6% of those, ...) instead of by inverse CDF, whose erfinv is slow on the CPU: ViT-B's 85M parameters
    take 5 s instead of 24 s on 2 cores. Deterministic for a given generator state.
    """
    flat = t.view(-1).normal_(0.0, std, generator=generator)
    outside = (flat.abs() > 2 * std).nonzero().squeeze(1)  # indices still to redraw
    while outside.numel():
        redrawn = torch.empty(outside.numel(), dtype=t.dtype).normal_(0.0, std, generator=generator)
        flat[outside] = redrawn
        outside = outside[redrawn.abs() > 2 * std]
    return t


def drop_path_rates(drop_path: float, depth: int) -> list[float]:
    """Each block's stochastic-depth rate: rising linearly from 0 at the first block to `drop_path` at the
    last (Huang et al. 2016's linear decay rule of survival, as DeiT's ViTs apply it)."""
    return [drop_path * i / (depth - 1) if depth > 1 else drop_path for i in range(depth)]


def vit(name: str):
    size = SIZES[name]

    def build(num_classes: int = 10, patch: Annotated[int, AtLeast(1)] = 4, pool: Annotated[str, OneOf(*POOLS)] = "cls",
              image_size: Annotated[int, AtLeast(1)] = 32, dropout: DropRate = 0.0, kernels: Kernels = "auto",
              drop_path: DropRate = 0.0) -> Net:  # fmt: skip
        """patch: patch side in pixels (4 for CIFAR, 16 for the paper's /16 models); pool: "cls" (class token)
        or "mean" (average of the tokens); image_size: input side in pixels (a multiple of patch); dropout:
        after the embedding, the attention and each MLP layer (in train mode above 0 it draws from `apply`'s key,
        nets/rng.py, or without a key from PyTorch's global generator); kernels: "auto" (Triton attention on
        CUDA) or "reference"; drop_path: stochastic depth of the last block's two residual branches, rising
        linearly from 0 at the first block (drop_path_rates; DeiT trains its ViTs with 0.1; above 0 it draws as
        dropout does)."""
        if image_size % patch:  # the options' own ranges are checked by nets.build, from the signature
            raise NetError(f"{name}: net.image_size={image_size} must be a multiple of patch, net.patch={patch} "
                           "(the image is cut into patch x patch squares)")
        return Net(name, lambda: ViT(size, num_classes, patch, image_size, pool, dropout, kernels, drop_path),
                   num_classes)

    return build


for _name in SIZES:
    register(_name)(vit(_name))
