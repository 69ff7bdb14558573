"""Training throughput of every family: the eager module a user would write against our functional step.

For each net, at batch 512, bf16 autocast, channels_last, SGD (lr 0.1, momentum 0.9, Nesterov, wd 5e-4):
    (1) eager module     the architecture as an nn.Module, torch.optim.SGD, loss.backward()
    (2) functional       train.step's pure step (functional_call + grad, foreach SGD), eager
    (3) compiled         (2) inside torch.compile
    (4) + kernels        (3) with the Triton kernels, for nets that have them (MobileNetV1, Xception, ViT)
    (3g), (4g)           (3), (4) replayed as CUDA graphs with the train state in persistent buffers written
                         in place (train.step.compile_in_place), as the trainer runs them (cudagraphs=auto)
`variants=` (bench.report) picks some of them by label, e.g. 1,3g,4g; (1) is always timed, as the reference.
(1)-(3) use PyTorch's own convolution and attention. Also inference (eval step) images/s, eager module and
compiled, and each compiled variant's compile time, apart from its steady-state throughput. Variants are
timed in alternation (common.alternating_medians) on fixed random batches already on the device. On CUDA
every variant is timed twice, with cudnn.benchmark off (PyTorch's default: cuDNN's heuristics choose each
convolution's algorithm) and on (cuDNN times its algorithms at each new shape's first call, as many CIFAR
training scripts ask for), each against the (1) of the same setting; compiled graphs call cuDNN for their
convolutions too, and read the flag at run time. CUDA graphs (3g), (4g) keep the algorithms of their recording,
so they are recorded and timed with it on only (graph_setting).
"""

from __future__ import annotations

import contextlib
import sys
import time

import torch
import torch.nn.functional as F

