"""Two bench/depthwise.py runs that differ only in the "taps" weight pass in 16 bits (its tile; and where bf16
takes it rather than gather, by output elements: from 2**22 or 2**21), row by row: the
forward+backward time of each bf16 channels_last layer (the weight pass runs without the epilogue there, as
the nets call it in training), against its output elements (N x C x OH x OW), which
kernels.depthwise.wgrad_taps_config's rule reads; PyTorch's and the forward's times beside it show how far the
two runs moved by themselves.
Usage: python3 results/wgrad-tiles.py A.json B.json OUT.md  (A's time over B's: above 1, B is faster)."""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import fine_cell, geomean, table  # noqa: E402
from bench.depthwise import _torch_same_layout_us as torch_us  # noqa: E402  (PyTorch's faster cudnn setting)

KEYS = ("net", "N", "C", "H", "stride", "dtype", "layout")


def compare(a: dict, b: dict) -> list[dict]:
    old = {tuple(r[k] for k in KEYS): r for r in a["rows"]}
    out = []
    for r in b["rows"]:
        if (r["dtype"], r["layout"]) != ("bf16", "channels_last"):
            continue
        o = old[tuple(r[k] for k in KEYS)]
        oh = (r["H"] - 1) // r["stride"] + 1
        out.append({"net": r["net"], "N": r["N"], "C": r["C"], "H": r["H"], "stride": r["stride"],
                    "log2 output elements": round(math.log2(r["N"] * r["C"] * oh * oh), 1),
                    "A fwd+bwd us": o["triton fwd+bwd us"], "B fwd+bwd us": r["triton fwd+bwd us"],
                    "fwd+bwd A / B": o["triton fwd+bwd us"] / r["triton fwd+bwd us"],
                    "fwd A / B": o["triton fwd us"] / r["triton fwd us"], "PyTorch A / B": torch_us(o) / torch_us(r)})
    return sorted(out, key=lambda row: row["log2 output elements"])


def main(a_path: str, b_path: str, out_path: str) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    rows = compare(a, b)
    lines = ["# bf16 channels_last forward+backward, two bench/depthwise.py runs", "",
             f"- A: {a_path} ({a['date']}), B: {b_path} ({b['date']}), device: {b['device']}",
             f"- command: python3 results/wgrad-tiles.py {a_path} {b_path} {out_path}", ""]
    for lo, hi in ((0, 22.5), (22.5, 23.5), (23.5, 99)):
        sel = [r["fwd+bwd A / B"] for r in rows if lo <= r["log2 output elements"] < hi]
        lines.append(f"- fwd+bwd A / B, log2 output elements in [{lo}, {hi}): geomean {geomean(sel):.3f}, "
                     f"{min(sel):.3f}-{max(sel):.3f} over {len(sel)}")
    lines.append(f"- PyTorch A / B, geomean over all: {geomean([r['PyTorch A / B'] for r in rows]):.3f}")
    lines += [""] + table(list(rows[0]), rows, fine_cell) + [""]
    Path(out_path).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:4])
