#!/usr/bin/env bash
# Ran 2026-12-02 07:04-07:07 UTC on an H200, the session's last device time: log results/h200-2026-12-02h.log,
# -h-gpu-tests.log, -h-wgrad-window.log; result bench/results/depthwise-h200-window.{md,json}. The "taps" weight
# pass with one address and four masks per element (kernels.depthwise._x_window, every tap's address a
# compile-time offset from the centre's) in place of each tap's own index arithmetic (_x_tap, kept as the
# "taps-indexed" variant for this run). (0) python3 results/wgrad-window.py, the two side by side: its timeout
# (set too short for this machine's start) killed it after the last case and before it wrote its file, so no
# side-by-side figures came back. (1) bench/depthwise.py with _x_window, against the 06:42 run with _x_tap
# (bench/results/depthwise-h200.md, same machine kind, the rest of the code the same): the kernels'
# forward+backward time old / new, geometric mean, 0.925x in fp32 channels_last (0.85-1.01x) and 0.992x in bf16
# channels_last (0.96-1.01x), while the rows that do not run the taps pass stayed (NCHW, gather: 0.998x and
# 0.999x; forward 1.000-1.005x; PyTorch 0.997-1.001x): _x_window is slower, and was reverted. Headline with it
# 1.23x (1.24x), largest layers 39.9 / 41.3 / 36.1% (39.9 / 41.9 / 37.5%). (2) tests/test_depthwise_wgrad_taps.py
# on the GPU: 21 passed; tests/test_depthwise_gpu.py did not start (no time left). The kernel and the script are
# in git history at dbc3dd3 (kernels/depthwise.py, results/wgrad-window.py).
# Started as `results/background.sh start /tmp/s env END_AT=<epoch second> bash results/h200-2026-12-02h.sh
# /tmp/s/runs` and collected with `results/background.sh wait /tmp/s SECONDS $OUT`.
set -u
root=${1:?usage: results/h200-2026-12-02h.sh OUTROOT}
cd "$(dirname "$0")/.."
mkdir -p "$root"
source results/device-setup.sh
timeout $(($(left) - 180)) python3 results/wgrad-window.py "$root/wgrad-window-h200" >"$root/wgrad-window.log" 2>&1
stamp "wgrad-window: $(grep -h 'taps-indexed / taps' "$root/wgrad-window-h200.md" | tr '\n' ';')"
timeout $(($(left) - 50)) python3 bench/depthwise.py "$root/depthwise-h200" >"$root/depthwise.log" 2>&1
stamp "depthwise: $(grep -h 'geomean\|largest layers' "$root/depthwise-h200.md" | tr '\n' ';')"
timeout $(($(left) - 2)) python3 -m pytest -q tests/test_depthwise_wgrad_taps.py >"$root/gpu-tests.log" 2>&1
stamp "GPU weight-pass tests: $(tail -n 1 "$root/gpu-tests.log")"
(($(left) > 60)) && timeout $(($(left) - 2)) python3 -m pytest -q tests/test_depthwise_gpu.py >"$root/gpu-tests-2.log" 2>&1
stamp "GPU depthwise tests: $(tail -n 1 "$root/gpu-tests-2.log" 2>/dev/null)"
