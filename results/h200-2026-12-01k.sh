#!/usr/bin/env bash
# Issue 4: the experimental "rows" schedule of the channels_last forward and stride-1 grad-input passes
# (kernels/depthwise_rows.py) against the tiled kernels, with the launch table tuned at the nets' layers
# (results/h200-2026-12-01j.log), each kernel alone: results/depthwise-rows.py.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> results/h200-2026-12-01k.sh /tmp/s/runs`.
set -u
root=${1:?usage: results/h200-2026-12-01k.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 10)) python3 results/depthwise-rows.py "$root/depthwise-rows.json" >"$root/depthwise-rows.log" 2>&1
stamp "rows ended: $(tail -n 1 "$root/depthwise-rows.log")"
