"""Members in one step (train/members.py): images/s summed over K members against K = 1 of the same net.

For each net, the trainer's step as `members=K` builds it (members_form: fold, one net K times as wide,
nets/fold.py; vmap; unroll, the single run's step per member; auto, the trainer's choice among them,
train.step.auto_members_form, which the rows name; compiled and replayed as a CUDA graph with the state in
place), at batch 512 per member, bf16 autocast, channels_last, cudnn.benchmark on (as the trainer),
SGD with Nesterov momentum, for K in `ks` (default 1, 2, 4, 8) and each members_form in `forms` (default the
trainer's auto; K = 1 is the single run's step, one for all forms), timed in alternation
(common.alternating_medians) on fixed random batches already on the device. The nets run PyTorch's own
convolution and attention (net.kernels=reference) at every K, so K = 1 runs the same code as the other K; the
rows "mobilenetv1 triton" and "vit triton" run the Triton kernels at every K, as a single run does (the
trainer's members runs take them only when unrolled: train.members.build_net). A K that does not fit
in the GPU's memory is reported as such, not timed.

parallel=true compiles the nets in parallel processes, then times each alone (bench.parallel).

e2e=true adds the end-to-end comparison: `python -m train` with members=K against K single runs of the same
seeds one after another (each with the net's Triton kernels where it has them), wall seconds from each
command's start to its exit, compile included, with `epochs=` (default 3; `recipe`: the default recipe's own)
on data= (default .data/cifar10-jpeg.tar.gz), one members run per form (e2e=only: those runs without the
step's timing); runs=members or runs=0,1 (seeds) makes some of those runs only, and cache=<folder> names the
folder of compile caches that parts made one after another share (end_to_end).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time

import torch

import nets
from bench.common import alternating_medians, device_name
from bench.parallel import run_jobs, work
from bench.step import warm
from train.config import Config
from train.members import batchnorm_where_vmapped, init
from train.optim import init_state
from train.step import (
    TrainState,
    choose_cudnn_algorithms,
    choose_kernel_tuning,
    gradients_for,
    make_train_step,
    members_form,
    precision_for,
    prepare_step,
    to_memory_format,
)

BATCH = 512  # per member
KS = (1, 2, 4, 8)
# (label, model, net options): the four, PyTorch's operators at every K; ResNet-18 at width 16 is the
# small net members help most. "mobilenetv1 triton": its depthwise layers by the Triton kernel at every K (with
# members_form=fold: one kernel over K times the channels, the gradient by torch.autograd.grad,
# train.step.gradients_for). "vit triton": the Triton attention at every K, as a single ViT run and unrolled
# members take it (vmap cannot train it: train.members.check_supported).
NETS = (("resnet18 width 16", "resnet18", {"width": 16}), ("mobilenetv1", "mobilenetv1", {}),
        ("resnet18", "resnet18", {}), ("vit", "vit", {}), ("mobilenetv1 triton", "mobilenetv1", {"kernels": "auto"}),
        ("vit triton", "vit", {"kernels": "auto"}))


def build(model: str, options: dict):
    reference = {"kernels": "reference"} if "kernels" in nets.options(model) else {}
    return nets.build(model, 10, **{**reference, **options})


def form_label(model: str, options: dict, k: int, form: str) -> str:
    """A row's form: `form`, or for auto the form the trainer chooses for this net, "auto (fold)"."""
    return f"auto ({members_form(Config(members=k), build(model, options))})" if form == "auto" else form


