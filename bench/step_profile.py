"""Where a training step's GPU time goes: `python3 -m bench.step_profile [nets=resnet18,vgg16] [out=DIR]`.

For each net, the eager module (1) and the compiled functional step (3) of bench/step.py (batch 512, bf16
autocast, channels_last, cudnn.benchmark on), and (4), (3) with the Triton kernels, for the nets that have
them, are warmed up, then STEPS steps of each run under
torch.profiler. Every CUDA kernel's time is put in one category by its name (`category`), and the report
gives, per variant, the milliseconds per step of each category, the GPU-busy total against the step's wall
time (from a synchronised timing of the same steps: a busy share well under 100% means the GPU waits for
the CPU), and the kernels that take the most time (the .json: every kernel, by its full name, so that two
variants' kernels can be compared). Writes DIR/step-profile-<gpu>.md and .json (default bench/results).
A diagnosis for bench/step.py's ratios, not a benchmark: the profiler's own overhead is in the wall time.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from itertools import groupby, islice
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import device_slug, header, publish, seconds_per_call, to_markdown
from bench.step import BASELINE, BATCH, COMPILED, KERNELS, make_variant, variants_of, warm

STEPS = 10
TOP = 12  # kernels listed per variant
NETS = ("resnet18", "vgg16")  # the default nets: the two furthest from issue 6's targets
# (category, substrings of the kernel name, lower-case), first match wins: cuDNN's and CUTLASS's convolution
# kernels name their pass (dgrad: grad-input, wgrad: grad-weight); Inductor's generated kernels start triton_;
# kernels/depthwise/'s start _dwconv (before "conv", which would take them). PyTorch's own depthwise kernels
# (aten's conv_depthwise2d_*) name themselves; cuDNN's channels_last ones are conv2d_, dgrad2d_ and
# wgrad2d_c1_k1_nhwc* (c1_k1: one channel in and out a group, presumably). In MobileNetV1's step (H200,
# `python -m bench.step_profile nets=mobilenetv1`) they took 1.22 ms a step without the Triton kernels and 0.32
# ms with them, which replace most depthwise layers and no other; none is in the ResNet-18 and VGG-16 tables.
CATEGORIES = (
    ("depthwise (kernels/, Triton)", ("_dwconv",)),
    ("depthwise (PyTorch)", ("depthwise", "2d_c1_k1_")),
    ("Inductor (fused Triton)", ("triton_",)),  # first: Inductor names kernels after the ops fused in them
    ("conv grad-weight", ("wgrad",)),
    ("conv grad-input", ("dgrad",)),
    ("conv forward", ("fprop", "conv", "implicit_gemm", "xmma", "cudnn", "nhwc", "sm90_")),
    ("gemm", ("gemm", "cutlass", "cublas")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_")),
    ("optimizer (foreach)", ("multi_tensor", "foreach")),
    ("reduction", ("reduce",)),
    ("copy / layout", ("copy", "memcpy", "memset", "transpose", "nchwtonhwc", "nhwctonchw")),
    ("elementwise", ("elementwise", "vectorized")),
)


def category(kernel: str) -> str:
    name = kernel.lower()
    return next((cat for cat, keys in CATEGORIES if any(k in name for k in keys)), "other")


def kernel_times(step, steps: int = STEPS) -> dict[str, float]:
    """µs of GPU time per step for each kernel name, over `steps` profiled steps."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if e.self_device_time_total > 0:
            times[e.key] += e.self_device_time_total / steps
    return dict(times)


def breakdown(name: str, variant: str, times: dict[str, float], wall_us: float) -> tuple[list[dict], list[dict]]:
    """(category rows, every kernel's row, longest first) of one variant."""
    busy = sum(times.values())
    per_cat: dict[str, float] = defaultdict(float)
    for kernel, us in times.items():
        per_cat[category(kernel)] += us
    cats = [{"net": name, "variant": variant, "category": c, "ms per step": us / 1e3, "% of GPU time": 100 * us / busy}
            for c, us in sorted(per_cat.items(), key=lambda kv: -kv[1])]
    cats.append({"net": name, "variant": variant, "category": "GPU busy / wall", "ms per step": busy / 1e3,
                 "% of GPU time": 100 * busy / wall_us})
    every = [{"net": name, "variant": variant, "kernel": k, "category": category(k), "ms per step": us / 1e3}
             for k, us in sorted(times.items(), key=lambda kv: -kv[1])]
    return cats, every


def measure(names=NETS) -> dict:
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cats, kernels, summary = [], [], {}
    for name in names:
        for variant in (v for v in (BASELINE, COMPILED, KERNELS) if v in variants_of(name)):
            step = make_variant(name, device, variant)[0]  # built, and compiled, as the step bench's
            warm(step, device, calls=5)
            wall_us = 1e6 * seconds_per_call(step, device, STEPS)
            c, every = breakdown(name, variant, kernel_times(step), wall_us)
            cats += c
            kernels += every
            summary[f"{name} {variant} images/s"] = BATCH / (wall_us / 1e6)
    return {"title": f"Where the training step's GPU time goes, batch {BATCH}, bf16, channels_last, "
                     "cudnn.benchmark on", "columns": ["net", "variant", "category", "ms per step", "% of GPU time"],
            "rows": cats, "kernels": kernels, "summary": summary}


def report(result: dict, head: dict) -> str:
    """The markdown: header, category table, and each variant's TOP kernels (the .json keeps every kernel)."""
    per_variant = groupby(result["kernels"], key=lambda r: (r["net"], r["variant"]))  # each longest first
    rows = [dict(r, kernel=r["kernel"][:110]) for _, kernels in per_variant for r in islice(kernels, TOP)]
    top = {"title": "The kernels that take the most GPU time", "columns": ["net", "variant", "kernel", "category",
                                                                           "ms per step"], "rows": rows}
    return "\n".join([f"# {result['title']}", "", "- " + ", ".join(f"{k}: {v}" for k, v in head.items()), "",
                      to_markdown(result), to_markdown(top)])


def main(argv: list[str]) -> int:
    opts = dict(word.partition("=")[::2] for word in argv)
    if not torch.cuda.is_available():
        print("skipping the profile: it measures the GPU and no CUDA device is visible")
        return 0
    result = measure(opts["nets"].split(",") if opts.get("nets") else NETS)
    head = header(torch.device("cuda"), "python3 -m bench.step_profile " + " ".join(argv))
    device = torch.device("cuda")
    folder = Path(opts.get("out") or Path(__file__).resolve().parent / "results")
    publish(folder / f"step-profile-{device_slug(device)}", result, head, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
