#!/usr/bin/env bash
# Ran 2026-12-02 19:21-19:24 UTC on an H200: log results/h200-2026-12-02l.log, -l-kernel-tests.log; results
# bench/results/backward-h200.{md,json} (the 12:44 run is in git history at 8b575e1).
# Found: (0) 36 passed. (1) The window at its best tile beats split and the tiles' one pass at the large layers:
# batch 512, 256 channels 32x32, bf16 532 µs against split 563 and the tiles 567 (36% of copy); fp32 658 against
# 778 and 689; from 16x16 maps in bf16 1.06-1.61x over split; at 8x8 and 4x4 slower (0.51-0.97x in bf16). Its
# default tile then (whole images, ~512-element rows) was not the fastest: 8 rows a chunk in 16 bits (1.195x at
# 32x32), ~1024-element rows in fp32 (1.24x). window_config and backward_variant now follow this file.
# The window schedule of the one-pass backward (kernels/depthwise_backward.py: whole rows down each image, grad_y's
# window in registers, the weight gradient summed from x's side), not yet taken by any rule:
# (0) tests/test_depthwise_bwd_fused.py and tests/test_kernels_compile.py on the GPU (both schedules against the
#     float64 reference and the two passes);
# (1) bench/backward.py: split, the tiles' one pass and the window's, over their tiles, at every stride-1 layer.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02l.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02l.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout 200 python3 -m pytest -q tests/test_depthwise_bwd_fused.py tests/test_kernels_compile.py \
    >"$root/kernel-tests.log" 2>&1
stamp "kernel tests: $(tail -n 1 "$root/kernel-tests.log")"
timeout 400 python3 bench/backward.py "$root/backward-h200" >"$root/backward.log" 2>&1
stamp "backward: $(grep -h 'geomean\|cases where' "$root/backward-h200.md" | tr '\n' ';')"
