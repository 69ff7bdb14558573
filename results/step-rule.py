"""Device experiment for issue 4: does a wider impl="auto" rule pay in the whole step? kernels.depthwise's
triton_preferred sends unfused 16-bit channels_last layers at stride 1 with outputs of 8x8 or more to cuDNN
(from the H100's tiled kernels); with the rows schedule the kernels beat cuDNN at 29 of 30 bf16 channels_last
cases (bench/results/depthwise-h200.md). Per net: (1), (3g) and (4g) as `python3 -m bench step` builds them
(bench/step.py), and (4g) once more with triton_preferred true for every 16-bit layer, all four timed in
alternation in one process (bench/step.py's time_net, both cudnn.benchmark settings).
Usage (on a GPU, from the repository root): python3 results/step-rule.py OUTPREFIX NET...
(writes OUTPREFIX.json and .md, and prints the table)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import header, publish, to_markdown  # noqa: E402
from bench.step import (  # noqa: E402
    BASELINE,
    BATCH,
    CUDNN_LABELS,
    GRAPHS,
    KERNELS_GRAPHS,
    prepare_net,
    time_net,
)
from kernels import depthwise as dw  # noqa: E402

WIDE = "(4w) (4g) with triton_preferred true in 16 bits"
CALLS, ROUNDS = 10, 5  # bench/step.py's measure, not quick


def wide_rule(rule):
    """triton_preferred, true for every 16-bit layer (the Triton kernels where they run at all)."""
    return lambda channels_last, dtype, *rest: dtype != torch.float32 or rule(channels_last, dtype, *rest)


def measure(name: str, device: torch.device) -> list[dict]:
    trains, infers, compile_s = prepare_net(name, device, [BASELINE, GRAPHS, KERNELS_GRAPHS])
    rule = dw.triton_preferred
    dw.triton_preferred = wide_rule(rule)
    try:  # (4g) once more, built and warmed up (traced, so the rule is read) under the wider rule
        wide = prepare_net(name, device, [KERNELS_GRAPHS])
    finally:
        dw.triton_preferred = rule
    for prepared, part in zip((trains, infers, compile_s), wide):
        prepared[WIDE] = part[KERNELS_GRAPHS]
    return time_net(name, device, (trains, infers, compile_s), CALLS, ROUNDS)


def main(argv: list[str]) -> None:
    prefix, names = argv[0], argv[1:]
    device = torch.device("cuda")
    rows = [row for name in names for row in measure(name, device)]
    summary = {}
    for name in names:
        for setting in CUDNN_LABELS.values():
            per = {r["variant"]: r["vs (1)"] for r in rows if r["net"] == name and r["cudnn.benchmark"] == setting}
            tag = f" cudnn.benchmark {setting}"
            summary[f"{name} (4g)/(3g){tag}"] = per[KERNELS_GRAPHS] / per[GRAPHS]
            summary[f"{name} (4w)/(3g){tag}"] = per[WIDE] / per[GRAPHS]
            summary[f"{name} (4w)/(4g){tag}"] = per[WIDE] / per[KERNELS_GRAPHS]
    result = {
        "title": f"Training step, batch {BATCH}, bf16 autocast, channels_last: the impl='auto' rule widened",
        "columns": ["net", "variant", "cudnn.benchmark", "train images/s", "vs (1)", "inference images/s",
                    "warm-up s (compile)"],
        "rows": rows, "summary": summary,
        "notes": [f"Median of {ROUNDS} alternating rounds of {CALLS} steps per variant, in one process.",
                  "Inference: the eager module and the last variant (4w)."],
    }
    head = header(device, "python3 results/step-rule.py " + " ".join(argv))
    publish(prefix, result, head, lambda r, h: "\n".join(f"{k}: {v}" for k, v in h.items()) + "\n\n" + to_markdown(r))


if __name__ == "__main__":
    main(sys.argv[1:])
