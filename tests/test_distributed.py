"""Data parallel over gloo on the CPU: 2 ranks with batch B each take the same SGD steps as 1 rank with batch
2B (a net without BatchNorm; with BatchNorm too when it is synchronised, and not when it is per rank), every
rank ends with the same params, and only rank 0 writes files, both in the step alone and in the real training
loop (with per-rank and with synchronised BatchNorm). The synchronised layer alone, in one process, is
nn.BatchNorm's twin.

The ranks are real processes: this file, run as a script, is the worker (`python tests/test_distributed.py
<rank> <world> <port> <out dir> <data> <sync_bn>`), joined through the same environment variables torchrun
sets.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # the worker runs as a script, outside pytest's path setup

# bn_net: the plain net below with BatchNorm after each convolution. Per-rank statistics make each rank's step
# depend on which images share its batch, so only synchronised BN gives the large-batch step.
from runs import bn_net  # noqa: E402

import nets  # noqa: E402
from nets.core import Net  # noqa: E402
from train import collectives, distributed  # noqa: E402
from train import sync_bn as sync_bn_module  # noqa: E402
from train.config import Config, parse  # noqa: E402
from train.loop import run  # noqa: E402
from train.optim import zeros_like_tree  # noqa: E402
from train.step import TrainState, make_train_step, precision_for  # noqa: E402
from train.sync_bn import SyncBatchNorm, synchronise_batchnorm  # noqa: E402

CPU = precision_for(torch.device("cpu"), "fp32")
CFG = Config(nesterov=True, weight_decay=5e-4, label_smoothing=0.1)
PER_RANK_BATCH, STEPS, WORLD = 8, 4, 2
LRS = (0.1, 0.05, 0.1, 0.02)  # one per step
# Small buckets (bytes), so that the averaged gradients cross several all-reduce messages and bucket edges.
TEST_BUCKET_BYTES = 2048
TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 sums in another order (per-rank means, then their mean)
# The synchronised layer against nn.BatchNorm in float64: float32 runs differ by rounding (E[x^2] - E[x]^2 and
# another summation order), float64 ones by nothing a float64 sum would notice.
BN_TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}
WORKER_TIMEOUT_S = 120


def plain_net() -> Net:
    """Conv-ReLU-pool-linear without BatchNorm: each rank's step depends on its images only through the
    gradient, so averaged gradients give exactly the large-batch step."""
    return Net("plain", lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)), 10)


def fixed_problem(make_net=plain_net):
    """The same initial TrainState and STEPS global batches of WORLD * PER_RANK_BATCH images on every process."""
    net = make_net()
    params, state = net.init(torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    n = WORLD * PER_RANK_BATCH
    data = [(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)) for _ in LRS]
    return net, TrainState(params, state, zeros_like_tree(params)), data


def train(step, ts, data):
    for batch, lr in zip(data, LRS):
        ts, _ = step(ts, batch, torch.tensor(lr))
    return ts


def loop_config(data, out: Path, sync_bn: bool):
    """One epoch of two members (train/members.py: every rank holds both) of a narrow ResNet-18 (with BatchNorm,
    per rank or synchronised) on the synthetic pickles; with sync BN the members unrolled (members_form=unroll:
    each member's step a single run's, its BatchNorm collectives included)."""
    return parse(["model=resnet18", "net.width=4", "recipe=seed", "device=cpu", "compile=false", "download=false",
                  "progress=false", f"data={data}", f"out={out}", "epochs=1", "batch_size=20",
                  "val_fraction=0.2", "seed=3", f"sync_bn={str(sync_bn).lower()}", "members=2",
                  f"members_form={'unroll' if sync_bn else 'auto'}"])


def assert_same_on_every_rank(tree, rank: int) -> None:
    """Every tensor of `tree` equals rank 0's, sent to all."""
    for k, t in tree.items():
        theirs = t.detach().clone()
        torch.distributed.broadcast(theirs, src=0)
        assert torch.equal(theirs, t), f"rank {rank}: {k} differs from rank 0's"


