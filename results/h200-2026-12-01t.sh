#!/usr/bin/env bash
# Ran 2026-12-01 23:59-00:03 UTC on an H200, in one call of the device tool (201 s): MobileNetV1's step profile
# again, with Inductor's generated code logged, to see what the fused kernels that grow in (4) are
# (-s.sh's profile: 1.77 ms in (3), 1.85 ms in (4)). Found: kernels that only store NaN into the depthwise
# kernels' channels_last outputs before the kernels write them, 20 launches a step
# (results/h200-2026-12-01t-fills.txt, an excerpt of the 8 MB log). Its profile, under logging, is not kept.
set -u
out=${1:?usage: results/h200-2026-12-01t.sh OUTDIR}
cd "$(dirname "$0")/.."
source results/device-setup.sh >/dev/null 2>&1
TORCH_LOGS=output_code timeout 400 python3 -m bench.step_profile nets=mobilenetv1 out="$out/p2" >"$out/p2.log" \
    2>"$out/code.log"
echo "exit $?"
gzip "$out/code.log"
