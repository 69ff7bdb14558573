#!/usr/bin/env bash
# Ran 2026-12-01 23:44-23:54 UTC on an H200 (no H100 was lent), as prepared the session before (it was
# results/next-job.sh): log results/h200-2026-12-01r.log and -r-gpu-tests.log.
# (1) Every GPU test, with the whole-run graph test's MobileNetV1 case twice more beside it: the test now turns
#     on torch's deterministic algorithms, which made 3 of 3 side-by-side runs pass where 3 of 3 had failed
#     (results/h200-2026-12-01q.log, -o.log); the whole suite had not run with it yet. Result: 59 passed, and
#     both extra runs passed.
# (2) python3 -m bench.step_profile for MobileNetV1 and Xception: killed by its timeout (about 300 s were left;
#     both nets need more) before it wrote anything. MobileNetV1's profile alone then ran in the next call
#     (results/h200-2026-12-01s.sh).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-01r.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-01r.sh OUTROOT}
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
