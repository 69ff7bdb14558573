"""The collectives a data-parallel step calls inside its compiled region: the gradients' bucketed mean over
ranks (`all_reduce_mean_`, the trainer's grad_hook) and a differentiable sum (`all_reduce_sum`, sync BN's
statistics and the epoch's metrics). train/distributed.py says why a bucketed all-reduce rather than DDP.

Apart from train/distributed.py because they are kept out of torch.compile's graphs with torch.compiler.disable,
whose first use imports torch._dynamo (about 1.5 s on a 2-core CPU, `python -X importtime -m train`): the
trainer needs it, a tool or a command-line error does not.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from train.distributed import Tree, world_size

# Largest all-reduce message (bytes); DDP's default bucket_cap_mb is 25 for the same reason: big enough that
# per-message latency is amortised, small enough that the flattened copy stays a modest memory overhead.
BUCKET_BYTES = 25 * 2**20

class AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over ranks, differentiable: the gradient is the sum of the ranks' gradients. Written
    with setup_context (nothing to save) so that it runs under torch.func transforms as well as autograd."""

    @staticmethod
    def forward(t: torch.Tensor) -> torch.Tensor:
        t = t.clone(memory_format=torch.contiguous_format)  # the collective writes in place
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


@torch.compiler.disable  # as all_reduce_mean_ (below): sync BN calls it inside the step
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over ranks (a new tensor), differentiable (AllReduceSum: sync BN's statistics need the
    gradient); `t` itself in a single process."""
    if not dist.is_initialized():
        return t
    return AllReduceSum.apply(t)


def buckets(tensors: list[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> list[list[int]]:
    """Indices of `tensors` grouped into buckets of one dtype and device, each at most `bucket_bytes` (a
    larger tensor gets a bucket of its own), in the given order."""
    groups: list[list[int]] = []
    open_bucket: dict[tuple, tuple[list[int], int]] = {}  # (dtype, device) -> (indices, bytes so far)
    for i, t in enumerate(tensors):
        key, size = (t.dtype, t.device), t.numel() * t.element_size()
        indices, used = open_bucket.get(key, (None, 0))
        if indices is None or used + size > bucket_bytes:
            indices, used = [], 0
            groups.append(indices)
        indices.append(i)
        open_bucket[key] = (indices, used + size)
    return groups


# Kept out of torch.compile's graphs: the compiled step breaks in two around it and the collectives run eagerly,
# the conservative form. Tracing them into the graph (functional collectives) may serve NCCL better, but it could
# not be checked here: compile=true crashes on this CPU machine even in one process; not measured on GPUs yet.
@torch.compiler.disable
def all_reduce_mean_(tree: Tree, bucket_bytes: int = BUCKET_BYTES) -> Tree:
    """Average a gradient pytree across ranks: each bucket is flattened into one contiguous tensor, summed
    with one all_reduce and divided by the world size (gloo has no AVG op). Returns a new tree of averaged
    tensors (the name ends in _ as the collectives do: it communicates; the caller's tensors are not
    written). Without a process group it returns `tree` unchanged."""
    world = world_size()
    if world == 1:
        return tree
    keys = list(tree)
    tensors = [tree[k] for k in keys]
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for indices in buckets(tensors, bucket_bytes):
        flat = _flatten_dense_tensors([tensors[i] for i in indices])  # one new contiguous 1-D tensor
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        for i, t in zip(indices, _unflatten_dense_tensors(flat, [tensors[i] for i in indices])):
            out[i] = t
    return dict(zip(keys, out))
