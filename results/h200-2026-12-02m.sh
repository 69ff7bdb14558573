#!/usr/bin/env bash
# Ran 2026-12-02 19:52-19:59 UTC on an H200: log results/h200-2026-12-02m.log, -m-kernel-tests.log; results
# bench/results/depthwise-h200.{md,json} (the 13:00 run is in git history at 8b575e1),
# bench/results/h200-mobilenetv1-window.{md,json}. Then, in the next call on the same machine (20:00-20:04),
# `python3 -m pytest -q -m gpu tests` without the three kernel test files: -m-gpu-tests.log.
# Found: (0) 91 passed. (1) bf16 channels_last fwd+bwd 1.33x over PyTorch's faster layout (1.27x at 13:00), fp32
# 1.23x (1.20x); the largest layers 42.8 / 43.9 / 40.7% of copy fwd+bwd (40.0 / 41.8 / 37.5%); impl=auto 1.15x,
# minimum 1.00; no bf16 channels_last row slower than PyTorch. (2) MobileNetV1 (4g)/(3g) 1.07 / 1.06 (1.06 /
# 1.06 at 13:04), (4w)/(4g) 1.00 / 1.00. The rest of the GPU suite: 28 passed.
# backward_variant's rule with the window schedule (kernels/depthwise_backward.py), from results/h200-2026-12-02l.sh:
# (0) the kernel tests on the GPU (the window inside torch.compile: test_compiled_one_pass_backward[16-...]);
# (1) bench/depthwise.py (issue 4's headline: the largest layers now take the window in bf16);
# (2) results/step-rule.py for MobileNetV1: (1), (3g), (4g) and (4w) in one process.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02m.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02m.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout 240 python3 -m pytest -q tests/test_depthwise_bwd_fused.py tests/test_depthwise_gpu.py \
    tests/test_depthwise_wgrad_taps.py >"$root/kernel-tests.log" 2>&1
stamp "kernel tests: $(tail -n 1 "$root/kernel-tests.log")"
timeout 200 python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean fwd+bwd speedup bf16 channels_last vs best\|largest layers\|impl=auto\|slower\|fp32' "$root/depthwise-h200.md" | head -12 | tr '\n' ';')"
timeout $(($(left) - 5)) python3 results/step-rule.py "$root/step-rule-mobilenetv1" mobilenetv1 \
    >"$root/step-rule-mobilenetv1.log" 2>&1
stamp "mobilenetv1: $(grep -h '(4g)/(3g)\|(4w)/(3g)' "$root/step-rule-mobilenetv1.md" | tr '\n' ';')"
