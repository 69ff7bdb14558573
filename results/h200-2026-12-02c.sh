#!/usr/bin/env bash
# Ran 2026-12-02 03:01-03:06 UTC on an H200 (no H100 was lent): log results/h200-2026-12-02c.log. Results:
# bench/results/wgrad-occupancy-h200.{md,json}; its bench/depthwise.py run was superseded within the session by
# results/h200-2026-12-02d.sh's, with the tile this run found (the ceiling lines below are the same there).
# Found: (1) in bf16 the "taps" weight pass at 4 elements per thread (16 x 32, 4 warps) is 1.25x the 8 of the
# then default 32 x 32 in geometric mean (the best tile of any size 1.28x; 16 per thread 0.45x); in fp32 the
# 32 x 32 stays (4 per thread 0.95x, 2 per thread 1.02x). kernels.depthwise.wgrad_taps_config now takes
# 16 x 32 in 16 bits. (2) bench/depthwise.py, kernels unchanged: forward+backward 1.21x over PyTorch's best
# in bf16 channels_last (as at 21:26 the day before), and its new ceiling: 4.17x in geometric mean for a
# kernel moving the fewest bytes at the copy bandwidth, so 3x needs 72% of the copy bandwidth in geometric mean.
# (1) results/wgrad-occupancy.py: the "taps" weight pass at tiles of 2, 4, 8 (the default) and 16 elements per
#     thread: is it held back by its registers (every tile bench/wgrad.py tried held 8 per thread)?
# (2) bench/depthwise.py, issue 4's headline figures, now with the summary's ceiling.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02c.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02c.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 130)) python3 results/wgrad-occupancy.py "$root/wgrad-occupancy-h200" \
    >"$root/wgrad-occupancy.log" 2>&1
stamp "occupancy: $(grep -h 'geomean\|fastest' "$root/wgrad-occupancy.log" | sort -u | tr '\n' ';')"
timeout $(($(left) - 5)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean fwd+bwd speedup bf16 channels_last vs best\|ceiling' "$root/depthwise-h200.md" | tr '\n' ';')"
