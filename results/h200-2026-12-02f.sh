#!/usr/bin/env bash
# Ran 2026-12-02 06:21-06:35 UTC on an H200: log results/h200-2026-12-02f.log, -f-gpu-tests.log; results
# bench/results/wgrad-h200-f.{md,json}, h200-{mobilenetv1,xception}-3g-4g-tile-rule.{md,json}.
# (0) bench/wgrad.py with the plain pass (no epilogue, as the nets call it in training) timed for the first time:
#     bf16 plain confirmed wgrad_taps_config's rule (default 1.44x gather, the fastest tile per case 1.45x);
#     fp32 plain did not (default 32 x 32: 1.99x; the fastest 2.19x, 16 x 32 at 24 of 30 cases), which moved
#     the fp32 plain rule to 16 x 32 where 32 divides C (results/h200-2026-12-02g.sh re-measures it).
# (1) The whole GPU suite after the 16-bit tile rule: 61 passed.
# (2) The whole compiled steps, (4g)/(3g) alternating in one process: MobileNetV1 1.04 (cudnn.benchmark 1.04),
#     Xception 1.00 (1.00); (3g)/(1) 3.08 and 1.33.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02f.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02f.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 600)) python3 bench/wgrad.py "$root/wgrad-h200" >"$root/wgrad.log" 2>&1
stamp "wgrad: $(grep -h 'geomean\|most frequent' "$root/wgrad-h200.md" | tr '\n' ';')"
gpu_tests_start "$root"
gpu_tests_wait "$root"
for net in mobilenetv1 xception; do
    (($(left) > 250)) || break
    timeout $(($(left) - 10)) python3 -m bench step nets=$net variants=3g,4g out="$root/$net" >"$root/$net.log" 2>&1
    stamp "$net: $(grep -ho 'Summary.*' "$root/$net/"*.md)"
done
