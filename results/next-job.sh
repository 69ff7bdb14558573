#!/usr/bin/env bash
# PREPARED 2026-12-02, NOT YET RUN: the next device job. Rename it to results/<gpu>-<date>.sh once it has run,
# and keep its log beside it. If an H100 is lent, run results/h200-2026-12-01g.sh (every family, every variant;
# issue 6's acceptance run, any GPU) and bench/depthwise.py (issue 4's headline) first.
# (0) bench/wgrad.py, which now times the weight pass without the epilogue too ("plain", as the nets call it in
#     training): the per-kernel measurement behind wgrad_taps_config's plain rule (16 x 32 below 2**23 output
#     elements, 32 x 32 from there), which so far rests on two bench/depthwise.py runs' forward+backward.
# (1) The whole GPU suite: it last ran at 02:53 (61 passed), before the weight pass's 16-bit tile rule
#     (kernels.depthwise.wgrad_taps_config); only the kernels' GPU tests ran after it.
# (2) MobileNetV1's and Xception's whole compiled steps, (3g) against (4g), alternating in one process: the rule
#     has not been timed in the whole step (MobileNetV1 1.03 / 1.03 with 32 x 32 everywhere, 1.02 / 1.02 with
#     16 x 32 everywhere).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/next-job.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/next-job.sh OUTROOT}
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
