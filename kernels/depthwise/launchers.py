"""The launchers: each checks its arguments, brings the tensors dense into x's layout, picks the schedule and the
tile (kernels.depthwise.rules, unless the caller names them: the benchmarks' sweeps do), and launches the
kernels of kernels.depthwise.tiles, .rows, .weight or .onepass.

    launch_fwd         y = relu(dwconv(x) * scale + shift)                   tiles or rows
    launch_bwd_input   grad_x from grad_z, the gradient w.r.t. the conv output   tiles or rows (flipped, stride 1)
    launch_bwd_weight  grad_weight, grad_scale, grad_shift and grad_z          gather or taps, then the finishing sum
    launch_bwd_fused   grad_x, grad_weight, grad_shift in one pass              tiles or window, then the finishing sum

wrap=True routes the launches through torch.library.wrap_triton, as the triton_ops in kernels.depthwise.ops do;
the eager path launches directly. The weight passes split their loop over about WGRAD_TARGET_PROGRAMS programs
(`wgrad_steps`), each summing several tiles, so that the partial sums stay small.
"""

from kernels.depthwise.contract import output_hw
from kernels.depthwise.helpers import LaunchConfig, cdiv, dense, is_channels_last
from kernels.depthwise.onepass import fused_pass, window_pass
from kernels.depthwise.rows import launch_rows
from kernels.depthwise.rules import (
    FUSED_SCHEDULES,
    POINTWISE_VARIANTS,
    WGRAD_TARGET_PROGRAMS,
    WGRAD_VARIANTS,
    bwd_fused_config,
    pointwise_config,
    pointwise_variant,
    wgrad_config,
    wgrad_taps_config,
    wgrad_variant,
    window_config,
)
from kernels.depthwise.tiles import bwd_input_tiles, fwd_tiles
from kernels.depthwise.weight import finish_weight_grad, weight_pass


def _pointwise_variant(variant, config, kind, cl, dtype, H, W, stride, K) -> str:
    """variant as given, else "tiles" for an explicit config (the tuner's tiles), else pointwise_variant."""
    variant = variant or ("tiles" if config else pointwise_variant(kind, cl, dtype, H, W, stride, K))
    if variant not in POINTWISE_VARIANTS:
        raise ValueError(f"variant must be one of {POINTWISE_VARIANTS}, got {variant!r}")
    return variant


def launch_fwd(x, weight, scale, shift, stride: int, relu: bool, wrap: bool = False, config=None,
               variant: str | None = None):
    """y = relu(dwconv(x) * scale + shift): (N, C, OH, OW) in x's dtype and memory format.
    variant: "tiles", "rows" or None (pointwise_variant's choice); a config is a tile of the variant."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    cl = is_channels_last(x)
    x = dense(x, cl)
    if _pointwise_variant(variant, config, "fwd", cl, x.dtype, H, W, stride, K) == "rows":
        return launch_rows(x, weight, scale, shift, stride, relu, wrap=wrap, config=config)
    cfg = config or pointwise_config("fwd", cl, C, H, W, stride, K, cpu=not x.is_cuda)
    return fwd_tiles(x, weight, scale, shift, stride, relu, cl, cfg, wrap=wrap)


def launch_bwd_input(grad_z, weight, x, stride: int, wrap: bool = False, config=None, variant: str | None = None):
    """Gradient w.r.t. x given grad_z, the gradient w.r.t. the conv output; x gives shape, dtype, layout.
    variant as in launch_fwd ("rows": the stride-1 forward of grad_z with the kernel flipped)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    cl = is_channels_last(x)
    grad_z = dense(grad_z, cl)
    if _pointwise_variant(variant, config, "bwd_input", cl, x.dtype, H, W, stride, K) == "rows":
        if stride != 1:
            raise ValueError(f"variant='rows' computes the grad-input pass at stride 1 only, got stride {stride}")
        return launch_rows(grad_z, weight, None, None, 1, False, flip=True, wrap=wrap, config=config)
    cfg = config or pointwise_config("bwd_input", cl, C, H, W, stride, K, cpu=not x.is_cuda)
    return bwd_input_tiles(grad_z, weight, x, stride, cl, cfg, wrap=wrap)


