"""`python -m train.predict run=<run dir> images=<file> [<file> ...] [checkpoint=best|last|<path>]
[top=5] [tta=none|flip|translate] [device=auto|cpu|cuda] [member=<k>|ensemble]`: the most likely classes of image
files, with their probabilities (of a members run: one member's, or by default the ensemble's mean probabilities),
by default averaged over the run's own test-time augmentation views (its tta, as its test scores were).

Images are PNG or JPEG files of any size and colour type: they are converted to RGB and, when they are not
32x32, resized to 32x32 (torchvision.transforms.functional.resize, bilinear with antialiasing; the aspect
ratio is not kept, as CIFAR nets see 32x32 only), which the output says. They are then normalised with the
mean and std saved in the checkpoint and classified in eval mode.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from data.folders import TORCHVISION_CODEC_DEPRECATION
from nets import IMAGE_SHAPE
from train.cli import tool_main
from train.run_dir import ToolError, checked_tta, load_run, parse_args, positive_int

KEYS = {"run": None, "images": None, "checkpoint": "best", "top": "5", "device": "auto", "member": "", "tta": ""}


def read_image(path: str | Path) -> tuple[torch.Tensor, str]:
    """uint8 (3, 32, 32) RGB of an image file, and a note saying how it was converted ("" if it was not)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.functional import resize

    path = Path(path)
    try:
        encoded = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    except OSError as e:
        raise ToolError(f"cannot read the image {path} ({e.strerror or type(e).__name__})") from None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", TORCHVISION_CODEC_DEPRECATION, DeprecationWarning)
            image = decode_image(encoded, mode=ImageReadMode.RGB)  # grey or RGBA -> RGB
    except (RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())[:120]
        raise ToolError(f"cannot decode the image {path} ({reason}); use a PNG or JPEG file") from None
    _, H, W = image.shape
    if (H, W) == IMAGE_SHAPE[1:]:
        return image, ""
    size = list(IMAGE_SHAPE[1:])
    return resize(image, size, antialias=True), f"resized from {W}x{H} to 32x32, aspect ratio not kept"


def predict_images(run: str, images: list[str], checkpoint: str = "best", top: int = 5, device: str = "auto",
                   log=print, member: str = "", tta: str = "") -> list[dict]:
    """For each image file: {"image", "note", "top": [(class name, probability), ...]}, most likely first."""
    checked_tta(tta)
    decoded = [read_image(p) for p in images]  # all files checked before the run is loaded
    loaded = load_run(run, checkpoint, device, member)
    tta = loaded.tta_for(tta)
    probabilities = torch.softmax(loaded.logits(torch.stack([image for image, _ in decoded]), tta), dim=1)
    k = min(top, len(loaded.classes))
    results = []
    log(f"{loaded.cfg.model} ({loaded.checkpoint}, {loaded.describe()}, tta={tta}), top {k} of "
        f"{len(loaded.classes)} classes:")
    for path, (_, note), p in zip(images, decoded, probabilities):
        values, indices = p.topk(k)
        ranked = [(loaded.classes[i], v) for v, i in zip(values.tolist(), indices.tolist())]
        results.append({"image": str(path), "note": note, "top": ranked})
        log(f"{path}" + (f"  ({note})" if note else ""))
        for rank, (name, value) in enumerate(ranked, start=1):
            log(f"  {rank}. {name:<20} {100 * value:6.2f}%")
    return results


def command(argv: list[str]) -> list[dict]:
    args = parse_args(argv, KEYS, repeated="images")
    return predict_images(args["run"], args["images"], args["checkpoint"], positive_int("top", args["top"]),
                          args["device"], member=args["member"], tta=args["tta"])


def main(argv: list[str]) -> int:
    return tool_main(command, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
