"""Compiles every Triton kernel of kernels/depthwise/ to an sm_90 (H100/H200) cubin on a machine without a GPU,
in a process of its own with TRITON_INTERPRET=0: Triton's front end, its MLIR passes and ptxas all run on the
CPU, so this catches what the interpreter cannot (code generation: constexpr branches, jit helpers, types),
though not numbers or speed, nor what this Triton accepts and an older one does not
(tests/test_kernels_compile.py checks one such case in the source). The kernels are found by walking the
package (every @triton.jit function named *_kernel), so a kernel without variants here is a failure.
Prints one line per kernel variant; exits 1 on the first failure.

    python3 tests/compile_for_hopper.py
"""

import importlib
import os
import pkgutil
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # before triton is imported: real JIT functions, not interpreted ones
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import kernels.depthwise  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)  # Hopper, 32 threads per warp
FLOAT32_POINTERS = {"w_ptr", "scale_ptr", "shift_ptr", "part_ptr", "gw_ptr", "gscale_ptr", "gshift_ptr"}


def signature(kernel, consts: dict) -> dict:
    """Triton types of `kernel`'s arguments: bf16 activations, float32 weights and sums, int32 sizes."""
    sig = {}
    for name in kernel.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in FLOAT32_POINTERS else "*bf16"
        else:
            sig[name] = "i32"
    return sig


def depthwise_kernels() -> dict:
    """Every @triton.jit kernel (a function named *_kernel) defined in a module of kernels.depthwise, by name."""
    found = {}
    for info in pkgutil.iter_modules(kernels.depthwise.__path__):
        module = importlib.import_module(f"kernels.depthwise.{info.name}")
        found |= {fn.__name__: fn for fn in vars(module).values() if isinstance(fn, JITFunction)
                  and fn.__name__.endswith("_kernel") and fn.__module__ == module.__name__}
    return found


def variants():
    """(kernel name, constexprs) pairs: both layouts, strides 1 and 2, with and without the full epilogue."""
    for cl in (True, False):
        for stride in (1, 2):
            for ep in (True, False):
                geometry = dict(C=64, H=16, W=16, STRIDE=stride, K=3, CHANNELS_LAST=cl)
                flags = dict(HAS_SCALE=ep, HAS_SHIFT=ep, RELU=ep)
                yield "_dwconv_fwd_kernel", dict(geometry, **flags, BLOCK_R=32, BLOCK_K=32)
                yield "_dwconv_bwd_weight_kernel", dict(geometry, KKP=16, **flags, NEED_Z=ep, STORE_GZ=ep,
                                                        BLOCK_R=8, BLOCK_K=32)
                if cl:
                    yield "_dwconv_rows_kernel", dict(C=64, H=16, W=16, STRIDE=stride, FLIP=not ep, **flags,
                                                      UPCAST=ep, ROWS=4, BLOCK_W=16 // stride, BLOCK_K=64)
                    yield "_dwconv_bwd_weight_taps_kernel", dict(C=64, H=16, W=16, STRIDE=stride, **flags,
                                                                 NEED_Z=ep, STORE_GZ=ep, BLOCK_R=32, BLOCK_K=32)
            yield "_dwconv_bwd_input_kernel", dict(C=64, H=16, W=16, STRIDE=stride, K=3, CHANNELS_LAST=cl,
                                                   BLOCK_R=32, BLOCK_K=32)
    for ep in (True, False):
        yield "_dwconv_wgrad_finish_kernel", dict(C=64, KK=9, HAS_SCALE=ep, HAS_SHIFT=ep, BLOCK_G=32, BLOCK_C=64)
        yield "_dwconv_bwd_fused_kernel", dict(C=64, H=16, W=16, HAS_SHIFT=ep, BLOCK_R=16, BLOCK_K=32)
        yield "_dwconv_bwd_window_kernel", dict(C=64, H=16, W=16, HAS_SHIFT=ep, ROWS=8, BLOCK_W=16, BLOCK_K=32)


def main() -> int:
    found = depthwise_kernels()
    missing = sorted(set(found) - {name for name, _ in variants()})
    if missing:
        print(f"FAILED no variants here for {', '.join(missing)}")
        return 1
    for name, consts in variants():
        kernel = found[name]
        try:
            triton.compile(ASTSource(fn=kernel, signature=signature(kernel, consts), constexprs=consts),
                           target=TARGET)
        except Exception as e:  # report which variant, then stop
            print(f"FAILED {name} {consts}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            return 1
        print(f"compiled {name} {consts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
