"""The depthwise layers the benchmarks time and the inputs they time them on: every depthwise convolution of the
CIFAR MobileNetV1 and Xception, read from a forward pass of the nets on the meta device, so that the benchmarks
follow the nets as they are (a hand-written list went stale when the nets' CIFAR strides changed)."""

import functools

import torch

from nets.blocks import DepthwiseConv2d
from nets.registry import build

# The nets whose depthwise layers are benchmarked: row label -> registered name.
NETS = {"mobilenet_v1": "mobilenetv1", "xception": "xception"}
K = 3
BATCHES = (256, 512)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DNAMES = tuple(DTYPES)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# ||variant - reference|| / ||reference|| allowed between two of our kernels, as tests/test_depthwise.py's TOL:
# float32 sums in another order; bfloat16 outputs rounded from float32 values that differ in their last bits.
MATCH_TOL = {"bf16": 2e-2, "fp32": 1e-5}
COMPILE_N = 16  # batch of the precompile jobs (the kernels do not specialise on it)


@functools.cache
def net_layers(name: str) -> tuple[tuple[int, int, int], ...]:
    """(C, H, stride) of every depthwise convolution of the registered net `name` on a 32x32 input, in order
    (C = channels, H = input height and width)."""
    module = build(name, kernels="reference").module
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[1], args[0].shape[2], m.stride[0])))
             for m in module.modules() if isinstance(m, DepthwiseConv2d)]
    try:
        with torch.no_grad():
            module(torch.empty(1, 3, 32, 32, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return tuple(seen)


def layer_table() -> list[tuple[str, int, int, int]]:
    """(nets, C, H, stride) of every distinct depthwise layer of NETS, in order of first appearance; identical
    shapes merged ("mobilenet_v1+xception")."""
    nets: dict[tuple[int, int, int], list[str]] = {}
    for label, name in NETS.items():
        for shape in dict.fromkeys(net_layers(name)):
            nets.setdefault(shape, []).append(label)
    return [("+".join(v), *shape) for shape, v in nets.items()]


def channels_last_inputs(N: int, C: int, H: int, stride: int, dtype: torch.dtype, device, n: int):
    """n sets of (x, grad_y), channels_last: x (N, C, H, H), grad_y (N, C, OH, OH)."""
    OH = (H - 1) // stride + 1
    cl = torch.channels_last
    xs = [torch.randn(N, C, H, H, device=device, dtype=dtype).to(memory_format=cl) for _ in range(n)]
    gs = [torch.randn(N, C, OH, OH, device=device, dtype=dtype).to(memory_format=cl) for _ in range(n)]
    return xs, gs


def max_rel_err(outs, refs) -> float:
    """Largest ||out - ref|| / ||ref|| over paired outputs (empty ones skipped)."""
    errs = [((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()
            for a, b in zip(outs, refs) if b.numel()]  # fmt: skip
    return max(errs)


def element_size(dname: str) -> int:
    return torch.empty((), dtype=DTYPES[dname]).element_size()
