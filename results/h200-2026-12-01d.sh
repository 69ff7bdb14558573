#!/usr/bin/env bash
# 2026-12-01, third session: the first runs of the compiled step as CUDA graphs (maybe_compile(cudagraphs=True),
# torch.compile's mode="reduce-overhead"), after bench/step_profile.py found the GPU busy 46% of the compiled
# ResNet-18 step. Run in one call of the device tool as `results/h200-2026-12-01d.sh $OUT`:
#   the step benchmark of ResNet-18, VGG-16 and AlexNet with (3g) beside (1)-(3), compiled in parallel and timed
#   alone; beside it, a short ResNet-18 training run with cudagraphs=true (the trainer's loop under graphs),
#   which takes the GPU lock the benchmark's timing also waits for.
set -u
out=${1:?usage: results/h200-2026-12-01d.sh OUT}
cd "$(dirname "$0")/.."
source results/device-setup.sh
python3 -m bench step parallel=true nets=resnet18,vgg16,alexnet out="$out/bench" gpu_lock="$out/gpu.lock" \
    deadline=200 >"$out/bench-step.log" 2>&1 &
bench=$!
make --no-print-directory train $run MODEL=resnet18 OUT="$out/resnet18-graphs" \
    ARGS="recipe=fast epochs=4 cudagraphs=true gpu_lock=$out/gpu.lock download=false progress=false" \
    >"$out/resnet18-graphs.log" 2>&1
stamp "training ended: $(tail -n 1 "$out/resnet18-graphs.log")"
wait $bench; stamp "step benchmark ended"
