"""The depthwise kernels compile for the GPU (sm_90 cubins, Triton's whole pipeline and ptxas) without one:
what the interpreter tests cannot see. tests/compile_for_hopper.py runs in its own process, since this
session's triton runs interpreted. The GPU machine's Triton (3.6) is older than this one's, so the kernels'
source is also checked for what it rejects."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "compile_for_hopper.py"
KERNELS = Path(__file__).resolve().parents[1] / "kernels"


def nested_tuple_targets(source: str) -> list[int]:
    """The lines of @triton.jit functions in `source` that assign to a nested tuple, `(a, b), c = ...`.
    Triton 3.6 computes a kernel's cache key by walking its functions (jit.py's DependenciesFinder), which
    raises "TypeError: unhashable type: 'list'" at the first launch on such a target; Triton 3.8 and the
    interpreter accept it."""
    jitted = [f for f in ast.walk(ast.parse(source)) if isinstance(f, ast.FunctionDef)
              and any("jit" in ast.unparse(d) for d in f.decorator_list)]
    return sorted({node.lineno for f in jitted for node in ast.walk(f) if isinstance(node, ast.Assign)
                   for t in node.targets if isinstance(t, ast.Tuple)
                   and any(isinstance(e, (ast.Tuple, ast.List)) for e in t.elts)})


def test_no_kernel_assigns_to_a_nested_tuple():
    nested = "@triton.jit\ndef f(x):\n    (a, b), c = (x, x), x\n    d, e = a, b\n    return c\n"
    assert nested_tuple_targets(nested) == [3]
    assert nested_tuple_targets(nested.replace("@triton.jit\n", "")) == []  # only jit functions are checked
    found = {str(path.relative_to(KERNELS)): nested_tuple_targets(path.read_text())
             for path in sorted(KERNELS.rglob("*.py"))}
    assert "depthwise/rows.py" in found and not any(found.values()), found


def test_every_depthwise_kernel_variant_compiles_for_hopper():
    pytest.importorskip("triton.backends.nvidia")
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, (lines[-1:] or [out.stderr.strip()[-500:]])[0]
    kernels = {line.split()[1] for line in lines if line.startswith("compiled ")}
    assert kernels == {"_dwconv_fwd_kernel", "_dwconv_bwd_input_kernel", "_dwconv_bwd_weight_kernel",
                       "_dwconv_bwd_weight_taps_kernel", "_dwconv_wgrad_finish_kernel", "_dwconv_rows_kernel",
                       "_dwconv_bwd_fused_kernel", "_dwconv_bwd_window_kernel"}
    assert len(lines) == 34
