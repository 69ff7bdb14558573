"""Depthwise k x k convolution with a fused per-channel epilogue, forward and backward in Triton.

    y = relu(conv2d(x, weight, stride, padding=k // 2, groups=C) * scale[c] + shift[c])    (each step optional)

`depthwise_conv2d(x, weight, stride, scale, shift, relu, impl)` is the entry point (nets.blocks.depthwise calls
it); `reference_depthwise_conv2d` is the plain PyTorch version, the CPU path and the test oracle;
`precompile(layers)` compiles a net's kernel variants ahead, in parallel processes. CPU tensors run the same
kernels in Triton's interpreter (for tests: slow), which needs TRITON_INTERPRET=1 before triton is imported.

One module per job, each importing only those above it:

    contract    what is computed and accepted: argument checks, output_hw, the reference
    helpers     LaunchConfig, launch, the layouts, the @triton.jit helpers the kernels share
    rules       the measured launch tables and the dispatch rules (which schedule, which tile, Triton or PyTorch)
    tiles       forward and grad-input on (pixels x channels) or (planes x pixels) tiles, any layout and k
    rows        forward and stride-1 grad-input walking down whole rows (channels_last 3x3)
    weight      the weight pass: "gather" (taps as a tile axis) or "taps" (nine shifted loads), and the finishing sum
    onepass     grad_x and the weight gradient from one read of grad_y (stride 1, channels_last 3x3)
    launchers   check, densify, pick the schedule and tile, launch
    ops         the launchers as torch.library triton_ops (torch.compile, torch.func) and their vmap rules
    autograd    the autograd.Function and backward_pass (which passes run)
    precompile  Layer, precompile, in_processes
    dispatch    depthwise_conv2d

docs/kernels.md describes the schedules, their memory traffic and the measurements behind the rules.
"""

from kernels.depthwise.contract import IMPLS, STRIDES, TRITON_DTYPES, TRITON_KERNEL_SIZES, reference_depthwise_conv2d
from kernels.depthwise.dispatch import depthwise_conv2d
from kernels.depthwise.helpers import LaunchConfig
from kernels.depthwise.precompile import Layer, precompile
from kernels.depthwise.rules import triton_preferred

__all__ = [
    "IMPLS",
    "STRIDES",
    "TRITON_DTYPES",
    "TRITON_KERNEL_SIZES",
    "Layer",
    "LaunchConfig",
    "depthwise_conv2d",
    "precompile",
    "reference_depthwise_conv2d",
    "triton_preferred",
]
