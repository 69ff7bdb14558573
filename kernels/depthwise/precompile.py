"""Compiling a net's depthwise kernels ahead, in parallel processes.

Triton compiles a kernel at its first launch, about a second per variant on an H100 host, and every
(C, H, W, stride, dtype, layout, epilogue) is a variant: a MobileNet's 9 layer shapes cost ~30 s at the first
step. `precompile` runs each layer's forward and backward once at a small batch (the kernels do not specialise
on the batch) in spawned worker processes, which fills Triton's on-disk cache for the calling process.
"""

import concurrent.futures
import multiprocessing
import os
from typing import NamedTuple

import torch

from kernels.depthwise.autograd import backward_pass
from kernels.depthwise.contract import MAX_INDEX
from kernels.depthwise.launchers import launch_fwd
from kernels.depthwise.rules import backward_variant

COMPILE_BATCH = 16


class Layer(NamedTuple):
    """One depthwise layer configuration to compile for (defaults: 3x3, no epilogue, bfloat16, NHWC)."""

    C: int
    H: int
    W: int
    stride: int = 1
    K: int = 3
    dtype: str = "bfloat16"  # torch dtype name of x
    channels_last: bool = True
    scale: bool = False
    shift: bool = False
    relu: bool = False
    weight_dtype: str = "float32"


def _compile_layer(layer: Layer) -> None:
    """Forward and backward of one layer at batch COMPILE_BATCH on the GPU (in a worker process)."""
    C, H, W, stride, K = layer.C, layer.H, layer.W, layer.stride, layer.K
    fmt = torch.channels_last if layer.channels_last else torch.contiguous_format
    x = torch.randn(COMPILE_BATCH, C, H, W, device="cuda", dtype=getattr(torch, layer.dtype)).to(memory_format=fmt)
    w = torch.randn(C, 1, K, K, device="cuda", dtype=getattr(torch, layer.weight_dtype))
    sc = torch.ones(C, device="cuda") if layer.scale else None
    sh = torch.zeros(C, device="cuda") if layer.shift else None
    y = launch_fwd(x, w, sc, sh, stride, layer.relu)
    backward_pass(y, x, w, sc, sh, stride, layer.relu, (True, True, layer.scale, layer.shift), eager=True)
    variants = {backward_variant(layer.channels_last, x.dtype, n, C, H, W, stride, K, layer.relu or layer.scale)
                for n in (COMPILE_BATCH, MAX_INDEX)}
    if len(variants) > 1:  # the batch decides between one pass and two (in 16 bits): compile the two passes too
        for needs in ((True, False, False, False), (False, True, False, layer.shift)):
            backward_pass(y, x, w, sc, sh, stride, layer.relu, needs, eager=True)
    torch.cuda.synchronize()


def in_processes(fn, jobs: list, workers: int | None = None) -> None:
    """fn over the unique jobs in spawned worker processes (each with its own CUDA context); fn must be a
    module-level function (it is pickled by name)."""
    jobs = list(dict.fromkeys(jobs))  # unique, in order
    if not jobs:
        return
    workers = workers or max(1, min(16, (os.cpu_count() or 2) - 1, len(jobs)))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def precompile(layers: list[Layer], workers: int | None = None) -> None:
    """Compile the CUDA kernels of every layer ahead, in parallel processes (see the module docstring)."""
    in_processes(_compile_layer, [Layer(*layer) for layer in layers], workers)
