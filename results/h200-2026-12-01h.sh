#!/usr/bin/env bash
# 2026-12-01, H200, right after results/h200-2026-12-01g.sh on the same machine (log: results/h200-2026-12-01h.log):
#   the diagnostic for the whole-run CUDA-graph test's val-loss gap (results/graphs-diverge.py: six short
#   ResNet-18 width-4 runs), then ResNet-18's (1), (3), (3g) once more in one process
#   (bench/results/h200-resnet18.md; the all-family run of h200-2026-12-01g.sh had (3g)/(1) at 1.49 / 1.47).
# Started as `results/background.sh start /tmp/g env END_AT=<epoch second> results/h200-2026-12-01h.sh /tmp/g/runs`.
# In that run the diagnostic stopped at once (results/ was its sys.path[0], so `import train` failed; the script
# now puts the repository root there) and was run by itself in the next call:
# `PYTHONPATH=. python3 results/graphs-diverge.py /tmp/h/diverge` (results/h200-2026-12-01h-diverge.log).
set -u
root=${1:?usage: results/h200-2026-12-01h.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
python3 results/graphs-diverge.py "$root/diverge" >"$root/diverge.log" 2>&1
stamp "diagnostic ended: $(grep -c '^run ' "$root/diverge.log") runs"
if (($(left) > 200)); then
    python3 -m bench step nets=resnet18 variants=3,3g out="$root/bench-resnet18" deadline=$(($(left) - 15)) \
        >"$root/bench-resnet18.log" 2>&1
    stamp "ResNet-18: $(grep -o 'Summary.*' "$root/bench-resnet18/"*.md)"
fi
