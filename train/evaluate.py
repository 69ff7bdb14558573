"""`python -m train.evaluate run=<run dir> [checkpoint=best|last|<path>] [tta=none|flip|translate] [data=<path>]
[device=auto|cpu|cuda] [batch_size=1024] [member=<k>|ensemble]`: top-1/top-5 accuracy of a run's checkpoint on its
test set (of a members run: one member, or by default the ensemble, train/run_dir.py); of best.pt, by default,
results.json's test numbers (up to precision: the trainer tests in bf16 on a GPU, this tool in fp32).

The test split of the run's dataset is read from `data=` (default: the run's own data=, never downloaded), in
eval mode and fp32, with the weights the trainer evaluated (the EMA's for a run trained with ema > 0) and, unless
tta= says otherwise, the trainer's test-time augmentation (the run's tta). tta=none evaluates each image alone;
tta=flip averages, for each image, the softmax outputs of the image and of its mirror image; tta=translate of
those two each also translated by 2 pixels both ways (train.step.tta_views: the trainer's tta= rule).
Prints one line; `evaluate_run` returns the numbers.
"""

from __future__ import annotations

import sys

from train.cli import tool_main
from train.run_dir import checked_tta, load_run, parse_args, positive_int, test_set, topk_accuracy

KEYS = {"run": None, "checkpoint": "best", "tta": "", "data": "", "device": "auto", "batch_size": "1024",
        "member": ""}


def evaluate_run(run: str, checkpoint: str = "best", tta: str = "", data: str = "", device: str = "auto",
                 batch_size: int = 1024, log=print, member: str = "") -> dict:
    checked_tta(tta)  # a bad word fails before the checkpoint and the data are read
    loaded = load_run(run, checkpoint, device, member)
    tta = loaded.tta_for(tta)
    images, labels = test_set(loaded, data, log)
    logits = loaded.logits(images, tta, batch_size)
    result = {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5),
              "images": len(labels), "checkpoint": str(loaded.checkpoint), "epoch": loaded.epoch, "tta": tta,
              "weights": loaded.weights}
    log(f"{loaded.cfg.model} on the {loaded.cfg.dataset} test set ({result['images']} images): top1 "
        f"{result['top1']:.2f}  top5 {result['top5']:.2f}  | {loaded.checkpoint} ({loaded.describe()}), tta={tta}")
    return result


def command(argv: list[str]) -> dict:
    args = parse_args(argv, KEYS)
    return evaluate_run(args["run"], args["checkpoint"], args["tta"], args["data"], args["device"],
                        positive_int("batch_size", args["batch_size"]), member=args["member"])


def main(argv: list[str]) -> int:
    return tool_main(command, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
