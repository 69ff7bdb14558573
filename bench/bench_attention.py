"""pytest-benchmark timings of kernels.attention: `pytest bench/bench_attention.py --benchmark-only`.

On CUDA: the Triton kernels and the best SDPA backend for these shapes (cuDNN, per bench/results), forward +
backward from the same bf16 qkv (B, S, 3, H, D), the SDPA permutes included (see bench/attention.py). Without
CUDA: a tiny CPU case of the reference path, so that `--benchmark-only` always has something to run.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from kernels.attention import attention, sdpa_attention

CUDA = torch.cuda.is_available()
GPU_SHAPES = [(256, 65, 8, 64), (128, 257, 6, 64)]  # (B, S, H, D): the CIFAR ViT, and 2x2 patches


def _fwd_bwd_step(fn, qkv, grad_out):
    """One training-style call: out = fn(qkv), then the gradient of qkv, synchronised for the timer."""
    x = qkv.detach().requires_grad_(True)

    def step():
        torch.autograd.grad(fn(x), x, grad_out)
        if x.is_cuda:
            torch.cuda.synchronize()

    step()  # warm-up: compilation and autotuning stay out of the timings
    return step


def _inputs(B, S, H, D, device, dtype):
    return (torch.randn(B, S, 3, H, D, device=device, dtype=dtype),
            torch.randn(B, S, H * D, device=device, dtype=dtype))


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("B,S,H,D", GPU_SHAPES)
def test_triton_fwd_bwd(benchmark, B, S, H, D):
    step = _fwd_bwd_step(lambda x: attention(x, impl="triton"), *_inputs(B, S, H, D, "cuda", torch.bfloat16))
    benchmark.group = f"attention fwd+bwd B={B} S={S} H={H} D={D}"
    benchmark.pedantic(step, rounds=50, warmup_rounds=5)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("B,S,H,D", GPU_SHAPES)
def test_sdpa_cudnn_fwd_bwd(benchmark, B, S, H, D):
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]):  # cuDNN, else flash
        step = _fwd_bwd_step(sdpa_attention, *_inputs(B, S, H, D, "cuda", torch.bfloat16))
        benchmark.group = f"attention fwd+bwd B={B} S={S} H={H} D={D}"
        benchmark.pedantic(step, rounds=50, warmup_rounds=5)


def test_reference_cpu_fwd_bwd(benchmark):
    """The CPU path (reference) at a toy shape: keeps --benchmark-only meaningful without a GPU (< 1 s)."""
    inputs = _inputs(8, 65, 2, 32, "cpu", torch.float32)
    step = _fwd_bwd_step(lambda x: attention(x, impl="reference"), *inputs)
    benchmark.group = "attention fwd+bwd, CPU reference B=8 S=65 H=2 D=32"
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