def members_step(model: str, options: dict, k: int, device, batch: int = BATCH, graphs: bool = True,
                 form: str = "auto"):
    """A zero-argument function that runs one step of K members as the trainer does (members_form=form), its
    state carried over."""
    cfg = Config(model=model, members=k, batch_size=batch, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                 members_form=form)
    precision = precision_for(device, "auto")
    choose_cudnn_algorithms(device, cfg.cudnn_benchmark)  # as the trainer: cuDNN times its algorithms per shape
    choose_kernel_tuning(cfg.inductor_autotune)  # and Inductor builds its kernels as the trainer's compile does
    net = build(model, options)
    batchnorm_where_vmapped(cfg, net)  # as the trainer's members runs (train/members.py)
    params, state = init(net, cfg, device)
    params = to_memory_format(params, precision)
    ts = TrainState(params, state, init_state(cfg.optimizer, params, cfg.members))
    compiled = device.type == "cuda"
    gradients = gradients_for(net, device)
    step, ts = prepare_step(make_train_step(net, cfg, precision, gradients), ts, gradients, compiled,
                            graphs and compiled)
    g = torch.Generator(device=device).manual_seed(0)
    shape = (k,) if k > 1 else ()
    x = torch.randn(*shape, batch, 3, 32, 32, device=device, generator=g)
    y = torch.randint(0, 10, (*shape, batch), device=device, generator=g)
    lr = torch.full((1,), cfg.lr, device=device)[0]
    holder = [ts]

    def run():
        holder[0], _ = step(holder[0], (x, y), lr)

    return run


def prepare(model: str, options: dict, ks, device, batch: int = BATCH, ceiling: bool = False,
            forms=("auto",)) -> tuple:
    """(steps by (form, K), warm-up seconds by (form, K), rows for those that did not fit in the GPU's memory,
    and with ceiling the single net's step at K times the batch by K > 1). K = 1 is the single run's step
    whatever the form: built once, as ("single", 1)."""
    steps, warm_s, missing, wide = {}, {}, [], {}
    for k in ks:
        for asked in ("single",) if k == 1 else forms:
            form = form_label(model, options, k, asked)
            torch._dynamo.reset()
            try:
                steps[form, k] = members_step(model, options, k, device, batch, form=asked if k > 1 else "auto")
                warm_s[form, k] = warm(steps[form, k], device)
                if ceiling and k > 1 and k not in wide:  # one net at K times the images: the members' bound
                    torch._dynamo.reset()
                    wide[k] = members_step(model, options, 1, device, k * batch)
                    warm(wide[k], device)
            except torch.OutOfMemoryError:
                steps.pop((form, k), None)
                wide.pop(k, None)
                missing.append({"form": form, "K": k, "images/s (all members)": None, "vs K=1": None,
                                "per member vs K=1": None, "warm-up s (compile)": None, "note": "out of GPU memory"})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return steps, warm_s, missing, wide


def time_steps(label: str, prepared, device, calls: int, rounds: int, batch: int = BATCH) -> list[dict]:
    """The prepared Ks timed in alternation, each against the K = 1 timed beside it; with the ceiling's steps,
    the single net at K times the batch too, against the same K = 1."""
    steps, warm_s, missing, wide = prepared
    medians = alternating_medians({**{f"{form} {k}": f for (form, k), f in steps.items()},
                                   **{f"1 x {k}": f for k, f in wide.items()}}, device, calls, rounds)
    base = batch / medians["single 1"] if "single 1" in medians else None
    rows = [{"net": label, **row} for row in missing]
    for form, k in steps:
        ips = k * batch / medians[f"{form} {k}"]
        rows.append({"net": label, "form": form, "K": k, "images/s (all members)": ips,
                     "vs K=1": ips / base if base else None, "per member vs K=1": ips / k / base if base else None,
                     "warm-up s (compile)": warm_s[form, k], "note": ""})
        if k in wide and base:
            rows[-1]["one net, K x batch, vs K=1"] = k * batch / medians[f"1 x {k}"] / base
    return sorted(rows, key=lambda r: (r["K"], r["form"]))


def chosen_rows(names) -> list[int]:
    """Indices in NETS named by `names` (None: all): a name picks the row of that label ("mobilenetv1": not its
    "mobilenetv1 triton" row), or, where no row has that label, every row of that model."""
    labels = {n[0] for n in NETS}
    return [i for i, n in enumerate(NETS)
            if names is None or n[0] in names or (n[1] in names and n[1] not in labels)]


