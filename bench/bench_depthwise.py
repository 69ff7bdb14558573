"""pytest-benchmark timings of kernels.depthwise: `pytest bench/bench_depthwise.py --benchmark-only`.

On CUDA: the Triton kernels and PyTorch (F.conv2d, groups=C), forward + backward of a bf16 channels_last 3x3
depthwise conv at a few CIFAR layer shapes (`python -m bench depthwise` gives the full table, CUDA-graph times
and bandwidth). Without CUDA: a tiny CPU case of the reference path, so that `--benchmark-only` always has
something to run (well under a second).
"""

import pytest
import torch

from kernels.depthwise import depthwise_conv2d

CUDA = torch.cuda.is_available()
# (N, C, H, stride): MobileNetV1's first layer, a mid layer, a stride-2 layer, the 4x4 tail.
GPU_SHAPES = [(256, 32, 32, 1), (256, 256, 8, 1), (256, 128, 16, 2), (256, 1024, 4, 1)]
IMPLS = ["triton", "reference"]


def _fwd_bwd_step(N, C, H, stride, impl, device, dtype, memory_format):
    """One training-style call: y = f(x, w), then the gradients of x and w, synchronised for the timer."""
    x = torch.randn(N, C, H, H, device=device, dtype=dtype).to(memory_format=memory_format).requires_grad_()
    w = torch.randn(C, 1, 3, 3, device=device, requires_grad=True)
    OH = (H - 1) // stride + 1
    grad_y = torch.randn(N, C, OH, OH, device=device, dtype=dtype).to(memory_format=memory_format)

    def step():
        torch.autograd.grad(depthwise_conv2d(x, w, stride, impl=impl), (x, w), grad_y)
        if x.is_cuda:
            torch.cuda.synchronize()

    step()  # warm-up: compilation, autotuning and cuDNN's algorithm search stay out of the timings
    return step


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,C,H,stride", GPU_SHAPES)
def test_depthwise_fwd_bwd_cuda(benchmark, N, C, H, stride, impl):
    torch.backends.cudnn.benchmark = True
    step = _fwd_bwd_step(N, C, H, stride, impl, "cuda", torch.bfloat16, torch.channels_last)
    benchmark.group = f"depthwise fwd+bwd bf16 channels_last N={N} C={C} H={H} stride={stride}"
    benchmark.pedantic(step, rounds=50, warmup_rounds=5)


def test_depthwise_reference_cpu_fwd_bwd(benchmark):
    """The CPU path (reference) at a toy shape: keeps --benchmark-only meaningful without a GPU."""
    step = _fwd_bwd_step(8, 32, 16, 1, "reference", "cpu", torch.float32, torch.contiguous_format)
    benchmark.group = "depthwise fwd+bwd, CPU reference N=8 C=32 H=16"
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
