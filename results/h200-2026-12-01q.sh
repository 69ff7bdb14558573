#!/usr/bin/env bash
# 2026-12-01, H200: the whole-run graph test's MobileNetV1 case three times side by side, now with
# torch.use_deterministic_algorithms(True, warn_only=True) besides Inductor's deterministic mode: in
# results/h200-2026-12-01p.log eager runs repeated bit for bit across processes and a compiled one within its
# process, but two compilations of one graph could differ (2.3384 against 2.3247 at epoch 1). Log:
# results/h200-2026-12-01q.log. Run as: bash results/h200-2026-12-01q.sh OUTROOT
set -u
root=${1:?usage: results/h200-2026-12-01q.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
for i in 1 2 3; do
    python3 -m pytest tests/test_train_e2e.py -q -m gpu -k "cuda_graph_run and mobilenet" >"$root/graphs-$i.log" 2>&1 &
done
wait
for i in 1 2 3; do stamp "graphs-$i: $(tail -n 1 "$root/graphs-$i.log")"; grep "losses with graphs" "$root/graphs-$i.log"; done
