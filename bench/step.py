"""Training throughput of every family: the eager module a user would write against our functional step.

For each net, at batch 512, bf16 autocast, channels_last, SGD (lr 0.1, momentum 0.9, Nesterov, wd 5e-4):
    (1) eager module     the architecture as an nn.Module, torch.optim.SGD, loss.backward()
    (2) functional       train.step's pure step (functional_call + grad, foreach SGD), eager
    (3) compiled         (2) inside torch.compile
    (4) + kernels        (3) with the Triton kernels, for nets that have them (MobileNetV1, Xception, ViT)
(1)-(3) use PyTorch's own convolution and attention. Also inference (eval step) images/s, eager module and
compiled, and each compiled variant's compile time, apart from its steady-state throughput. Variants are
timed in alternation (common.alternating_medians) on fixed random batches already on the device.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import nets
from bench.common import alternating_medians, device_name, sync
from train.config import Config
from train.optim import zeros_like_tree
from train.step import (
    TrainState,
    as_leaves,
    leaf_step,
    make_eval_step,
    make_train_step,
    maybe_compile,
    precision_for,
    to_memory_format,
    uses_custom_kernels,
)

FAMILIES = ("resnet18", "resnet50", "vgg16", "googlenet", "mobilenetv1", "xception", "vit", "alexnet")
BATCH = 512
CFG = Config(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=BATCH)


def build(name: str, kernels: bool):
    opts = {"kernels": "auto" if kernels else "reference"} if "kernels" in nets.options(name) else {}
    return nets.build(name, 10, **opts)


def batch(device, size=BATCH):
    g = torch.Generator(device=device).manual_seed(0)
    return torch.randn(size, 3, 32, 32, device=device, generator=g), torch.randint(0, 10, (size,), device=device)


def eager_module_step(name, device, precision):
    """(1): what a user writes: nn.Module, torch.optim.SGD, autocast, channels_last."""
    net = build(name, kernels=False)
    params, state = net.init(torch.Generator().manual_seed(0), device)
    module = net.to_module(params, state, device).train()
    if precision.channels_last:
        module = module.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(module.parameters(), lr=CFG.lr, momentum=CFG.momentum, nesterov=CFG.nesterov,
                          weight_decay=CFG.weight_decay)
    x, y = batch(device)
    x = precision.prepare(x)

    def step():
        with precision.context():
            out = module(x)
        loss = F.cross_entropy((out[0] if isinstance(out, tuple) else out).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad(), precision.context():
            module.eval()(x)
        module.train()

    return step, infer


def functional_step(name, device, precision, compiled: bool, kernels: bool):
    """(2)-(4): train.step's step; state carried from call to call as in training."""
    net = build(name, kernels)
    params, state = net.init(torch.Generator().manual_seed(0), device)
    params = to_memory_format(params, precision)
    ts = TrainState(params, state, zeros_like_tree(params))
    gradients = "autograd" if uses_custom_kernels(net, device) else "func"
    step_fn = maybe_compile(make_train_step(net, CFG, precision, gradients), compiled, gradients)
    if gradients == "autograd":
        step_fn, ts = leaf_step(step_fn), as_leaves(ts)
    evaluate = maybe_compile(make_eval_step(net, precision), compiled)
    x, y = batch(device)
    lr = torch.full((1,), CFG.lr, device=device)[0]
    holder = [ts]

    def step():
        holder[0], _ = step_fn(holder[0], (x, y), lr)

    def infer():
        evaluate(holder[0].params, holder[0].state, x, y)

    return step, infer


def warm(fn, device, calls=3) -> float:
    """Seconds for the first `calls` calls (compilation and autotuning included)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return time.perf_counter() - t0


def measure_net(name, device, calls, rounds) -> list[dict]:
    precision = precision_for(device, "auto")
    has_kernels = "kernels" in nets.options(name)
    makers = {
        "(1) eager module": lambda: eager_module_step(name, device, precision),
        "(2) functional": lambda: functional_step(name, device, precision, compiled=False, kernels=False),
        "(3) compiled": lambda: functional_step(name, device, precision, compiled=True, kernels=False),
    }
    if has_kernels:
        makers["(4) compiled + kernels"] = lambda: functional_step(name, device, precision, True, True)
    trains, infers, compile_s = {}, {}, {}
    for variant, make in makers.items():
        torch._dynamo.reset()
        trains[variant], infers[variant] = make()
        compile_s[variant] = warm(trains[variant], device) + warm(infers[variant], device)
    steady = alternating_medians(trains, device, calls, rounds)
    inference = alternating_medians({v: infers[v] for v in ("(1) eager module", list(infers)[-1])}, device,
                                    calls, rounds)
    base = BATCH / steady["(1) eager module"]
    rows = []
    for variant in makers:
        ips = BATCH / steady[variant]
        rows.append({
            "net": name, "variant": variant, "train images/s": ips, "vs (1)": ips / base,
            "inference images/s": BATCH / inference[variant] if variant in inference else None,
            "warm-up s (compile)": compile_s[variant],
        })
    return rows


def measure(device: str = "cuda", quick: bool = False, names=None) -> dict:
    device = torch.device(device)
    names = names or FAMILIES
    calls, rounds = (5, 3) if quick else (20, 5)
    rows = [row for name in names for row in measure_net(name, device, calls, rounds)]
    summary = {}
    for name in names:
        per = {r["variant"]: r["vs (1)"] for r in rows if r["net"] == name}
        summary[f"{name} (3)/(1)"] = per["(3) compiled"]
        if "(4) compiled + kernels" in per:
            summary[f"{name} (4)/(1)"] = per["(4) compiled + kernels"]
    return {
        "title": f"Training step, batch {BATCH}, bf16 autocast, channels_last, on {device_name(device)}",
        "columns": ["net", "variant", "train images/s", "vs (1)", "inference images/s", "warm-up s (compile)"],
        "rows": rows,
        "summary": summary,
        "notes": [
            f"Median of {rounds} alternating rounds of {calls} steps per variant, after 3 warm-up steps "
            "(whose time, compilation included, is the last column together with 3 warm-up inference calls).",
            "Inference: the eager module (no_grad) and the last variant's eval step, batch 512.",
        ],
    }
