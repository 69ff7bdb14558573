#!/usr/bin/env bash
# Ran 2026-12-02 03:09-03:16 UTC on an H200: log results/h200-2026-12-02d.log, -d-gpu-tests.log. With
# kernels.depthwise.wgrad_taps_config's 16 x 32 tile in 16 bits everywhere and wgrad_variant's "taps" pass from
# 2**21 output elements in bf16 (results/h200-2026-12-02c.sh). Results: bench/results/wgrad-h200.{md,json} (the
# 2026-12-01 file is now wgrad-h200-with-rows), bench/results/depthwise-h200-taps512.{md,json}; the MobileNetV1
# step's (bench/results/h200-mobilenetv1-3g-4g-taps512.{md,json}). Found: 53 passed; the fused epilogue's
# forward+backward 2.78x over PyTorch's unfused ops (2.51x before), but the plain forward+backward 1.19x (1.21x
# before): the nets' own pass, without the epilogue, was 0.87-0.98x as fast at the layers from 2**24 output
# elements (results/wgrad-tiles.py, bench/results/wgrad-tiles-h200.md), so the plain pass keeps 32 x 32 there
# (results/h200-2026-12-02e.sh measures that rule). MobileNetV1 (4g)/(3g) 1.02 / 1.02.
# (1) The GPU tests of the kernels: tests/test_depthwise_gpu.py (inside torch.compile, under torch.func.grad,
#     the nets' layers against the reference) and tests/test_depthwise_wgrad_taps.py (against float64).
# (2) bench/depthwise.py: issue 4's headline figures with the new tile.
# (3) MobileNetV1's whole compiled step, (3g) against (4g), alternating in one process.
# (4) bench/wgrad.py, its sweep now with the 512-element tiles, if time is left.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02d.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02d.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
python3 -m pytest -q tests/test_depthwise_gpu.py tests/test_depthwise_wgrad_taps.py >"$root/gpu-tests.log" 2>&1
stamp "GPU depthwise tests: $(tail -n 1 "$root/gpu-tests.log")"
timeout $(($(left) - 180)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean fwd+bwd speedup bf16 channels_last vs best\|ceiling\|largest layers' "$root/depthwise-h200.md" | tr '\n' ';')"
timeout $(($(left) - 5)) python3 -m bench step nets=mobilenetv1 variants=3g,4g out="$root/mobilenetv1" \
    >"$root/mobilenetv1.log" 2>&1
stamp "mobilenetv1: $(grep -ho 'Summary.*' "$root/mobilenetv1/"*.md)"
if (($(left) > 90)); then
    timeout $(($(left) - 5)) python3 bench/wgrad.py "$root/wgrad-h200" >"$root/wgrad.log" 2>&1
    stamp "wgrad: $(grep -h 'geomean' "$root/wgrad-h200.md" | tr '\n' ';')"
fi
