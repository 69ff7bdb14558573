#!/usr/bin/env bash
# Issue 4, with the rows schedule wired into the launchers (kernels.depthwise.pointwise_variant) and the launch
# table tuned at the nets' layers: (1) the kernels' GPU tests, the rows tests on the GPU and the whole-run graph
# test with MobileNetV1's kernels; (2) bench/depthwise.py at the nets' layers; (3) MobileNetV1 and Xception,
# (3g) against (4g), alternating in one process each; (4) bench/wgrad.py with its grad_z-flip count.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> results/h200-2026-12-01l.sh /tmp/s/runs`.
set -u
root=${1:?usage: results/h200-2026-12-01l.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
{ python3 -m pytest -q tests/test_depthwise_rows.py
  python3 -m pytest -q -m gpu tests/test_depthwise_gpu.py tests/test_kernels_compile.py
  python3 -m pytest -q -m gpu tests/test_train_e2e.py -k "cuda_graph_run and mobilenet"; } >"$root/gpu-tests.log" 2>&1
stamp "GPU tests ended: $(grep -E 'passed|failed' "$root/gpu-tests.log" | tr '\n' ';')"
timeout $(($(left) - 300)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise benchmark ended: $(grep -m 1 'geomean fwd+bwd speedup bf16 channels_last vs best' "$root/depthwise-h200.md")"
for net in mobilenetv1 xception; do
    limit=$(($(left) - 60)); ((limit > 60)) || break
    timeout $limit python3 -m bench step nets=$net variants=3g,4g out="$root/$net" >"$root/$net.log" 2>&1
    stamp "$net: $(grep -ho 'Summary.*' "$root/$net/"*.md)"
done
if (($(left) > 60)); then
    timeout $(($(left) - 10)) python3 bench/wgrad.py "$root/wgrad-h200" >"$root/wgrad.log" 2>&1
    stamp "weight-pass benchmark ended: $(grep -m 1 'without a relu-mask flip' "$root/wgrad-h200.md")"
fi
