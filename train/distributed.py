"""Data-parallel training over several processes (torchrun): process group, gradient averaging, data shards.

One process per GPU (or several CPU processes with gloo). Every rank holds the same params, trains on its own
disjoint, equal-size shard of the training split, and averages its gradients with the other ranks before the
SGD update, so all ranks take the same step:

    g = (1 / world) * sum_r grad(mean loss over rank r's B images)
      = grad(mean loss over all world * B images)      # equal shards: the mean of means is the global mean

which is exactly the step of one process with batch world * B, for nets without BatchNorm (BN normalises each
rank's batch with that rank's statistics: per-rank BN, as DistributedDataParallel gives by default), and for
nets with BatchNorm under sync_bn=true (train/sync_bn.py: the statistics of all ranks' images).

Why a bucketed all-reduce after the gradient rather than DistributedDataParallel: DDP wraps an nn.Module and
hooks into autograd as the module's backward runs, to start all-reducing a bucket as soon as its gradients are
ready. Our step computes gradients functionally (torch.func.grad_and_value over a stateless skeleton, or
torch.autograd.grad over leaf params) and never calls .backward() on a wrapped module, so DDP's hooks never
fire. The composable choice is to take the finished gradient pytree, flatten it into a few contiguous buckets
and all-reduce each one: the same bucketing DDP does (few large messages instead of one per tensor), applied
as `make_train_step(..., grad_hook=all_reduce_mean_)`.
Known limitation: the all-reduce does not overlap with the backward pass (DDP's main trick); it runs after it.

The launcher's environment is read by `init_from_env`; without WORLD_SIZE (a plain `python -m train`) it does
nothing and everything here degrades to the single-process case (rank 0 of 1).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

Tree = dict[str, torch.Tensor]

# Largest all-reduce message (bytes); DDP's default bucket_cap_mb is 25 for the same reason: big enough that
# per-message latency is amortised, small enough that the flattened copy stays a modest memory overhead.
BUCKET_BYTES = 25 * 2**20
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}  # NCCL between GPUs, gloo between CPU processes


def init_from_env(device_type: str) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, joining the process group (nccl for cuda,
    gloo for cpu; the rendezvous comes from MASTER_ADDR/MASTER_PORT, as torchrun sets them). Without
    WORLD_SIZE, or with WORLD_SIZE=1, no group is made: (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)  # before NCCL starts, so each rank's communicator uses its own GPU
    if not dist.is_initialized():
        dist.init_process_group(BACKENDS[device_type], rank=rank, world_size=world)
    return rank, world, local_rank


def close() -> None:
    """Leave the process group, if one was joined (safe to call in a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and logs: rank 0, or the only process."""
    return not dist.is_initialized() or dist.get_rank() == 0


def host_group():
    """A gloo group over all ranks for host-side flags (a stop request), so that agreeing on one needs no GPU
    sync; the default group when it is gloo already, None in a single process. Every rank must call it."""
    if not dist.is_initialized():
        return None
    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def any_rank(flag: bool, group=None) -> bool:
    """Whether `flag` is true on any rank (one tiny CPU all-reduce over `group`, host_group()'s); `flag` itself
    in a single process."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item())


def from_main(obj):
    """Rank 0's `obj` (any picklable value) on every rank: decisions such as the lr schedule's are made once."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_tree_(tree: Tree) -> Tree:
    """Rank 0's tensors copied into every rank's `tree`, in place (BatchNorm statistics: each rank's follow its
    own batches; before evaluating and saving, all ranks take rank 0's, as DDP's broadcast_buffers does)."""
    if dist.is_initialized():
        for t in tree.values():
            dist.broadcast(t, src=0)
    return tree


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


def shard(indices, rank: int, world: int, seed: int = 0) -> torch.Tensor:
    """Rank `rank`'s share of `indices` (a 1-D tensor or array of training-split indices): the indices are
    shuffled once with `seed` (so that a shard is not one block of a class-sorted split), the remainder of
    len // world is dropped so every rank gets the same count (equal shards keep the gradient mean exact and
    the ranks in lockstep: each rank runs the same number of steps), and rank r takes every world-th one.
    The shards are disjoint, and the same on every rank given the same seed."""
    indices = torch.as_tensor(indices)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    per_rank = len(indices) // world
    return indices[order[: per_rank * world]][rank::world]
