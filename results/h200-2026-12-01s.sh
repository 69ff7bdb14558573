#!/usr/bin/env bash
# Ran 2026-12-01 23:56 UTC on an H200, in one call of the device tool (99 s), after -r.sh's profile of two nets
# had run out of time: MobileNetV1's step profile alone. Its output is bench/results/step-profile-mobilenetv1-fills.md
# and .json (named for what -t.sh found in it); log results/h200-2026-12-01s.log. Run in the call as
#   results/background.sh start /tmp/s bash results/h200-2026-12-01s.sh /tmp/s; results/background.sh wait /tmp/s 540 $OUT
set -u
root=${1:?usage: results/h200-2026-12-01s.sh OUTROOT}
cd "$(dirname "$0")/.."
source results/device-setup.sh >/dev/null 2>&1
timeout 520 python3 -m bench.step_profile nets=mobilenetv1 out="$root/profile" >"$root/profile.log" 2>&1
echo "profile exit $?"
