#!/usr/bin/env bash
# Ran 2026-12-02 02:48-02:58 UTC on an H200 (no H100 was lent), prepared the session before (it was
# results/next-job.sh): log results/h200-2026-12-02b.log and -b-gpu-tests.log. Results:
# bench/results/h200-xception-3g-4g-rows.{md,json} (replaced). Found: the whole GPU suite, 61 passed (the first
# full run since kernels.depthwise._empty allocates by strides); Xception (4g)/(3g) 1.00 / 1.01
# (16,998 against 17,028; 17,097 against 16,970 images/s, cudnn.benchmark off / on): the allocation fix that
# made MobileNetV1's step 3% faster with the kernels leaves Xception's where it was.
# (1) Every GPU test: the whole suite had not run since that change (only tests/test_depthwise_gpu.py had,
#     33 passed, results/h200-2026-12-02.log).
# (2) Xception, (3g) against (4g), alternating in one process: not re-run after the change until then. Before
#     it, 1.00 / 1.00 (21:29 UTC, 2026-12-01).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02b.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02b.sh OUTROOT}
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