import nets
from bench.common import alternating_medians, device_name, sync
from bench.parallel import run_jobs, work
from train.config import Config
from train.optim import zeros_like_tree
from train.step import (
    TrainState,
    choose_kernel_tuning,
    gradients_for,
    make_eval_step,
    make_train_step,
    maybe_compile,
    precision_for,
    prepare_step,
    to_memory_format,
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


def functional_step(name, device, precision, compiled: bool, kernels: bool, cudagraphs: bool = False):
    """(2)-(4g): train.step's step, built as train.loop builds it; state carried from call to call."""
    net = build(name, kernels)
    params, state = net.init(torch.Generator().manual_seed(0), device)
    params = to_memory_format(params, precision)
    ts = TrainState(params, state, zeros_like_tree(params))
    gradients = gradients_for(net, device)
    step_fn, ts = prepare_step(make_train_step(net, CFG, precision, gradients), ts, gradients, compiled, cudagraphs)
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


BASELINE = "(1) eager module"
FUNCTIONAL = "(2) functional"
COMPILED = "(3) compiled"
KERNELS = "(4) compiled + kernels"
# No commas: the worker gets variants comma-joined. "(state in place)": the graphs overwrite the train state's
# persistent buffers (train.step.compile_in_place) rather than copying it in and out.
GRAPHS = "(3g) compiled + CUDA graphs (state in place)"
KERNELS_GRAPHS = "(4g) compiled + kernels + CUDA graphs (state in place)"
WITH_KERNELS = (KERNELS, KERNELS_GRAPHS)  # the variants that run the Triton kernels
GRAPH_VARIANTS = (GRAPHS, KERNELS_GRAPHS)  # the variants replayed as CUDA graphs
VARIANTS = (BASELINE, FUNCTIONAL, COMPILED, GRAPHS, KERNELS, KERNELS_GRAPHS)


def label(variant: str) -> str:
    """A variant's short label, what variants= takes and the summary writes in parentheses: "3g" for GRAPHS."""
    return variant[1:variant.index(")")]


VARIANT_LABELS = tuple(label(v) for v in VARIANTS)


def variants_of(name: str, only: tuple[str, ...] = ()) -> list[str]:
    """The variants measured for `name`: all that apply, or those whose label ("1", "3g", ...) is in `only`;
    the eager baseline (1) always, as every ratio's reference."""
    kernels = "kernels" in nets.options(name)
    every = [v for v in VARIANTS if kernels or v not in WITH_KERNELS]
    return [v for v in every if v == BASELINE or not only or label(v) in only]


def make_variant(name, device, variant) -> tuple:
    """(train fn, inference fn) of one variant of `name`, not yet called: compiled variants compile, and graph
    variants record their CUDA graphs, at their first calls."""
    precision = precision_for(device, "auto")
    choose_kernel_tuning(CFG.inductor_autotune)  # Inductor's kernels built as the trainer's compile builds them
    torch._dynamo.reset()
    if variant == BASELINE:
        return eager_module_step(name, device, precision)
    compiled, kernels = variant != FUNCTIONAL, variant in WITH_KERNELS
    return functional_step(name, device, precision, compiled, kernels, cudagraphs=variant in GRAPH_VARIANTS)


def prepare_net(name, device, variants=None, gpu_turn=None) -> tuple[dict, dict, dict]:
    """The variants of `name` (default: all) built and warmed up (compiled): (train fns, inference fns,
    warm-up seconds). Graph variants record their graphs here, under graph_setting(device). `gpu_turn()`, a
    context manager if given, is held while the eager variants warm up (their first steps need the most memory)
    so that processes compiling side by side do not run them all at once."""
    trains, infers, compile_s = {}, {}, {}
    try:
        for variant in variants or variants_of(name):
            torch.backends.cudnn.benchmark = variant in GRAPH_VARIANTS and graph_setting(device)
            trains[variant], infers[variant] = make_variant(name, device, variant)
            eager = "compiled" not in variant
            with gpu_turn() if gpu_turn and eager else contextlib.nullcontext():
                compile_s[variant] = warm(trains[variant], device) + warm(infers[variant], device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # free the warm-up's activations for other processes
    finally:
        torch.backends.cudnn.benchmark = False
    return trains, infers, compile_s


CUDNN_LABELS = {False: "off", True: "on"}  # the rows' "cudnn.benchmark" cell per setting


def cudnn_settings(device) -> tuple[bool, ...]:
    """The cudnn.benchmark values each variant is timed with: both on CUDA, the one that exists elsewhere."""
    return (False, True) if device.type == "cuda" else (False,)


def graph_setting(device) -> bool:
    """The one cudnn.benchmark value graph variants are recorded and timed with: on where cuDNN exists, as the
    trainer records its graphs (cudnn_benchmark=true). A graph replays the convolution algorithms cuDNN chose
    when it was recorded, whatever the flag says later, so a graph row under the other setting would time the
    recording's algorithms (ResNet-18's (3g) on an H100: 76.9k images/s recorded with it on, 73.5k recorded
    under cuDNN's heuristics; docs/benchmarks.md); recording again would mean compiling again, one net at a
    time, in the timing half of a parallel run."""
    return cudnn_settings(device)[-1]


def time_net(name, device, prepared, calls, rounds) -> list[dict]:
    """The steady-state rows of one prepared net (prepare_net), per cudnn.benchmark setting: variants timed in
    alternation, each against the eager module (1) timed beside it with the same setting; graph variants under
    the setting they were recorded with only (graph_setting)."""
    all_trains, infers, compile_s = prepared
    recorded = graph_setting(device)
    rows = []
    try:
        for bench in cudnn_settings(device):
            torch.backends.cudnn.benchmark = bench
            trains = {v: f for v, f in all_trains.items() if v not in GRAPH_VARIANTS or bench == recorded}
            shown = {v: infers[v] for v in (BASELINE, list(trains)[-1])}
            for fn in (*trains.values(), *shown.values()):  # with it on, cuDNN times algorithms at first calls
                warm(fn, device, calls=3)
            steady = alternating_medians(trains, device, calls, rounds)
            inference = alternating_medians(shown, device, calls, rounds)
            base = BATCH / steady[BASELINE]
            for variant in trains:
                ips = BATCH / steady[variant]
                rows.append({
                    "net": name, "variant": variant, "cudnn.benchmark": CUDNN_LABELS[bench],
                    "train images/s": ips, "vs (1)": ips / base,
                    "inference images/s": BATCH / inference[variant] if variant in inference else None,
                    "warm-up s (compile)": compile_s[variant],
                })
    finally:
        torch.backends.cudnn.benchmark = False
    return rows


def measure_net(name, device, calls, rounds, only: tuple[str, ...] = ()) -> list[dict]:
    return time_net(name, device, prepare_net(name, device, variants_of(name, only)), calls, rounds)


def parallel_jobs(names, only: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    """(net, variants) per process. A net with kernels has a second process for (4) and (4g), with its own
    eager baseline (1), so that neither waits for the other's compilation."""
    jobs = []
    for name in names:
        variants = variants_of(name, only)
        jobs.append((name, [v for v in variants if v not in WITH_KERNELS]))
        if any(v in WITH_KERNELS for v in variants):
            jobs.append((name, [BASELINE, *(v for v in variants if v in WITH_KERNELS)]))
    return jobs


def measure_in_parallel(names, device, calls, rounds, deadline_s: float,
                        only: tuple[str, ...] = ()) -> tuple[list[dict], list[str]]:
    """One process per job (parallel_jobs) through bench.parallel: compiled a few at a time, then each timed
    alone. Failed and late jobs are named in the returned notes; the others' rows are kept."""
    jobs = parallel_jobs(names, only)
    results, problems = run_jobs("bench.step", [[name, ",".join(variants), str(calls), str(rounds)]
                                               for name, variants in jobs], deadline_s)
    rows = []
    for job_rows in results:
        rows = merge_rows(rows, job_rows) if job_rows else rows
    order = {name: k for k, name in enumerate(names)}
    rows.sort(key=lambda r: (order[r["net"]], r.get("cudnn.benchmark", ""), r["variant"]))
    return rows, problems


def merge_rows(rows: list[dict], job_rows: list[dict]) -> list[dict]:
    """rows + a job's rows, keeping one eager-baseline row per net: a second job's (1) only normalises its own
    variant's "vs (1)"."""
    key = lambda r: (r["net"], r.get("cudnn.benchmark"))  # noqa: E731
    seen = {key(r) for r in rows if r["variant"] == BASELINE}
    return rows + [r for r in job_rows if not (r["variant"] == BASELINE and key(r) in seen)]


def measure(device: str = "cuda", quick: bool = False, names=None, parallel: bool = False,
            deadline_s: float = 3600, only: tuple[str, ...] = ()) -> dict:
    """parallel=True (CUDA): compile in parallel processes, time one at a time (measure_in_parallel).
    only: the variants to measure by label (variants_of)."""
    device = torch.device(device)
    names = names or FAMILIES
    calls, rounds = (5, 3) if quick else (10, 5)
    problems = []
    if parallel and device.type == "cuda":
        rows, problems = measure_in_parallel(names, device, calls, rounds, deadline_s, only)
    else:
        rows = [row for name in names for row in measure_net(name, device, calls, rounds, only)]
    summary = {}
    for name in names:
        for bench, setting in CUDNN_LABELS.items():
            per = {r["variant"]: r["vs (1)"] for r in rows
                   if r["net"] == name and r.get("cudnn.benchmark") == setting}
            tag = " cudnn.benchmark" if bench else ""
            for variant in (COMPILED, GRAPHS, KERNELS, KERNELS_GRAPHS):
                if variant in per:
                    summary[f"{name} ({label(variant)})/(1){tag}"] = per[variant]
            for kernels, without in ((KERNELS, COMPILED), (KERNELS_GRAPHS, GRAPHS)):
                if kernels in per and without in per:  # the kernels' own effect on the whole compiled step
                    summary[f"{name} ({label(kernels)})/({label(without)}){tag}"] = per[kernels] / per[without]
    return {
        "title": f"Training step, batch {BATCH}, bf16 autocast, channels_last, on {device_name(device)}",
        "columns": ["net", "variant", "cudnn.benchmark", "train images/s", "vs (1)", "inference images/s",
                    "warm-up s (compile)"],
        "rows": rows,
        "summary": summary,
        "notes": [
            f"Median of {rounds} alternating rounds of {calls} steps per variant (on CUDA, CUDA events around "
            "steps queued behind an untimed one: bench.common.seconds_per_call), after 3 warm-up steps "
            "(whose time, compilation included, is the last column together with 3 warm-up inference calls).",
            "Inference: the eager module (no_grad) and the last variant's eval step, batch 512.",
        ] + ([
            "(3g) and (4g) are recorded with cudnn.benchmark on, as the trainer records its graphs, and timed "
            "under that setting only: a graph replays the convolution algorithms of its recording.",
        ] if device.type == "cuda" else []) + ([
            "parallel=true: one process per net, compiled a few at a time (compile slots), then each was timed "
            "alone; a net with kernels had two, (1)-(3g) and (1)+(4)+(4g), each variant against the (1) timed "
            "in its own process, so (4)/(3) is the ratio of those two ratios. Warm-up seconds overlap other processes' "
            "compiling.",
        ] if parallel and device.type == "cuda" else []) + problems,
    }


def job_prepare(name, variants, calls, rounds, turn):
    """measure_in_parallel's job, its compile half (bench.parallel.work)."""
    return name, prepare_net(name, torch.device("cuda"), variants.split(","), turn), int(calls), int(rounds)


def job_measure(job) -> list[dict]:
    """measure_in_parallel's job, its timing half, alone on the GPU."""
    name, prepared, calls, rounds = job
    return time_net(name, torch.device("cuda"), prepared, calls, rounds)


if __name__ == "__main__":  # one job of measure_in_parallel: dir index count slots net variants calls rounds
    work(sys.argv[1:], job_prepare, job_measure)
