#!/usr/bin/env bash
# The second batch of 2026-12-01 on one H200: three fast-recipe runs (issue 8), every family's training step
# (issue 6), the depthwise kernel (issue 4) and the GPU tests, in one job of about 20 minutes:
#   now      the GPU tests start (they check numbers, not speed, so they may share the GPU);
#            VGG-16 and the ViT compile, then train two at a time (lock p1/gpu.lock, SLOTS=2);
#            GoogLeNet compiles beside them, then waits for p2/gpu.lock, which this script holds until both
#            have ended: it trains alone (its 120 epochs take 3.5 s each alone, 5.9 beside another run:
#            results/fast/googlenet-80ep-h200), so its training seconds are its own;
#   then     once GoogLeNet has compiled, the step benchmark compiles every family (parallel=true) and waits
#            for bench.lock, held here until the runs have ended, so each family is timed on an idle GPU;
#   last     the depthwise benchmark, alone.
# Started on the device machine as
#   results/background.sh start /tmp/s env END_AT=<epoch second to be done by> results/h200-2026-12-01b.sh /tmp/s/runs
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT` in each call.
set -u
root=${1:?usage: results/h200-2026-12-01b.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root/p1" "$root/p2"
source results/device-setup.sh

gpu_tests_start "$root" tests/test_depthwise_gpu.py tests/test_attention_gpu.py tests/test_data_loader.py tests/test_mix.py tests/test_train_e2e.py

exec 8>"$root/bench.lock" 9>"$root/p2/gpu.lock"
flock 8 && flock 9 && stamp "holding bench.lock and p2/gpu.lock"
SLOTS=2 results/together.sh "$root/p1" \
    "$run MODEL=vgg16 ARGS='recipe=fast epochs=250 download=false'" \
    "$run MODEL=vit ARGS='recipe=fast epochs=350 download=false'" &
p1=$!
results/together.sh "$root/p2" "$run MODEL=googlenet ARGS='recipe=fast epochs=120 mix=cutmix cutout=0 download=false'" &
p2=$!

wait_compiled 1 $p2 "$root/p2"
stamp "GoogLeNet compiled; the step benchmark compiles"
python3 -m bench step parallel=true out="$root/bench" gpu_lock="$root/bench.lock" deadline=$(($(left) - 200)) \
    >"$root/bench-step.log" 2>&1 &
bench=$!

wait $p1; stamp "VGG-16 and the ViT ended"
flock -u 9; exec 9>&-
wait $p2; stamp "GoogLeNet ended"
flock -u 8; exec 8>&-
wait $bench; stamp "step benchmark ended"
gpu_tests_wait "$root"
if (($(left) > 150)); then
    timeout $(($(left) - 30)) python3 bench/depthwise.py "$root/bench/depthwise-h200" >"$root/depthwise.log" 2>&1
    stamp "depthwise benchmark ended"
fi
