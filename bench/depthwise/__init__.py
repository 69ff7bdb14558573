"""The depthwise kernels' benchmarks (kernels/depthwise/), one section of `python -m bench`:

    python -m bench depthwise [quick=true]      the kernels against PyTorch at every depthwise layer of the nets
                                                (compare.py): bench/results/depthwise-<gpu>.json/.md
    python -m bench depthwise tune=KIND         a sweep behind one of kernels.depthwise.rules' rules, written to
                                                bench/results/<file>-<gpu>.json/.md (TUNE_FILES); its summary
                                                says whether the rule's choice is within 3% of the fastest
                                                candidate on the GPU at hand

    tune=tiles     the tile kernels' tiles: rules.pointwise_config, rules.wgrad_config        (tune_tiles.py)
    tune=rows      the rows schedule against the tiles: rules.pointwise_variant, rows_config  (tune_rows.py)
    tune=wgrad     the weight pass, taps against gather: rules.wgrad_variant, wgrad_taps_config (tune_wgrad.py)
    tune=backward  one pass against two: rules.backward_variant, bwd_fused_config, window_config (tune_backward.py)

layers.py lists the nets' depthwise layers, timing.py times a call (CUDA-graph replays over rotating inputs),
sweep.py holds what the sweeps share. Every kernel variant is compiled first, in parallel processes.
"""

from pathlib import Path

import torch

from bench.common import device_slug, header, publish
from bench.depthwise import tune_backward, tune_rows, tune_tiles, tune_wgrad
from bench.depthwise.compare import measure

TUNES = {"tiles": tune_tiles, "rows": tune_rows, "wgrad": tune_wgrad, "backward": tune_backward}
TUNE_FILES = {kind: f"depthwise-tune-{kind}" for kind in TUNES}

__all__ = ["TUNES", "TUNE_FILES", "measure", "tune"]


def tune(kind: str, device: torch.device, out: Path) -> dict:
    """Run the sweep `kind` on a CUDA device and publish it at out/<TUNE_FILES[kind]>-<gpu>.json and .md."""
    module = TUNES[kind]
    result = module.measure(device.type)
    publish(Path(out) / f"{TUNE_FILES[kind]}-{device_slug(device)}", result, header(device), module.to_markdown)
    return result