def worker(rank: int, world: int, port: int, out: Path, data_root: str, sync_bn: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu") == (rank, world, rank)
    try:
        net, ts, data = fixed_problem()
        mine = [(x[rank::world], y[rank::world]) for x, y in data]  # this rank's half of each global batch
        reduce = lambda grads: collectives.all_reduce_mean_(grads, TEST_BUCKET_BYTES)
        ts = train(make_train_step(net, CFG, CPU, grad_hook=reduce), ts, mine)
        assert_same_on_every_rank(ts.params, rank)  # every rank must hold the same params
        if distributed.is_main():
            torch.save({k: v.detach() for k, v in ts.params.items()}, out / "params.pt")
        # A net with BatchNorm, per rank or synchronised ("func" gradients here; the loop below takes "autograd").
        net, ts, data = fixed_problem(bn_net)
        if sync_bn:
            synchronise_batchnorm(net)
        mine = [(x[rank::world], y[rank::world]) for x, y in data]
        ts = train(make_train_step(net, CFG, CPU, grad_hook=reduce), ts, mine)
        assert_same_on_every_rank(ts.params, rank)
        if sync_bn:  # the statistics of all ranks' images: the same everywhere
            assert_same_on_every_rank(ts.state, rank)
        if distributed.is_main():
            torch.save({k: v.detach() for k, v in {**ts.params, **ts.state}.items()}, out / "bn.pt")
        # The real loop, each rank given its own out= so that a write by rank 1 would show; run leaves the group.
        # Its sync BN layers' all-reduces are counted: sync_bn=true must reach them, and false must not.
        sizes, reduce_sum = [], sync_bn_module.all_reduce_sum
        sync_bn_module.all_reduce_sum = lambda t: sizes.append(t.numel()) or reduce_sum(t)
        results = run(loop_config(data_root, out / f"run{rank}", sync_bn), log=lambda line: None)
        assert bool(sizes) == sync_bn, f"rank {rank}: {len(sizes)} BatchNorm all-reduces with sync_bn={sync_bn}"
        (out / f"results{rank}.json").write_text(json.dumps(results))  # what each rank's run() returned
    finally:
        distributed.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=[False, True], ids=["per-rank-bn", "sync-bn"])
def two_ranks(request, tmp_path_factory, cifar10_pickles):
    """The workers' output directory after a 2-rank run (they train the step alone, then the loop), with
    BatchNorm per rank or synchronised (the param, also returned)."""
    sync_bn = request.param
    out = tmp_path_factory.mktemp("ranks")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(WORLD), str(port), str(out),
                               str(cifar10_pickles), str(int(sync_bn))], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    outputs = [p.communicate(timeout=WORKER_TIMEOUT_S)[0] for p in procs]
    for r, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {r} failed:\n{text}"
    return out, sync_bn


def test_two_ranks_equal_one_rank_with_twice_the_batch(two_ranks):
    tmp_path, _ = two_ranks
    net, ts, data = fixed_problem()
    expected = train(make_train_step(net, CFG, CPU), ts, data).params  # one process, batch WORLD * B
    got = torch.load(tmp_path / "params.pt")
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    # The steps moved the params (the comparison is not of two untouched initialisations).
    assert any(not torch.allclose(ts.params[k], expected[k]) for k in expected)


def test_batchnorm_matches_twice_the_batch_only_when_synchronised(two_ranks):
    """Params and running statistics after the steps, against 1 process with batch 2B and ordinary BN: equal
    with sync BN; with per-rank BN each rank normalises by its half's statistics, and they differ."""
    tmp_path, sync_bn = two_ranks
    net, ts, data = fixed_problem(bn_net)
    after = train(make_train_step(net, CFG, CPU), ts, data)  # one process, batch WORLD * B
    expected = {**after.params, **after.state}
    got = torch.load(tmp_path / "bn.pt")
    assert set(got) == set(expected)
    if sync_bn:
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
        assert any(not torch.allclose(ts.state[k].float(), expected[k].float()) for k in ts.state)  # stats moved
    else:
        assert any(not torch.allclose(got[k].float(), expected[k].float(), **TOL) for k in expected)


