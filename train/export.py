"""`python -m train.export run=<run dir> [checkpoint=best|last|<path>] [out=<folder>] [member=<k>|ensemble]`: a run's
weights for use outside this project (of a members run: one member's, or by default the ensemble, one program
whose output is the log of the members' mean probability: train.members.Ensemble). Writes into `out` (default
<run dir>/export):

    state_dict.pt   the plain nn.Module state_dict (params and BatchNorm statistics, CPU, float32; their EMA for
                    a run trained with ema > 0, as the trainer evaluated it: meta.json's "weights"). It loads
                    into the module nets builds:
                        module = nets.build(model, num_classes=K, **net_options).module.to_empty(device="cpu")
                        module.load_state_dict(torch.load("state_dict.pt", weights_only=True)); module.eval()
                    The module takes normalised images: (x - mean) / std with meta.json's run's statistics,
                    which are saved in the checkpoint (the training split's, 0..255 pixel units).
    model.pt2       a torch.export program of the eval-mode net with the normalisation baked in: input float32
                    (N, 3, 32, 32) RGB in 0..255 pixel units (uint8 values as floats, N from 1 to 65536),
                    output float32 (N, K) logits in the order of meta.json's classes, one view per image (the
                    run's test-time augmentation, meta.json's "tta", is the caller's to average). It needs only torch:
                        program = torch.export.load("model.pt2"); logits = program.module()(x)
                    meta.json is also inside it (torch.export.load(path, extra_files={"meta.json": ""})).
    meta.json       model, net options, dataset, classes, the input and output contract, source checkpoint,
                    weights ("ema" or "raw")

Before returning, the program is run on a few images and checked against the project's eval forward.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from nets import IMAGE_SHAPE
from train.checkpoint import write_atomically
from train.cli import tool_main
from train.run_dir import load_run, parse_args

KEYS = {"run": None, "checkpoint": "best", "out": "", "member": ""}
MAX_BATCH = 65536  # the largest batch the exported program accepts (a bound torch.export asks for)
CHECK_IMAGES = 4  # images the program is checked on against the project's forward
CHECK_TOLERANCE = 1e-4  # max |logit difference|, relative to the largest |logit|: decompositions reorder sums


class Normalised(nn.Module):
    """float32 (N, 3, 32, 32) RGB pixels in 0..255 -> logits (N, K): the net after the run's normalisation."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().float().cpu().clone())  # (3, 32, 32)
        self.register_buffer("std", std.detach().float().cpu().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def export_run(run: str, checkpoint: str = "best", out: str = "", log=print, member: str = "") -> dict[str, Path]:
    loaded = load_run(run, checkpoint, device="cpu", member=member)
    out_dir = Path(out) if out else loaded.run / "export"
    module = loaded.module()
    state_dict = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    meta = {
        "model": loaded.cfg.model, "net": loaded.cfg.net, "dataset": loaded.cfg.dataset, "labels": loaded.cfg.labels,
        "num_classes": len(loaded.classes), "classes": list(loaded.classes),
        "checkpoint": str(loaded.checkpoint), "epoch": loaded.epoch,
        "weights": loaded.weights,  # "ema": the checkpoint's averaged weights (a run trained with ema > 0)
        "input": "float32 (N, 3, 32, 32) RGB in 0..255 pixel units; model.pt2 normalises inside, "
                 "state_dict.pt's module expects (x - mean) / std",
        "output": "float32 (N, num_classes) logits, in the order of classes" if loaded.members == 1 else
                  f"float32 (N, num_classes) log of the mean probability of {loaded.members} members (softmax: "
                  "the ensemble's probabilities), in the order of classes",
        "members": loaded.members,
        # The program is the net alone: one view per image. The run's test scores averaged its tta views; a caller
        # who wants them averages the program's softmax over the mirrored (and translated) images.
        "tta": f"none (results.json's test used tta={loaded.cfg.tta})",
        "mean": loaded.mean.cpu().tolist(), "std": loaded.std.cpu().tolist(),
    }

    deployed = Normalised(module, loaded.mean, loaded.std).eval()
    examples = torch.randint(0, 256, (CHECK_IMAGES, *IMAGE_SHAPE), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(deployed, (examples.float(),), dynamic_shapes={"x": {0: batch}})
        got = program.module()(examples.float())
    expected = loaded.logits(examples, tta="none")  # the program's one view
    error = (got - expected).abs().max().item() / max(expected.abs().max().item(), 1.0)
    if error > CHECK_TOLERANCE:
        raise RuntimeError(f"the exported program's logits differ from the net's by {error:.2g} (relative)")

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"state_dict": out_dir / "state_dict.pt", "program": out_dir / "model.pt2", "meta": out_dir / "meta.json"}
    meta_text = json.dumps(meta, indent=2) + "\n"
    write_atomically(paths["state_dict"], lambda f: torch.save(state_dict, f))
    write_atomically(paths["program"], lambda f: torch.export.save(program, f, extra_files={"meta.json": meta_text}))
    write_atomically(paths["meta"], lambda f: f.write(meta_text.encode()))
    log(f"exported {loaded.cfg.model} ({loaded.checkpoint}, {loaded.describe()}) to {paths['state_dict']} and "
        f"{paths['program']} (input: float32 RGB 0..255, normalised inside; {agreement(error)})")
    return paths


def agreement(error: float) -> str:
    """How closely the program's logits match the project's forward, as a clause: `error` is the largest
    |difference| relative to the largest |logit| (exactly 0 when the decompositions kept every sum's order)."""
    if error == 0:
        return "its logits equal the net's exactly"
    return f"its logits equal the net's to within {error:.2g} (relative)"


def command(argv: list[str]) -> dict[str, Path]:
    args = parse_args(argv, KEYS)
    return export_run(args["run"], args["checkpoint"], args["out"], member=args["member"])


def main(argv: list[str]) -> int:
    return tool_main(command, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
