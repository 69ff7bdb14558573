#!/usr/bin/env bash
# 2026-12-01, H200: the CUDA-graph step with its state written in place (train.step.compile_in_place), now
# the trainer's (cudagraphs=auto, every net, the Triton-kernel nets included) and bench step's (3g)/(4g).
#   first  the GPU tests of the step and the trainer (the graph step against the compiled one, both gradient
#          forms; whole runs with and without graphs), holding the GPU while the rest compiles
#   then   ResNet-18's time to accuracy with it: recipe=fast 80 epochs without cutmix, seed 0, alone on the GPU
#   then   every family's training step, variants (1), (3g), (4g) only (with (3) and (4) too the compiles
#          would not fit this session's device time; results/h200-2026-12-01e.sh ran them all, with the graph
#          variants that copied the state), compiled beside the above and timed alone after it
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> results/h200-2026-12-01f.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-01f.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root/tta"
source results/device-setup.sh

gpu_tests_holding "$root/tta/gpu.lock" "$root" tests/test_step.py tests/test_train_e2e.py
python3 -m bench step parallel=true variants=1,3g,4g \
    nets=googlenet,xception,resnet50,mobilenetv1,vit,vgg16,resnet18,alexnet \
    out="$root/bench" gpu_lock="$root/tta/gpu.lock" deadline=$(($(left) - 20)) >"$root/bench-step.log" 2>&1 &
bench=$!
results/together.sh "$root/tta" "$run MODEL=resnet18 ARGS='recipe=fast epochs=80 mix=none cutout=8 download=false seed=0'" &
tta=$!
gpu_tests_release "$root"
wait $tta; stamp "the ResNet-18 run ended"
wait $bench; stamp "step benchmark ended"
