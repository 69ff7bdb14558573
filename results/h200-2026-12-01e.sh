#!/usr/bin/env bash
# 2026-12-01, H200 (ran as results/next-job.sh; log results/h200-2026-12-01e.log, GPU tests
# results/h200-2026-12-01e-gpu-tests.log, bench/results/h200.md (now h200-copying.md: the next every-variant
# run took its name) and h200-3s.md, the ResNet-18 runs in
# results/cudagraphs/resnet18-80ep-seed*-h200/). The graph variants (3g)/(4g) here still copied the state in
# and out; bench step's inplace=true and (3s) were folded into (3g)/(4g) after this run (results/h200-2026-12-01f.sh).
#   first    the GPU tests (the CUDA-graph step test, tests/test_step.py, has never run), beside the trainings
#   then     ResNet-18's time to accuracy with CUDA graphs (the default since 2026-12-01): recipe=fast 80 epochs
#            without cutmix, seeds 0-2, compiled together and trained one at a time (each alone on the GPU)
#   then     every family's training step with (3g) and (4g) (parallel=true), compiled beside the runs and timed
#            alone after them; give it its own minutes: about twice the compiles of the 2026-12-01c run
#            (GoogLeNet's (3) and (3g), one after the other in one process, about 11 minutes)
#   and      the experimental (3s) (inplace=true: the graphs' state written in place, no copies) for ResNet-18,
#            VGG-16 and AlexNet, compiled beside the rest and timed after the every-family run
# Started on the device machine as
#   results/background.sh start /tmp/s env END_AT=<epoch second to be done by> results/next-job.sh /tmp/s/runs
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT` in each call.
set -u
root=${1:?usage: results/h200-2026-12-01e.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root/tta"
source results/device-setup.sh

gpu_tests_start "$root"
exec 8>"$root/bench.lock"
exec 9>"$root/bench-inplace.lock"
flock 8 && flock 9 && stamp "holding bench.lock and bench-inplace.lock"
args="recipe=fast epochs=80 mix=none cutout=8 download=false"
results/together.sh "$root/tta" "$run MODEL=resnet18 ARGS='$args seed=0'" \
    "after=120 $run MODEL=resnet18 ARGS='$args seed=1'" "after=120 $run MODEL=resnet18 ARGS='$args seed=2'" &
tta=$!
wait_compiled 1 $tta "$root/tta"
stamp "the first run compiled; the step benchmark compiles"
python3 -m bench step parallel=true out="$root/bench" gpu_lock="$root/bench.lock" deadline=$(($(left) - 30)) \
    >"$root/bench-step.log" 2>&1 &
bench=$!
python3 -m bench step parallel=true nets=resnet18,vgg16,alexnet inplace=true out="$root/bench-inplace" \
    gpu_lock="$root/bench-inplace.lock" deadline=$(($(left) - 30)) >"$root/bench-inplace.log" 2>&1 &
inplace=$!
wait $tta; stamp "the ResNet-18 runs ended"
flock -u 8; exec 8>&-
wait $bench; stamp "step benchmark ended"
flock -u 9; exec 9>&-
wait $inplace; stamp "in-place step benchmark ended"
gpu_tests_wait "$root"
