#!/usr/bin/env bash
# The launch-configuration sweep of the depthwise kernels at the nets' own layers (issue 4): `bench/depthwise.py
# --tune` had kept the stale hand-written shape list (tune_shapes now reads the nets), so the measured table
# in kernels/depthwise.py (_MEASURED_CL) covers only 7 of the 15 channels_last layers and the rest use rules.
# Then results/wgrad-flips.py: why taps and gather differ by up to 4.8e-4 in float32 (results/h200-2026-12-01i.log).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> results/h200-2026-12-01j.sh /tmp/s/runs`.
set -u
root=${1:?usage: results/h200-2026-12-01j.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
python3 results/wgrad-flips.py >"$root/wgrad-flips.log" 2>&1
stamp "flips ended: $(tail -n 1 "$root/wgrad-flips.log")"
timeout $(($(left) - 20)) python3 bench/depthwise.py --tune >"$root/tune.log" 2>&1
stamp "tune ended: $(tail -n 1 "$root/tune.log")"
