#!/usr/bin/env bash
# 2026-12-01, H200 (log: results/h200-2026-12-01g.log), prepared the session before as results/next-job.sh and
# run as written, for issues 6 and 4:
#   first  the GPU tests, all of them, holding the GPU while the rest compiles (results/h200-2026-12-01g-gpu-tests.log:
#          58 passed; the whole-run CUDA-graph test failed on one val loss, which results/h200-2026-12-01h.sh
#          then traced to the chaos of that val loss, not to the graphs)
#   then   a 3-epoch ViT training with the trainer's CUDA graphs, its first GPU run of them
#          (results/cudagraphs/vit-3ep-h200/)
#   then   every family's training step, every variant, with the graphs' state in place, in one run
#          (bench/results/h200.md; the previous every-variant run, with graphs that copied, is h200-copying.md)
#   last   MobileNetV1's (3g) and (4g) in one process, timed alternately (bench/results/h200-mobilenetv1-3g-4g.md)
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> results/h200-2026-12-01g.sh /tmp/s/runs`
# (END_AT 1480 s after the start) and collected with `results/background.sh wait /tmp/s 560 $OUT`, twice.
set -u
root=${1:?usage: results/h200-2026-12-01g.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root/runs"
source results/device-setup.sh

gpu_tests_holding "$root/runs/gpu.lock" "$root"
python3 -m bench step parallel=true nets=googlenet,xception,resnet50,mobilenetv1,vit,vgg16,resnet18,alexnet \
    out="$root/bench" gpu_lock="$root/runs/gpu.lock" deadline=$(($(left) - 20)) >"$root/bench-step.log" 2>&1 &
bench=$!
results/together.sh "$root/runs" "$run MODEL=vit ARGS='recipe=fast epochs=3 download=false'" &
vit=$!
gpu_tests_release "$root"
wait $vit; stamp "the ViT run ended: $(tail -n 2 "$root/runs/vit-1.log" | head -n 1)"
wait $bench; stamp "step benchmark ended"
if (($(left) > 400)); then
    python3 -m bench step nets=mobilenetv1 variants=3g,4g out="$root/bench-mobilenetv1" >"$root/bench-mobilenetv1.log" 2>&1
    stamp "MobileNetV1 in one process: $(grep -o 'mobilenetv1 (4g)/(3g)[^;]*' "$root/bench-mobilenetv1/"*.md | head -n 2 | tr '\n' ' ')"
fi
