#!/usr/bin/env bash
# PREPARED 2026-12-02, NOT YET RUN: the next device job. Rename it to results/<gpu>-<date>.sh once it has run,
# and keep its log beside it. If an H100 is lent, run results/h200-2026-12-01g.sh (every family, every variant;
# issue 6's acceptance run, any GPU) and bench/depthwise.py (issue 4's headline) first.
# (0) Why Xception's whole step gains nothing from the depthwise kernels ((4g)/(3g) 1.00 / 1.00 in
#     results/h200-2026-12-02f.sh) while MobileNetV1's gains 4%: its step profile, (3) against (4), as
#     MobileNetV1's was profiled (bench/results/step-profile-mobilenetv1.md): where the depthwise time goes,
#     and whether Inductor's kernels grow around ours.
# (1) The whole GPU suite (last: 61 passed at 2026-12-02 06:28; the kernels are unchanged since, and their GPU
#     tests passed at 06:43).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/next-job.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/next-job.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 400)) python3 -m bench.step_profile nets=xception out="$root" >"$root/profile.log" 2>&1
stamp "xception profile: $(tail -n 1 "$root/profile.log")"
gpu_tests_start "$root"
gpu_tests_wait "$root"