def measure_net(label: str, model: str, options: dict, ks, device, calls: int, rounds: int,
                batch: int = BATCH, ceiling: bool = False, forms=("auto",)) -> list[dict]:
    prepared = prepare(model, options, ks, device, batch, ceiling, forms)
    return time_steps(label, prepared, device, calls, rounds, batch)


def parallel_jobs(chosen: list[int], ks, ceiling: bool = False, forms=("auto",)) -> list[list[str]]:
    """[net's index in NETS, "1,2,4,8", ceiling, "fold,unroll"] per process: a net's Ks and forms in one
    process, timed in alternation."""
    return [[str(i), ",".join(str(k) for k in ks), str(ceiling).lower(), ",".join(forms)] for i in chosen]


def job_prepare(index, ks, ceiling, forms, calls, rounds, turn):
    """A parallel job's compile half (bench.parallel.work)."""
    label, model, options = NETS[int(index)]
    device = torch.device("cuda")
    prepared = prepare(model, options, [int(k) for k in ks.split(",")], device, ceiling=ceiling == "true",
                       forms=forms.split(","))
    return label, prepared, device, int(calls), int(rounds)


def job_measure(job) -> list[dict]:
    """A parallel job's timing half, alone on the GPU."""
    label, prepared, device, calls, rounds = job
    return time_steps(label, prepared, device, calls, rounds)


def end_to_end(label: str, model: str, options: dict, k: int, epochs: int | None, data: str,
               runs: list | None = None, cache: str | None = None, forms=("auto",)) -> list[dict]:
    """Wall seconds of one `members=k` run per members_form in `forms` against k single runs of its seeds one
    after another, as a user would run them (one row per form, the single runs shared): the single runs take
    the net's Triton kernels where they have them (a members run, only with unroll: train.members.build_net).
    Each members run has a compile cache of its own and the single runs one between them, each empty at the
    start, so the first single run compiles and the next ones find its kernels. epochs=None: the recipe's own.

    runs: which to make, "members" (one run per form) and the single runs' seeds 0..k-1 (default: all, in that
    order), so that a comparison longer than one sitting can be made in parts, one after another on one
    machine; they then name the folder holding the compile caches (`cache`; default: a fresh one, removed
    afterwards). The totals and their ratio are given when one call made the members run and all k singles."""
    words = [f"model={model}", f"data={data}", "download=false", "progress=false",
             *([f"epochs={epochs}"] if epochs else []), *(f"net.{key}={value}" for key, value in options.items())]
    names = []
    for run in (str(r) for r in (runs or ["members", *range(k)])):
        names += [f"members-{form}" for form in forms] if run == "members" else [run]
    walls = {}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(tempfile.TemporaryDirectory())
        root = cache or stack.enter_context(tempfile.TemporaryDirectory())
        for name in names:
            form = name.removeprefix("members-") if name.startswith("members-") else None
            more = [f"members={k}", f"members_form={form}"] if form else [f"seed={name}", "split_seed=0"]
            folder = f"{root}/{name if form else 'singles'}"
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": f"{folder}/inductor",
                   "TRITON_CACHE_DIR": f"{folder}/triton"}
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "train", *words, *more, f"out={out}/{name}"], check=True,
                           stdout=subprocess.DEVNULL, env=env)
            walls[name] = time.perf_counter() - t0
            # One line per finished run: a comparison cut short by a time limit still leaves its walls.
            print(f"end_to_end {label} K={k}: {name} {walls[name]:.1f} s", file=sys.stderr, flush=True)
    singles = {s: walls[str(s)] for s in range(k) if str(s) in walls}
    rows = []
    for form in forms:
        row = {"net": label, "form": form_label(model, options, k, form), "K": k, "epochs": epochs or "recipe",
               **({"members=K s": walls[f"members-{form}"]} if f"members-{form}" in walls else {}),
               **{f"seed {s} s": w for s, w in singles.items()}}
        if "members=K s" in row and len(singles) == k:
            apart = sum(singles.values())
            row.update({"K single runs s": apart, "ratio": row["members=K s"] / apart})
        rows.append(row)
    return rows


