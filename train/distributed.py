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
as `make_train_step(..., grad_hook=all_reduce_mean_)` (train/collectives.py).
Known limitation: the all-reduce does not overlap with the backward pass (DDP's main trick); it runs after it.

The launcher's environment is read by `init_from_env`; without WORLD_SIZE (a plain `python -m train`) it does
nothing and everything here degrades to the single-process case (rank 0 of 1).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

Tree = dict[str, torch.Tensor]

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
