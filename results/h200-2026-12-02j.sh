#!/usr/bin/env bash
# Ran 2026-12-02 12:56-13:11 UTC on an H200: log results/h200-2026-12-02j.log, -j-kernel-tests.log, -j-gpu-tests.log;
# results bench/results/depthwise-h200.{md,json}, bench/results/h200-mobilenetv1-one-pass.{md,json}.
# Found: (0) 75 passed. (1) bf16 channels_last fwd+bwd 1.27x over PyTorch's faster layout (1.24x at 06:42 with two
# passes), fp32 1.20x (1.16x); no bf16 channels_last row slower than PyTorch (one, 0.97x, before); the largest
# layers 40.0 / 41.8 / 37.5% of copy (they keep two passes). (2) MobileNetV1 (4g)/(3g) 1.06 / 1.06 (1.04 / 1.04 at
# 06:31), (4w)/(4g) 1.01 / 1.00. (3) The whole GPU suite: 62 passed. (4) Did not run (no time left).
# The one-pass backward (kernels/depthwise_backward.py) where kernels.depthwise.backward_variant takes it, at
# bwd_fused_config's 16 x 32 tile, from the measurement of results/h200-2026-12-02i.sh (bench/results/backward-h200.md):
# (0) the kernel tests on the GPU (the one pass inside torch.compile: test_compiled_one_pass_backward);
# (1) bench/depthwise.py (issue 4's headline);
# (2) results/step-rule.py for MobileNetV1: (1), (3g), (4g) and (4w) (every 16-bit layer on the kernels) in
#     one process;
# (3) the whole GPU suite; (4) results/step-rule.py for Xception, if there is time.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02j.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02j.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout 300 python3 -m pytest -q tests/test_depthwise_bwd_fused.py tests/test_depthwise_gpu.py \
    tests/test_depthwise_wgrad_taps.py >"$root/kernel-tests.log" 2>&1
stamp "kernel tests: $(tail -n 1 "$root/kernel-tests.log")"
timeout 300 python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean fwd+bwd speedup bf16 channels_last vs best\|largest layers\|impl=auto\|slower\|fp32' "$root/depthwise-h200.md" | head -12 | tr '\n' ';')"
timeout $(($(left) - 10)) python3 results/step-rule.py "$root/step-rule-mobilenetv1" mobilenetv1 \
    >"$root/step-rule-mobilenetv1.log" 2>&1
stamp "mobilenetv1: $(grep -h '(4g)/(3g)\|(4w)/(3g)' "$root/step-rule-mobilenetv1.md" | tr '\n' ';')"
(($(left) > 340)) || exit 0
gpu_tests_start "$root"
gpu_tests_wait "$root"
(($(left) > 300)) || exit 0
timeout $(($(left) - 10)) python3 results/step-rule.py "$root/step-rule-xception" xception >"$root/step-rule-xception.log" 2>&1
stamp "xception: $(grep -h '(4g)/(3g)\|(4w)/(3g)' "$root/step-rule-xception.md" | tr '\n' ';')"
