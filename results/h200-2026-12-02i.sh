#!/usr/bin/env bash
# Ran 2026-12-02 12:43-12:52 UTC on an H200, with the one-pass backward taken wherever it can run, at the plain
# taps weight pass's tile (the code of the working tree then; its rule and tile changed after): log
# results/h200-2026-12-02i.log, -i-kernel-tests.log; results bench/results/backward-h200.{md,json},
# bench/results/depthwise-h200-one-pass-everywhere.{md,json}.
# Found: (0) one pass against two, at 16 x 32 tiles, 1.05-1.14x in 16 bits below 2**25 elements of x and
# 1.09-1.28x in fp32 from 16x16 maps, 0.92-1.02x elsewhere; the taps pass's tile (32 x 32 from 2**23 in 16 bits)
# made it 0.93x in bf16 geomean. (1) 74 passed. (2) bf16 channels_last fwd+bwd 1.17x (1.24x at 06:42, two passes),
# the largest layers 35.7 / 36.9 / 33.5% of copy: the one pass everywhere, at that tile, is slower.
# (3) and (4) did not run: the machine was given back during (3), MobileNetV1's step under that code, so that
# the rule in kernels.depthwise.backward_variant could be measured instead (results/h200-2026-12-02j.sh).
# (0) bench/backward.py: the one-pass backward (kernels/depthwise_backward.py) against the two passes, every
#     stride-1 layer, batch 256 and 512, bf16 and fp32, a few tiles.
# (1) Its CPU tests on the GPU, the kernel GPU tests (it inside torch.compile: test_compiled_one_pass_backward).
# (2) bench/depthwise.py with the one pass as the default backward (issue 4's headline).
# (3) results/step-rule.py for MobileNetV1 and Xception: (1), (3g), (4g) and (4w) (every 16-bit layer on the
#     kernels) in one process, the one pass in both (4g) and (4w).
# (4) The whole GPU suite.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02i.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02i.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout 400 python3 bench/backward.py "$root/backward-h200" >"$root/backward.log" 2>&1
stamp "backward: $(grep -h 'geomean\|cases where\|median\|max rel' "$root/backward-h200.md" | tr '\n' ';')"
timeout 400 python3 -m pytest -q tests/test_depthwise_bwd_fused.py tests/test_depthwise_gpu.py \
    tests/test_depthwise_wgrad_taps.py >"$root/kernel-tests.log" 2>&1
stamp "kernel tests: $(tail -n 1 "$root/kernel-tests.log")"
timeout 400 python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean fwd+bwd speedup bf16 channels_last vs best\|largest layers\|impl=auto\|slower' "$root/depthwise-h200.md" | tr '\n' ';')"
for net in mobilenetv1 xception; do
    (($(left) > 300)) || break
    timeout $(($(left) - 10)) python3 results/step-rule.py "$root/step-rule-$net" $net >"$root/step-rule-$net.log" 2>&1
    stamp "$net: $(grep -h '(4g)/(3g)\|(4w)/(3g)' "$root/step-rule-$net.md" | tr '\n' ';')"
done
(($(left) > 360)) || exit 0
gpu_tests_start "$root"
gpu_tests_wait "$root"
