#!/usr/bin/env bash
# 2026-12-01, H200: does MobileNetV1's test configuration repeat at all, within a process and across processes,
# and which part does not (results/mobilenet-repeat.py says why it is asked)? Two processes side by side, as the
# graph tests ran in results/h200-2026-12-01o.sh. Log: results/h200-2026-12-01p.log.
# Run as: bash results/h200-2026-12-01p.sh OUTROOT
set -u
root=${1:?usage: results/h200-2026-12-01p.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
for i in 1 2; do
    python3 results/mobilenet-repeat.py "$root/repeat-$i" 380 >"$root/repeat-$i.log" 2>&1 &
done
wait
for i in 1 2; do stamp "process $i:"; grep -E "^run|nondeterministic|stopped|Error" "$root/repeat-$i.log"; done
