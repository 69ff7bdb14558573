#!/usr/bin/env bash
# Ran 2026-12-02 18:51-18:59 UTC on an H200: log results/h200-2026-12-02k.log; results
# bench/results/h200-xception-one-pass.{md,json} and bench/results/backward-h200-repeat.{md,json}.
# Found: (0) Xception (4g)/(3g) 1.00 / 0.99 (17,255 against 17,327; 17,207 against 17,314 images/s), (4w)/(4g)
# 0.97 / 0.97: the one pass leaves Xception's step where it was (1.00 / 1.00 at 06:31). (1) The rule holds in a
# second run: backward_variant's choice is the faster at 45 of the 48 cases, the other three within 2% (fused
# 1.01-1.02x where it keeps split); the rule's geometric mean over split 1.06x bf16, 1.09x fp32, as in the first.
# (0) Xception's whole step with the one-pass backward: results/step-rule.py, (1), (3g), (4g) and (4w) in one
#     process (results/h200-2026-12-02j.sh ran out of time before it; MobileNetV1's went from 1.04 to 1.06).
# (1) bench/backward.py again, at bwd_fused_config's 16 x 32 tile as the default: does the rule hold in a second run?
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02k.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02k.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 200)) python3 results/step-rule.py "$root/step-rule-xception" xception >"$root/step-rule-xception.log" 2>&1
stamp "xception: $(grep -h '(4g)/(3g)\|(4w)/(3g)' "$root/step-rule-xception.md" | tr '\n' ';')"
timeout 300 python3 bench/backward.py "$root/backward-h200" >"$root/backward.log" 2>&1
stamp "backward: $(grep -h 'geomean\|cases where' "$root/backward-h200.md" | tr '\n' ';')"
