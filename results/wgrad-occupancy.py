"""Device experiment for issue 4: is the "taps" weight pass held back by its registers? In bf16 it moves bytes at
half its float32 rate (20% against 42% of the copy bandwidth, median, bench/results/wgrad-h200-with-rows.md), so it is
bound by elements, not bytes; and every tile bench/wgrad.py tried held 8 elements per thread, with 9 float32
accumulators and 9 x tiles each (about 150 registers: 3 programs of 4 warps per SM). This times the tile that
was wgrad_taps_config's for every dtype (32 x 32, 4 warps) against tiles of 2, 4 and 16 elements per thread,
with bench/wgrad.py's own measurement (the nets' epilogue, CUDA-graph medians over rotating inputs) at every
layer, batch 256 and 512, bf16 and fp32.
Usage (on a GPU, from the repository root): python3 results/wgrad-occupancy.py PREFIX  -> PREFIX.json, .md"""

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import wgrad  # noqa: E402
from bench.common import geomean, publish, script_header  # noqa: E402
from kernels import depthwise as dw  # noqa: E402

# (BLOCK_R * BLOCK_K elements, num_warps): elements per thread = elements / (32 * num_warps)
TILES = ((1024, 4), (512, 4), (1024, 8), (256, 4), (512, 8), (2048, 4))
BLOCK_KS = (32, 64)


def candidates(C: int, H: int, stride: int, dname: str, N: int, epilogue: str) -> list[dw.LaunchConfig]:
    """The first, (32, 32, 4) at every layer of the nets (C >= 32), was wgrad_taps_config's tile for every dtype
    when this ran: "default" below. (It now picks 16 x 32 in 16 bits, from this run.)"""
    return list(dict.fromkeys(dw.LaunchConfig(e // bk, bk, w) for bk in BLOCK_KS if bk <= max(32, dw._next_pow2(C))
                              for e, w in TILES))


def per_thread(config: str) -> int:
    r, k, w = (int(v) for v in config.strip("()").split(","))
    return r * k // (32 * w)


def main(prefix: str) -> None:
    wgrad.taps_candidates = candidates  # wgrad.variants reads it: gather, then these
    result = wgrad.measure("cuda", epilogues=("fused",))  # what it timed when it ran: the fused pass
    rows = [r for r in result["rows"] if r["variant"] == "taps"]
    cases = collections.defaultdict(list)
    for r in rows:
        cases[tuple(r[k] for k in wgrad.CASE_KEYS)].append(r)
    lines = []
    for dname in wgrad.DNAMES:
        picked = [c for c in cases.values() if c[0]["dtype"] == dname]
        default = {id(c): c[0]["us"] for c in picked}  # the first candidate is the default tile
        best = geomean([default[id(c)] / min(r["us"] for r in c) for c in picked])
        lines.append(f"{dname}: best tile / default tile, geomean speedup {best:.3f}")
        for n in sorted({per_thread(r["config"]) for r in rows}):
            ratios = [default[id(c)] / min(r["us"] for r in c if per_thread(r["config"]) == n) for c in picked
                      if any(per_thread(r["config"]) == n for r in c)]
            lines.append(f"{dname}: {n} elements per thread (best such tile) / default, geomean "
                         f"{geomean(ratios):.3f} over {len(ratios)} cases, min {min(ratios):.2f}, "
                         f"max {max(ratios):.2f}")
        wins = collections.Counter(min(c, key=lambda r: r["us"])["config"] for c in picked)
        lines.append(f"{dname}: fastest tiles {wins.most_common(4)}")
    print("\n".join(lines), flush=True)
    result["notes"] = lines
    head = script_header("results/wgrad-occupancy.py", [prefix])
    publish(Path(prefix), result, head, lambda r, h: wgrad.to_markdown(r, h) + "\n".join(["", *lines, ""]))


if __name__ == "__main__":
    main(sys.argv[1])