def test_only_rank_0_writes(two_ranks):
    two_ranks, sync_bn = two_ranks
    assert {p.name for p in two_ranks.iterdir()} == {"params.pt", "bn.pt", "run0", "results0.json",
                                                     "results1.json"}
    run0 = two_ranks / "run0"
    assert {p.name for p in run0.iterdir()} >= {"config.json", "metrics.jsonl", "last.pt", "best.pt",
                                                 "results.json"}
    assert json.loads((run0 / "config.json").read_text())["sync_bn"] == sync_bn
    # Every rank's run() returns rank 0's results, the ones written.
    written = json.loads((run0 / "results.json").read_text())
    for r in range(WORLD):
        assert json.loads((two_ranks / f"results{r}.json").read_text()) == written
    (line,) = (run0 / "metrics.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["epoch"] == 1 and 0 <= record["train_top1"] <= 100
    # The split's 160 training images, 80 per rank, in batches of 20: 4 steps a rank, 160 images an epoch.
    saved = torch.load(run0 / "last.pt", weights_only=False)
    assert len(saved["train_idx"]) == 160
    if not sync_bn:  # two members on two ranks: both members' weights, trained apart (their seeds 3 and 4)
        assert [m["seed"] for m in written["members"]] == [3, 4] and len(record["members"]["train_loss"]) == 2
        conv = saved["params"]["conv1.weight"]
        assert conv.shape[0] == 2 and not torch.equal(conv[0], conv[1])


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env("cpu") == (0, 1, 0)
    assert distributed.is_main() and distributed.world_size() == 1
    grads = {"w": torch.randn(3)}
    assert collectives.all_reduce_mean_(grads) is grads


def test_buckets_respect_the_cap_and_dtype():
    ts = [torch.zeros(100), torch.zeros(100), torch.zeros(1000), torch.zeros(10, dtype=torch.float64),
          torch.zeros(50)]
    groups = collectives.buckets(ts, bucket_bytes=1000)
    assert sorted(i for g in groups for i in g) == list(range(len(ts)))
    for g in groups:
        assert len({ts[i].dtype for i in g}) == 1
        assert len(g) == 1 or sum(ts[i].numel() * ts[i].element_size() for i in g) <= 1000
    assert [0, 1] in groups and [2] in groups  # 400 + 400 bytes share one; 4000 bytes go alone


@pytest.mark.parametrize("shape, momentum", [((8, 5, 6, 6), 0.1), ((1, 3, 4, 4), None), ((16, 7), 0.3)],
                         ids=["2d", "2d-batch-1-cumulative", "1d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sync_batchnorm_alone_is_batchnorm(shape, momentum, dtype, monkeypatch):
    """Without a process group the synchronised layer is nn.BatchNorm1d/2d: forward, the gradients of input,
    weight and bias, and the running statistics over a few train steps, then eval mode, all against
    nn.BatchNorm in float64."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not torch.distributed.is_initialized()
    C = shape[1]
    reference = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(C, momentum=momentum).double()
    sync = SyncBatchNorm(C, momentum=momentum).to(dtype)
    with torch.no_grad():  # not the identity, so that the weight and bias gradients are of a real affine map
        reference.weight.uniform_(0.5, 2.0)
        reference.bias.normal_()
        sync.weight.copy_(reference.weight)
        sync.bias.copy_(reference.bias)
    for _ in range(3):
        x = torch.randn(shape, dtype=torch.float64) * 3 + 2  # a mean away from 0 tests E[x^2] - E[x]^2
        dy = torch.randn(shape, dtype=torch.float64)
        x_ref, x_sync = x.clone().requires_grad_(), x.to(dtype).requires_grad_()
        y_ref, y_sync = reference(x_ref), sync(x_sync)
        g_ref = torch.autograd.grad(y_ref, [x_ref, reference.weight, reference.bias], dy)
        g_sync = torch.autograd.grad(y_sync, [x_sync, sync.weight, sync.bias], dy.to(dtype))
        assert y_sync.dtype == dtype
        torch.testing.assert_close(y_sync.double(), y_ref.detach(), **BN_TOL[dtype])
        for name, a, b in zip(("input", "weight", "bias"), g_sync, g_ref):
            torch.testing.assert_close(a.double(), b, **BN_TOL[dtype], msg=lambda m, n=name: f"d{n}: {m}")
    for name, b in reference.named_buffers():
        torch.testing.assert_close(getattr(sync, name).double(), b.double(), **BN_TOL[dtype],
                                   msg=lambda m, n=name: f"{n}: {m}")
    reference.eval(), sync.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(sync(x.to(dtype)).double(), reference(x).detach(), **BN_TOL[dtype])


def test_synchronised_net_keeps_names_and_tensors():
    """Swapping the BN layers changes the forward only: the same state_dict names, init and eval output."""
    net, plain = nets.build("resnet18", num_classes=10, width=4), nets.build("resnet18", num_classes=10, width=4)
    assert synchronise_batchnorm(net) is net
    for train_mode in (True, False):
        layers = [m for m in net._skeleton[train_mode].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert layers and all(type(m) is SyncBatchNorm for m in layers)
        assert all(m.training == train_mode for m in layers)
    assert list(net.module.state_dict()) == list(plain.module.state_dict())
    params, state = net.init(torch.Generator().manual_seed(0))
    plain_params, plain_state = plain.init(torch.Generator().manual_seed(0))
    for mine, theirs in ((params, plain_params), (state, plain_state)):
        assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(net.apply(params, state, x, train=False)[0],
                               plain.apply(params, state, x, train=False)[0])
    # One process: train mode is ordinary BatchNorm's too, running statistics included.
    (y, new), (y_plain, new_plain) = net.apply(params, state, x, True), plain.apply(params, state, x, True)
    torch.testing.assert_close(y, y_plain, **TOL)
    for k in new:
        torch.testing.assert_close(new[k], new_plain[k], **TOL)


@pytest.mark.parametrize("n, world", [(100, 2), (101, 4), (7, 3)])
def test_shards_are_disjoint_equal_and_seeded(n, world):
    indices = torch.arange(1000, 1000 + n)
    shards = [distributed.shard(indices, r, world, seed=5) for r in range(world)]
    assert {len(s) for s in shards} == {n // world}
    together = torch.cat(shards)
    assert len(together.unique()) == len(together) and set(together.tolist()) <= set(indices.tolist())
    assert torch.equal(distributed.shard(indices, 1, world, seed=5), shards[1])
    assert not torch.equal(distributed.shard(indices, 0, world, seed=6), shards[0]) or n // world < 2
    with pytest.raises(ValueError):
        distributed.shard(indices, world, world)


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5], sys.argv[6] == "1")
