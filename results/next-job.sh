#!/usr/bin/env bash
# PREPARED 2026-12-02, NOT YET RUN (bash -n only): the next device job. Rename it to results/<gpu>-<date>.sh
# once it has run, and keep its log beside it. If an H100 is lent, run results/h200-2026-12-01g.sh (every
# family, every variant; issue 6's acceptance run, any GPU) first instead: no H100 figure has been taken since
# the depthwise kernels' outputs are allocated by strides.
# (1) Every GPU test: the whole suite has not run since that change (kernels.depthwise._empty; only
#     tests/test_depthwise_gpu.py ran after it, 33 passed, results/h200-2026-12-02.log).
# (2) Xception, (3g) against (4g), alternating in one process: not re-run after the change (the session's device
#     time ran out). Before it, 1.00 / 1.00 (bench/results/h200-xception-3g-4g-rows.md, 21:29 UTC); MobileNetV1
#     went from 1.00 / 0.99 to 1.03 / 1.03 with it.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/next-job.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/next-job.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
gpu_tests_start "$root"
gpu_tests_wait "$root"
if (($(left) > 250)); then
    timeout $(($(left) - 10)) python3 -m bench step nets=xception variants=3g,4g out="$root/xception" \
        >"$root/xception.log" 2>&1
    stamp "xception: $(grep -ho 'Summary.*' "$root/xception/"*.md)"
fi
