"""Device experiment for issue 4: is the bf16 "taps" weight pass held back by its index arithmetic? It moves
bytes at about half its float32 rate (bench/results/wgrad-h200.md: median 23.8% against 45.1% of the copy
bandwidth without the epilogue), so its work per element bounds it. Per tap and element it computed the input
row and column, four compares and the whole address ("taps-indexed", kernels.depthwise._x_tap); "taps" now
computes one address and four masks per element (_x_window) and every tap's address is that one plus a
compile-time offset. This times gather, taps-indexed and taps at wgrad_taps_config's tile, with
bench/wgrad.py's own measurement (CUDA-graph medians over rotating inputs), at every layer of the nets, batch
256 and 512, bf16 and fp32, with the fused epilogue and without.
Usage (on a GPU, from the repository root): python3 results/wgrad-window.py PREFIX  -> PREFIX.json, .md"""

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import wgrad  # noqa: E402
from bench.common import geomean, publish, script_header  # noqa: E402

VARIANTS = [("gather", None), ("taps-indexed", None), ("taps", None)]  # None: each variant's default tile


def notes(rows: list[dict]) -> list[str]:
    """Per dtype and epilogue: taps-indexed time / taps time, geometric mean and range, overall and by size."""
    cases = collections.defaultdict(dict)
    for r in rows:
        oh = (r["H"] - 1) // r["stride"] + 1
        cases[tuple(r[k] for k in wgrad.CASE_KEYS)][r["variant"]] = (r["us"], r["N"] * r["C"] * oh * oh)
    lines = []
    for dname in wgrad.DNAMES:
        for epilogue in wgrad.EPILOGUES:
            picked = [v for k, v in cases.items() if (k[5], k[6]) == (dname, epilogue)]
            ratio = [v["taps-indexed"][0] / v["taps"][0] for v in picked]
            small = [v["taps-indexed"][0] / v["taps"][0] for v in picked if v["taps"][1] < 1 << 23]
            large = [v["taps-indexed"][0] / v["taps"][0] for v in picked if v["taps"][1] >= 1 << 23]
            vs_gather = [v["gather"][0] / v["taps"][0] for v in picked]
            lines.append(f"{dname}, {epilogue}: taps-indexed / taps time, geomean {geomean(ratio):.3f} "
                         f"({min(ratio):.2f}-{max(ratio):.2f}) over {len(ratio)}; below 2**23 output elements "
                         f"{geomean(small):.3f}, from 2**23 {geomean(large):.3f}; taps vs gather "
                         f"{geomean(vs_gather):.3f}")
    return lines


def main(prefix: str) -> None:
    wgrad.variants = lambda *case: VARIANTS  # wgrad.measure reads it per case
    result = wgrad.measure("cuda")
    lines = notes(result["rows"])
    print("\n".join(lines), flush=True)
    result["notes"] = lines
    head = script_header("results/wgrad-window.py", [prefix])
    publish(Path(prefix), result, head, lambda r, h: wgrad.to_markdown(r, h) + "\n".join(["", *lines, ""]))


if __name__ == "__main__":
    main(sys.argv[1])
