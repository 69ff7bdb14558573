#!/usr/bin/env bash
# Ran 2026-12-01 12:15-12:33 UTC on one H200 (log: results/h200-2026-12-01c.log; GPU tests: -gpu-tests.log),
# for issues 8 (the ViT, 0.57 short of 86.0), 6 (every family's step in one run) and 4 (the depthwise kernels):
#   first    the GPU tests (RandAugment's CUDA test had never run), beside the trainings
#   then     two ViT runs, two at a time: recipe=fast 300 epochs with RandAugment (2 ops, magnitude 9) and stochastic
#            depth 0.1 (results/fast/vit-randaugment-droppath-300ep-h200), and with RandAugment only
#            (results/fast/vit-randaugment-300ep-h200)
#   then     every family's training step (parallel=true), compiled beside the runs and timed alone after them
#   last     the depthwise benchmark (the weight pass now picks "taps" where it measured faster), and the profile
#            of ResNet-18's and VGG-16's steps (bench/step_profile.py: where the GPU time goes)
# As it ran, the profile module was bench/profile.py, which shadowed Python's own `profile` module for
# `python3 bench/depthwise.py` (bench/ first on sys.path): the depthwise benchmark failed at import and the
# profile wrote nothing. Renamed bench/step_profile.py (as below), both were re-run in the next call on the same
# machine, alone: `python3 bench/depthwise.py $OUT/depthwise-h200; python3 -m bench.step_profile out=$OUT`.
# Started on the device machine as
#   results/background.sh start /tmp/s env END_AT=<epoch second to be done by> results/h200-2026-12-01c.sh /tmp/s/runs
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT` in each call.
set -u
root=${1:?usage: results/h200-2026-12-01c.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root/p1"
source results/device-setup.sh

gpu_tests_start "$root"
exec 8>"$root/bench.lock"
flock 8 && stamp "holding bench.lock"
SLOTS=2 results/together.sh "$root/p1" \
    "$run MODEL=vit ARGS='recipe=fast epochs=300 randaugment=2 net.drop_path=0.1 download=false'" \
    "$run MODEL=vit ARGS='recipe=fast epochs=300 randaugment=2 download=false'" &
p1=$!
wait_compiled 2 $p1 "$root/p1"
stamp "the runs compiled; the step benchmark compiles"
python3 -m bench step parallel=true out="$root/bench" gpu_lock="$root/bench.lock" deadline=$(($(left) - 60)) \
    >"$root/bench-step.log" 2>&1 &
bench=$!
wait $p1; stamp "the ViT runs ended"
flock -u 8; exec 8>&-
wait $bench; stamp "step benchmark ended"
python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1; stamp "depthwise benchmark ended"
python3 -m bench.step_profile out="$root" >"$root/profile.log" 2>&1; stamp "profile ended"
gpu_tests_wait "$root"
