#!/usr/bin/env bash
# Ran 2026-12-02 06:39-06:43 UTC on an H200: log results/h200-2026-12-02g.log, -g-gpu-tests.log; results
# bench/results/wgrad-h200.{md,json} and depthwise-h200.{md,json}. After results/h200-2026-12-02f.sh's per-kernel
# plain rows moved kernels.depthwise.wgrad_taps_config's float32 plain rule (16 x 32 where 32 divides C, was
# 32 x 32 everywhere): (0) bench/wgrad.py, whose "default taps config" lines read the new rule: fp32 plain
# 2.18x gather (the fastest tile per case 2.19x; 1.99x with the old rule in the -f run), the others unchanged;
# (1) bench/depthwise.py: bf16 channels_last forward+backward 1.24x (as before), fp32 channels_last 1.16x
# (1.11x at 03:23); (2) the kernels' GPU tests: 53 passed.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02g.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02g.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 300)) python3 bench/wgrad.py "$root/wgrad-h200" >"$root/wgrad.log" 2>&1
stamp "wgrad: $(grep -h 'geomean\|most frequent' "$root/wgrad-h200.md" | tr '\n' ';')"
timeout $(($(left) - 150)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean\|ceiling\|largest layers' "$root/depthwise-h200.md" | tr '\n' ';')"
timeout $(($(left) - 2)) python3 -m pytest -q tests/test_depthwise_gpu.py tests/test_depthwise_wgrad_taps.py \
    >"$root/gpu-tests.log" 2>&1
stamp "GPU kernel tests: $(tail -n 1 "$root/gpu-tests.log")"
