#!/usr/bin/env bash
# The fast-recipe runs of 2026-12-01 on one H200 (results/fast/*-h200/): every run compiles at once on the
# CPU, then two at a time train on the GPU (SLOTS=2: more work done per device-second where one run alone
# leaves the GPU idle part of the time), so each training time includes the other run's share of the GPU.
# Started on the device machine as
#   results/background.sh start /tmp/s results/h200-2026-12-01.sh /tmp/s/runs
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT` in each call.
set -u
root=${1:?usage: results/h200-2026-12-01.sh OUTROOT}
cd "$(dirname "$0")/.."
source results/device-setup.sh  # nine processes compile at once: 4 compile threads each, not one per core each
SLOTS=2 results/together.sh "$root" \
    "$run MODEL=googlenet ARGS='recipe=fast epochs=80 download=false'" \
    "$run MODEL=xception ARGS='recipe=fast epochs=100 download=false'" \
    "$run MODEL=mobilenetv1 ARGS='recipe=fast epochs=200 download=false'" \
    "$run MODEL=resnet18 ARGS='recipe=fast epochs=200 mix=cutmix cutout=0 download=false'" \
    "$run MODEL=vgg16 ARGS='recipe=fast epochs=200 mix=cutmix cutout=0 download=false'" \
    "$run MODEL=vit ARGS='recipe=fast epochs=200 mix=cutmix download=false'" \
    "$run MODEL=resnet18 ARGS='recipe=fast epochs=80 seed=0 download=false'" \
    "after=150 $run MODEL=resnet18 ARGS='recipe=fast epochs=80 seed=1 download=false'" \
    "after=150 $run MODEL=resnet18 ARGS='recipe=fast epochs=80 seed=2 download=false'"
# The time left after the runs (END_AT: the epoch second by which the machine must be done) measures this
# device's benchmarks, each only where it fits: every family's training step (issue 6), the depthwise kernel
# (issue 4), the GPU tests (kernels inside torch.compile). On 2026-12-01 the runs ended with too little time
# left for any of them: none ran.
if (($(left) > 450)); then
    timeout $(($(left) - 30)) python3 -m bench step parallel=true out="$root/bench" deadline=$(($(left) - 90)) \
        >"$root/bench-step.log" 2>&1
fi
if (($(left) > 150)); then
    timeout $(($(left) - 30)) python3 bench/depthwise.py "$root/bench/depthwise-h200" >"$root/depthwise.log" 2>&1
fi
if (($(left) > 120)); then
    timeout $(($(left) - 30)) python3 -m pytest -q -m gpu tests >"$root/gpu-tests.log" 2>&1
fi
