#!/usr/bin/env bash
# results/h200-2026-12-01m.sh again, once the rows kernels' nested tuple unpacking (which Triton 3.6's cache key
# rejects, "TypeError: unhashable type: 'list'", at the first launch of each rows kernel) was flattened:
# (1) results/step-rule.py for MobileNetV1 ((3g), (4g), and (4g) with triton_preferred true in 16 bits);
# (2) every GPU test, beside the rows tests on the GPU (neither times anything); the whole-run graph test now
#     prints both runs' losses when it fails (m.sh: it failed in 3 of 4 runs, rows schedule or tiles alike);
# (3) results/depthwise-rows.py with upcast; (4) bench/wgrad.py with the rows weight pass; (5) Xception as (1).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-01n.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-01n.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 600)) python3 results/step-rule.py "$root/step-rule-mobilenetv1" mobilenetv1 \
    >"$root/step-rule-mobilenetv1.log" 2>&1
stamp "mobilenetv1: $(grep -ho 'Summary.*' "$root/step-rule-mobilenetv1.md")"
python3 -m pytest -q tests/test_depthwise_rows.py tests/test_depthwise_wgrad_taps.py >"$root/rows-tests.log" 2>&1 &
rows=$!
gpu_tests_start "$root"
wait "$rows"
stamp "rows tests: $(tail -n 1 "$root/rows-tests.log")"
gpu_tests_wait "$root"
timeout $(($(left) - 250)) python3 results/depthwise-rows.py "$root/depthwise-rows.json" >"$root/depthwise-rows.log" 2>&1
stamp "rows sweep ended: $(grep '^geomean' "$root/depthwise-rows.log" | tr '\n' ';')"
timeout $(($(left) - 200)) python3 bench/wgrad.py "$root/wgrad-h200" >"$root/wgrad.log" 2>&1
stamp "weight-pass benchmark ended: $(grep 'best rows config vs best taps' "$root/wgrad-h200.md" | tr '\n' ';')"
if (($(left) > 240)); then
    timeout $(($(left) - 10)) python3 results/step-rule.py "$root/step-rule-xception" xception \
        >"$root/step-rule-xception.log" 2>&1
    stamp "xception: $(grep -ho 'Summary.*' "$root/step-rule-xception.md")"
fi
