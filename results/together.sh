#!/usr/bin/env bash
# Start several `make train` runs at once on one GPU: they compile side by side on the CPU, then train one at
# a time (gpu_lock=), so each run's training seconds are its own. Usage, one run per argument:
#   results/together.sh OUTROOT "MODEL=resnet18 ARGS='recipe=fast epochs=60'" "MODEL=vgg16 ARGS='...'" ...
# Each run writes OUTROOT/<name>/ and its log OUTROOT/<name>.log, <name> = MODEL plus a number when repeated.
# A run whose first word is "after=SECONDS" starts that much later (to reuse the compile cache of an earlier
# run of the same net, as torch.compile's on-disk cache then holds its graphs). SLOTS=N lets N of the runs
# train at once (gpu_slots=N; default 1: one at a time).
set -u
root=$1; shift
mkdir -p "$root"
i=0
for spec in "$@"; do
    i=$((i + 1))
    delay=0
    if [[ $spec == after=* ]]; then delay=${spec%% *}; delay=${delay#after=}; spec=${spec#* }; fi
    model=$(sed -E 's/.*MODEL=([^ ]+).*/\1/' <<<"$spec")
    name=$model-$i
    (sleep "$delay"; eval make --no-print-directory train "$spec" OUT="$root/$name" \
        "ARGS+=' gpu_lock=$root/gpu.lock gpu_slots=${SLOTS:-1} progress=false'" >"$root/$name.log" 2>&1; echo "exit $?" >>"$root/$name.log") &
done
wait
