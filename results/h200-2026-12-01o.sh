#!/usr/bin/env bash
# Ran 2026-12-01 21:18-21:37 UTC on an H200 (no H100 was lent), as prepared the session before: log
# results/h200-2026-12-01o.log (the job's stamps, the graph tests' failures, the rows sweep) and
# -o-gpu-tests.log; its results are in bench/results (depthwise-h200, depthwise-rows-h200.json,
# h200-{mobilenetv1,xception}-3g-4g-rows, step-profile-mobilenetv1). The device job for issue 4:
# (1) The whole-run graph test's MobileNetV1 case three times side by side, beside every GPU test (none of them
#     times anything): it failed in 4 of 5 runs on 2026-12-01 (results/h200-2026-12-01m.log, -n-gpu-tests.log)
#     with either depthwise schedule; the test now sets Inductor's deterministic mode, which should make the
#     runs with and without graphs agree. Does it?
# (2) bench/depthwise.py, the issue's headline figures, with the rows tables as they are now: the 16-bit tiles
#     grew at the four largest layers (1.12-1.19x each kernel alone, results/h200-2026-12-01n.log) and float32
#     got its own table; not yet measured forward+backward.
# (3) results/depthwise-rows.py: the sweep around the new tiles (256 channels at 32x32 only went from 64 to 128
#     channels a tile; 256 was not tried there).
# (4) MobileNetV1 and Xception, (3g) against (4g), alternating in one process each.
# (5) python3 -m bench.step_profile for MobileNetV1: the depthwise layers' share of the step's GPU time, (3)
#     cuDNN's against (4) the kernels' (the profile now has (4) and depthwise categories): how much of the step
#     the kernels can move at all, which the whole-step item of the issue turns on.
# If an H100 is lent, run results/h200-2026-12-01g.sh (every family, every variant; issue 6's acceptance run)
# first instead: it works on any GPU and writes bench/results/<device>.md.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-01o.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-01o.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
pids=()
for i in 1 2 3; do
    python3 -m pytest tests/test_train_e2e.py -q -m gpu -k "cuda_graph_run and mobilenet" >"$root/graphs-$i.log" 2>&1 &
    pids+=($!)
done
gpu_tests_start "$root"
wait "${pids[@]}"
for i in 1 2 3; do stamp "graphs-$i: $(tail -n 1 "$root/graphs-$i.log")"; done
gpu_tests_wait "$root"
timeout $(($(left) - 500)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise benchmark ended: $(grep -m 1 'geomean fwd+bwd speedup bf16 channels_last vs best' "$root/depthwise-h200.md")"
timeout $(($(left) - 420)) python3 results/depthwise-rows.py "$root/depthwise-rows.json" >"$root/depthwise-rows.log" 2>&1
stamp "rows sweep ended: $(grep '^geomean' "$root/depthwise-rows.log" | tr '\n' ';')"
for net in mobilenetv1 xception; do
    limit=$(($(left) - 60)); ((limit > 60)) || break
    timeout $limit python3 -m bench step nets=$net variants=3g,4g out="$root/$net" >"$root/$net.log" 2>&1
    stamp "$net: $(grep -ho 'Summary.*' "$root/$net/"*.md)"
done
if (($(left) > 150)); then
    timeout $(($(left) - 10)) python3 -m bench.step_profile nets=mobilenetv1 out="$root/profile" >"$root/profile.log" 2>&1
    stamp "profile ended: $(grep -i 'depthwise' "$root/profile/step-profile.md" | head -n 4 | tr '\n' ';')"
fi
