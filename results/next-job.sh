#!/usr/bin/env bash
# PREPARED 2026-12-01, NOT YET RUN (bash -n only): the next device job. Rename it to results/<gpu>-<date>.sh
# once it has run, and keep its log beside it. If an H100 is lent, run results/h200-2026-12-01g.sh (every
# family, every variant; issue 6's acceptance run, any GPU) first instead.
# (1) Every GPU test, with the whole-run graph test's MobileNetV1 case twice more beside it: the test now turns
#     on torch's deterministic algorithms, which made 3 of 3 side-by-side runs pass where 3 of 3 had failed
#     (results/h200-2026-12-01q.log, -o.log); the whole suite has not run with it yet.
# (2) python3 -m bench.step_profile for MobileNetV1 and Xception: its .json now keeps every kernel by its full
#     name and counts cuDNN's depthwise kernels (*2d_c1_k1_nhwc*) as depthwise. In the last profile
#     (bench/results/step-profile-mobilenetv1.md) the kernels took the depthwise layers from at least 1.22 to
#     about 1.0 ms a step, yet Inductor's own kernels grew from 1.73 to 1.88 ms, so the step's GPU time stayed
#     3.7-3.8 ms: comparing the (3) and (4) kernel lists should say which fused kernels grew.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/next-job.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/next-job.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
pids=()
for i in 1 2; do
    python3 -m pytest tests/test_train_e2e.py -q -m gpu -k "cuda_graph_run and mobilenet" >"$root/graphs-$i.log" 2>&1 &
    pids+=($!)
done
gpu_tests_start "$root"
wait "${pids[@]}"
for i in 1 2; do stamp "graphs-$i: $(tail -n 1 "$root/graphs-$i.log")"; done
gpu_tests_wait "$root"
if (($(left) > 150)); then
    timeout $(($(left) - 10)) python3 -m bench.step_profile nets=mobilenetv1,xception out="$root/profile" \
        >"$root/profile.log" 2>&1
    stamp "profile ended: $(grep -h 'Summary' "$root/profile/step-profile.md")"
fi
