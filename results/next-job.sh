#!/usr/bin/env bash
# PREPARED 2026-12-01, NOT YET RUN (bash -n only): the next device job, for issue 6. Rename it to
# results/<gpu>-<date>.sh once it has run, and keep its log beside it.
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
for setting in "" TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1 TORCHINDUCTOR_MAX_AUTOTUNE=1; do
    (($(left) > 240)) || break
    name=${setting%%=*}; name=${name:-default}
    # shellcheck disable=SC2086  # an empty setting must vanish, not become an empty argument
    env $setting timeout $(($(left) - 30)) python3 -m bench step nets=resnet18 variants=3g out="$root/$name" \
        >"$root/$name.log" 2>&1
    stamp "$name: $(grep -h '^| resnet18 | (3g)' "$root/$name/"*.md | cut -d'|' -f5 | tr -s ' \n' ' ') images/s;" \
        "$(grep -ho 'Summary.*' "$root/$name/"*.md)"
done
