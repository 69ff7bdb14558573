"""Device diagnostic for bench/wgrad.py's "rows with rel err over MATCH_TOL" (40 of 120 float32 rows at the nets'
layers, H200, results/h200-2026-12-01i.log): taps and gather differ by up to 4.8e-4 (||taps - gather|| / ||gather||)
in float32, the same for every taps tile. Is one of them wrong, or do both recompute the pre-activation z in
another order, so that relu's mask flips where z is within rounding of 0 (one flipped element of grad_z is enough
for 4.8e-4)? Compares both against a float64 reference of the same pass, output by output, and counts the grad_z
elements where the two kernels disagree, with the largest |z| (float64) among them.
Usage (on a GPU, from the repository root): python3 results/wgrad-flips.py"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.wgrad import _epilogue_params, _inputs  # noqa: E402
from kernels import depthwise as dw  # noqa: E402

CASES = [(256, 1024, 4, 1), (512, 64, 32, 1), (512, 256, 16, 1), (256, 728, 16, 1), (512, 32, 32, 1)]
NAMES = ("grad_weight", "grad_scale", "grad_shift", "grad_z")


def reference(gy, x, w, scale, shift, stride):
    """The pass in float64: (grad_weight, grad_scale, grad_shift, grad_z) and z."""
    x, gy, w, scale, shift = (t.double() for t in (x, gy, w, scale, shift))
    C = x.shape[1]
    z = F.conv2d(x, w, stride=stride, padding=1, groups=C)
    g = gy * (z * scale.view(1, C, 1, 1) + shift.view(1, C, 1, 1) > 0)
    gz = g * scale.view(1, C, 1, 1)
    gw = torch.nn.grad.conv2d_weight(x, w.shape, gz, stride=stride, padding=1, groups=C)
    return (gw, (g * z).sum((0, 2, 3)), g.sum((0, 2, 3)), gz), z * scale.view(1, C, 1, 1) + shift.view(1, C, 1, 1)


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


torch.manual_seed(0)
for N, C, H, stride in CASES:
    xs, gs = _inputs(N, C, H, stride, torch.float32, "cuda", 1)
    w, scale, shift = _epilogue_params(C, "cuda")
    outs = {v: dw.launch_bwd_weight(gs[0], xs[0], w, scale, shift, stride, True, True, variant=v)
            for v in dw.WGRAD_VARIANTS}
    ref, pre = reference(gs[0], xs[0], w, scale, shift, stride)
    print(f"N={N} C={C} H={H} s={stride} float32, rel err against float64:")
    for v, out in outs.items():
        print(f"  {v:6s} " + ", ".join(f"{n} {rel(o, r):.2e}" for n, o, r in zip(NAMES, out, ref)))
    differ = outs["taps"][3] != outs["gather"][3]
    ex = pre[differ].abs()
    print(f"  taps vs gather: {rel(outs['taps'][3], outs['gather'][3]):.2e} in grad_z; {int(differ.sum())} of "
          f"{differ.numel()} grad_z elements differ, the largest |pre-activation| among them "
          f"{ex.max().item() if ex.numel() else 0:.2e}; elements with |pre-activation| < 1e-6: "
          f"{int((pre.abs() < 1e-6).sum())}")
