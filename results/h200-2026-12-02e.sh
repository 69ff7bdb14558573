#!/usr/bin/env bash
# Ran 2026-12-02 03:21-03:24 UTC on an H200: log results/h200-2026-12-02e.log, -e-gpu-tests.log; result
# bench/results/depthwise-h200.{md,json}. kernels.depthwise.wgrad_taps_config's rule as it is now (16-bit: 16 x 32
# where the pass recomputes z or below 2**23 output elements, else 32 x 32), measured in bench/depthwise.py, and
# the GPU tests of the weight passes. Found: forward+backward 1.24x over PyTorch's best in bf16 channels_last
# (1.21x at 21:26 the day before with 32 x 32 everywhere), the largest layers at 39.9 / 42.3 / 37.5% of the copy
# bandwidth forward+backward, the fused epilogue 2.81x (2.51x); ceiling 4.19x; 20 passed. The session's device
# time then ran out: MobileNetV1's whole step was not timed with this rule.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02e.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02e.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 40)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean fwd+bwd speedup bf16 channels_last vs best\|ceiling\|largest layers\|scale+shift' "$root/depthwise-h200.md" | tr '\n' ';')"
timeout $(($(left) - 2)) python3 -m pytest -q tests/test_depthwise_wgrad_taps.py >"$root/gpu-tests.log" 2>&1
stamp "GPU weight-pass tests: $(tail -n 1 "$root/gpu-tests.log")"
