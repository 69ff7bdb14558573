"""The depthwise kernels compile for the GPU (sm_90 cubins, Triton's whole pipeline and ptxas) without one:
what the interpreter tests cannot see. tests/compile_for_hopper.py runs in its own process, since this
session's triton runs interpreted."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "compile_for_hopper.py"


def test_every_depthwise_kernel_variant_compiles_for_hopper():
    pytest.importorskip("triton.backends.nvidia")
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, (lines[-1:] or [out.stderr.strip()[-500:]])[0]
    kernels = {line.split()[1] for line in lines if line.startswith("compiled ")}
    assert kernels == {"_dwconv_fwd_kernel", "_dwconv_bwd_input_kernel", "_dwconv_bwd_weight_kernel",
                       "_dwconv_bwd_weight_taps_kernel", "_dwconv_wgrad_finish_kernel", "_dwconv_rows_kernel",
                       "_dwconv_bwd_weight_rows_kernel"}
    assert len(lines) == 34
