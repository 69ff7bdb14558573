#!/usr/bin/env bash
# PREPARED 2026-12-02 13:15 UTC, NOT YET RUN: the next device job. Rename it to results/<gpu>-<date>.sh once it has
# run, and keep its log beside it. If an H100 is lent, run results/h200-2026-12-01g.sh (every family, every
# variant; issue 6's acceptance run, any GPU) and bench/depthwise.py (issue 4's headline) first.
# (0) Xception's whole step with the one-pass backward: results/step-rule.py, (1), (3g), (4g) and (4w) in one
#     process (results/h200-2026-12-02j.sh ran out of time before it; MobileNetV1's went from 1.04 to 1.06).
# (1) bench/backward.py again, at bwd_fused_config's 16 x 32 tile as the default: does the rule hold in a second run?
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/next-job.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/next-job.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 200)) python3 results/step-rule.py "$root/step-rule-xception" xception >"$root/step-rule-xception.log" 2>&1
stamp "xception: $(grep -h '(4g)/(3g)\|(4w)/(3g)' "$root/step-rule-xception.md" | tr '\n' ';')"
timeout 300 python3 bench/backward.py "$root/backward-h200" >"$root/backward.log" 2>&1
stamp "backward: $(grep -h 'geomean\|cases where' "$root/backward-h200.md" | tr '\n' ';')"