def _split(total: int, col_programs: int, programs: int):
    """(steps per program, programs along axis 0, col_programs): `total` loop steps split over about
    `programs` programs in all, col_programs of them along axis 1."""
    steps = cdiv(total, max(1, min(total, programs // col_programs)))
    return steps, cdiv(total, steps), col_programs


def wgrad_steps(channels_last: bool, N: int, C: int, H: int, W: int, stride: int, cfg: LaunchConfig,
                programs: int = WGRAD_TARGET_PROGRAMS):
    """(loop steps per program, programs along axis 0, along axis 1) for the weight-gradient kernels."""
    OH, OW = output_hw(H, W, stride)
    if channels_last:  # steps of BLOCK_R pixels; channels along axis 1
        return _split(cdiv(N * OH * OW, cfg.block_r), cdiv(C, cfg.block_k), programs)
    # steps of one (image, pixel block); channels along axis 1
    return _split(N * cdiv(OH * OW, cfg.block_k), cdiv(C, cfg.block_r), programs)


def launch_bwd_weight(grad_y, x, weight, scale, shift, stride: int, relu: bool, store_grad_z: bool,
                      wrap: bool = False, config=None, programs: int = WGRAD_TARGET_PROGRAMS,
                      variant: str | None = None):
    """(grad_weight, grad_scale, grad_shift, grad_z); see the triton_op kernels.depthwise.ops.dwconv_bwd_weight.

    variant: "gather" (the (rows, taps, cols) kernel, every layout and kernel size), "taps" (nine shifted 2-D
    loads, channels_last 3x3 only, `wgrad_taps_config`), or None: `wgrad_variant`'s choice. Both fill the
    same partial sums. A `config` is a tile of the variant it is given with (name the variant with it)."""
    N, C, H, W = x.shape
    K = weight.shape[-1]
    cl = is_channels_last(x)
    variant = variant or wgrad_variant(cl, x.dtype, N, C, H, W, stride, K)
    if variant not in WGRAD_VARIANTS:
        raise ValueError(f"variant must be one of {WGRAD_VARIANTS}, got {variant!r}")
    if variant != "gather" and not (cl and K == 3):
        raise ValueError(f"variant={variant!r} takes channels_last x and a 3x3 kernel, got "
                         f"{'channels_last' if cl else 'NCHW'} x and a {K}x{K} kernel")
    x, grad_y = dense(x, cl), dense(grad_y, cl)
    cpu = not x.is_cuda
    need_z = relu or scale is not None  # the pass recomputes z for relu's mask or for dscale
    cfg = config or (wgrad_taps_config(x.dtype, N, C, H, W, stride, need_z, cpu=cpu) if variant == "taps" else
                     wgrad_config(cl, C, H, W, stride, K, cpu=cpu))
    steps, groups, col_programs = wgrad_steps(cl, N, C, H, W, stride, cfg, programs)
    part, gz = weight_pass(grad_y, x, weight, scale, shift, stride, relu, store_grad_z, variant, cl, cfg, steps,
                           groups, col_programs, wrap=wrap)
    return (*finish_weight_grad(part, weight, scale, shift, wrap), gz)


def launch_bwd_fused(grad_y, x, weight, shift, wrap: bool = False, config=None,
                     programs: int = WGRAD_TARGET_PROGRAMS, schedule: str = "tiles"):
    """(grad_x, grad_weight, grad_shift) in one pass (kernels.depthwise.onepass), for channels_last x, a 3x3
    weight, stride 1 and an epilogue that leaves the gradient unchanged (shift alone, or none: grad_y is the
    gradient w.r.t. the conv output); grad_shift is empty when shift is None. schedule: "tiles" (pixel tiles of
    the whole batch; config a (BLOCK_R, BLOCK_K, num_warps) tile, by default bwd_fused_config's) or "window"
    (whole rows down each image; config (ROWS, BLOCK_K, num_warps), by default window_config's)."""
    N, C, H, W = x.shape
    if not is_channels_last(x) or weight.shape[-2:] != (3, 3) or grad_y.shape != x.shape:
        raise ValueError(f"launch_bwd_fused takes channels_last x, a 3x3 weight and stride 1 (grad_y of x's "
                         f"shape), got x strides {x.stride()}, a {tuple(weight.shape[-2:])} kernel and grad_y "
                         f"{tuple(grad_y.shape)} for x {tuple(x.shape)}")
    if schedule not in FUSED_SCHEDULES:
        raise ValueError(f"schedule must be one of {FUSED_SCHEDULES}, got {schedule!r}")
    x, grad_y = dense(x, True), dense(grad_y, True)
    cpu = not x.is_cuda
    if schedule == "window":  # loop steps of ROWS rows of one image
        cfg, one_pass = config or window_config(C, H, W, x.dtype, cpu=cpu), window_pass
        steps, groups, col_programs = _split(N * cdiv(H, cfg.block_r), cdiv(C, cfg.block_k), programs)
    else:  # loop steps of BLOCK_R pixels of the whole batch
        cfg, one_pass = config or bwd_fused_config(C, cpu=cpu), fused_pass
        steps, groups, col_programs = wgrad_steps(True, N, C, H, W, 1, cfg, programs)
    dx, part = one_pass(grad_y, x, weight, shift, cfg, steps, groups, col_programs, wrap=wrap)
    grad_w, _, grad_shift = finish_weight_grad(part, weight, None, shift, wrap)
    return dx, grad_w, grad_shift
