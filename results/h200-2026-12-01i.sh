#!/usr/bin/env bash
# Ran 2026-12-01 17:38-17:47 UTC on an H200 (log: results/h200-2026-12-01i.log; it was prepared as next-job.sh).
# First the depthwise benchmark at the nets' own layer shapes (issue 4: every committed depthwise result used a
# stale list that missed four of the nets' 15 layers; README "Triton kernels"); then ResNet-18 (below); last,
# if 300 s are left, the weight-pass benchmark at those shapes (its dispatch rule came from the old list too).
# On the H200 ResNet-18's in-place graph step (3g) holds at 78,700-80,900 images/s while the eager baseline
# runs at about 44,000 or 55,000, so (3g)/(1) is 1.45-1.86 (README, "Training step against the eager baseline,
# H200"). This asks whether Inductor's autotuning moves (3g) itself: ResNet-18's (1) and (3g), one process per
# setting, each timed alone, default first (coordinate descent left it unchanged, results/h200-2026-12-01h.log).
# Compare (3g)'s images/s across the settings (the same machine), and each (3g)/(1) within its process.
# If an H100 is lent, run results/h200-2026-12-01g.sh (every family, every variant) first instead: it works on
# any GPU and writes bench/results/<device>.md.
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> results/next-job.sh /tmp/s/runs`
# and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/next-job.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise benchmark ended: $(grep -m 1 'geomean fwd+bwd speedup bf16 channels_last vs best' "$root/depthwise-h200.md")"
for setting in "" TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1 TORCHINDUCTOR_MAX_AUTOTUNE=1; do
    name=${setting%%=*}; name=${name:-default}
    limit=$(($(left) - 330)); ((limit > 240)) && limit=240  # 240 s a setting, 300 s kept for the weight pass
    ((limit > 60)) || break
    # shellcheck disable=SC2086  # an empty setting must vanish, not become an empty argument
    env $setting timeout $limit python3 -m bench step nets=resnet18 variants=3g out="$root/$name" \
        >"$root/$name.log" 2>&1
    stamp "$name: $(grep -h '^| resnet18 | (3g)' "$root/$name/"*.md | cut -d'|' -f5 | tr -s ' \n' ' ') images/s;" \
        "$(grep -ho 'Summary.*' "$root/$name/"*.md)"
done
if (($(left) > 300)); then
    timeout $(($(left) - 20)) python3 bench/wgrad.py "$root/wgrad-h200" >"$root/wgrad.log" 2>&1
    stamp "weight-pass benchmark ended: $(tail -n 1 "$root/wgrad.log")"
fi
