"""pytest-benchmark view of bench/step.py: `pytest --benchmark-only`.

On CUDA: ResNet-18's eager-module step against the compiled functional step, without and with CUDA graphs, at
batch 512. Without CUDA: a narrow ResNet-18 (net.width=8) at batch 32 on the CPU, eager module against the
eager functional step, so the command always measures something.
"""

import pytest
import torch

import bench.step as step_bench
import nets
from train.optim import zeros_like_tree
from train.step import TrainState, make_train_step, precision_for

CUDA = torch.cuda.is_available()


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("variant", ["eager_module", "compiled", "compiled_cudagraphs"])
def test_resnet18_step_gpu(benchmark, variant):
    device = torch.device("cuda")
    precision = precision_for(device, "auto")
    if variant == "eager_module":
        step, _ = step_bench.eager_module_step("resnet18", device, precision)
    else:
        step, _ = step_bench.functional_step("resnet18", device, precision, compiled=True, kernels=False,
                                             cudagraphs=variant == "compiled_cudagraphs")
    step_bench.warm(step, device)
    benchmark.pedantic(lambda: (step(), torch.cuda.synchronize()), rounds=20, iterations=1, warmup_rounds=2)


@pytest.mark.skipif(CUDA, reason="the CPU subset runs only where there is no GPU")
@pytest.mark.parametrize("variant", ["eager_module", "functional"])
def test_small_resnet_step_cpu(benchmark, variant):
    net = nets.build("resnet18", 10, width=8)
    params, state = net.init(torch.Generator().manual_seed(0))
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    if variant == "eager_module":
        module = net.to_module(params, state).train()
        opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

        def run():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(x), y).backward()
            opt.step()
    else:
        step = make_train_step(net, step_bench.CFG, precision_for(torch.device("cpu"), "auto"))
        holder = [TrainState(params, state, zeros_like_tree(params))]
        lr = torch.tensor(0.1)

        def run():
            holder[0], _ = step(holder[0], (x, y), lr)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