def measure(device: str = "cuda", quick: bool = False, names=None, ks=KS, e2e: bool = False,
            epochs: int | None = 3, data: str = ".data/cifar10-jpeg.tar.gz", parallel: bool = False,
            deadline_s: float = 3600, runs: list | None = None, cache: str | None = None,
            ceiling: bool = False, forms=("auto",), steps: bool = True) -> dict:
    """parallel=True (CUDA): one process per net (parallel_jobs), compiled side by side, then each timed alone
    (bench.parallel). ceiling=True adds, beside each K > 1, the single net at K times the batch against K = 1:
    the most that filling the GPU with K times the images per step gives that net, which bounds what K members
    can gain (they add the grouped convolutions' own cost). forms: the members step's members_form (each
    timed at every K > 1 against the same K = 1). steps=False (`e2e=only`): the end-to-end runs alone, without
    the step's timing, so that a comparison split into parts spends each part's time on its runs."""
    device = torch.device(device)
    calls, rounds = (3, 3) if quick else (10, 5)
    chosen = chosen_rows(names)
    problems = []
    if not steps:
        rows = []
    elif parallel and device.type == "cuda":
        jobs = [[*job, str(calls), str(rounds)] for job in parallel_jobs(chosen, ks, ceiling, forms)]
        results, problems = run_jobs("bench.members", jobs, deadline_s)
        rows = [row for job_rows in results if job_rows for row in job_rows]
    else:
        rows = [row for i in chosen
                for row in measure_net(*NETS[i], ks, device, calls, rounds, ceiling=ceiling, forms=forms)]
    result = {
        "title": f"Members in one step (members_form={','.join(forms)}), batch {BATCH} per member, bf16 autocast, on "
                 f"{device_name(device)}",
        "columns": ["net", "form", "K", "images/s (all members)", "vs K=1", "per member vs K=1",
                    "warm-up s (compile)",
                    *(["one net, K x batch, vs K=1"] if ceiling else []), "note"],
        "rows": rows,
        "summary": {f"{r['net']} {r['form']} K={r['K']}/K=1": r["vs K=1"] for r in rows
                    if r["vs K=1"] and r["K"] > 1},
        "notes": ([f"Median of {rounds} alternating rounds of {calls} steps per K (on CUDA, CUDA events around "
                  "steps queued behind an untimed one) after 3 warm-up steps (their time, "
                  "compilation included, is the warm-up column); PyTorch's convolution and attention "
                  "(net.kernels=reference) at every K (\"... triton\" rows: the Triton kernels), "
                  "cudnn.benchmark on as in the trainer."] if steps else []) + ([
        "parallel=true: one process per net, compiled side by side, then each timed alone; warm-up seconds "
        "overlap other processes' compiling."] if parallel else []) + problems,
    }
    if e2e:
        result["end_to_end"] = [row for i in chosen for k in ks if k > 1
                                for row in end_to_end(*NETS[i], k, epochs, data, runs, cache, forms)]
        result["notes"].append(f"end_to_end: `python -m train members=K members_form=<form>"
                               f"{f' epochs={epochs}' if epochs else ''}` against K single runs `seed=s "
                               "split_seed=0` one after another, wall seconds from the command to its exit, "
                               "compile included; each members run and the single runs together start from an "
                               "empty compile cache.")
    return result


if __name__ == "__main__":  # one job of measure(parallel=True): dir index count slots net ks calls rounds
    work(sys.argv[1:], job_prepare, job_measure)
