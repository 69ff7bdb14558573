"""Which kernel and which tile each depthwise call takes: the measured launch tables and the dispatch rules.

Every choice here was measured, not autotuned: with C, H, W, the layout, dtype and epilogue all compile-time
constants, an autotuner multiplies compilations by its config count and re-times every new layer shape at its
first call. Each rule names the benchmark that justifies it; run on the GPU at hand, that benchmark times the
rule's choice beside the alternatives and says whether the choice is within 3% of the fastest:

    python -m bench depthwise tune=tiles      pointwise_config, wgrad_config: the tile kernels' tiles
    python -m bench depthwise tune=rows       rows_config, pointwise_variant: the rows schedule against the tiles
    python -m bench depthwise tune=wgrad      wgrad_variant, wgrad_taps_config: the weight pass, taps or gather
    python -m bench depthwise tune=backward   backward_variant, bwd_fused_config, window_config: one pass or two
    python -m bench depthwise                 triton_preferred: the kernels against PyTorch, layer by layer

docs/kernels.md gives the figures behind each rule (device, versions, date); bench/results/ holds the latest
files. The tables are keyed by (C, H, stride) of the nets' own square layers (MobileNetV1's and Xception's),
channels_last, 3x3; other shapes take the rule written beside each table. cpu=True is Triton's interpreter,
where every op of every program is a Python round trip: a few large tiles.
"""

import torch

from kernels.depthwise.contract import output_hw
from kernels.depthwise.helpers import LaunchConfig, next_pow2

WGRAD_TARGET_PROGRAMS = 1024  # weight-gradient programs to aim for: ~8 per SM on a 132-SM H100

# ---------------------------------------------------------------------------------------------------------
# Tiles of the tile kernels (kernels.depthwise.tiles) and of the gather weight pass (kernels.depthwise.weight).

# The fastest (BLOCK_R, BLOCK_K, num_warps) per kernel and (C, H, stride), bfloat16, batch 256, where it beat the
# rule of pointwise_config / wgrad_config by 3% or more (`python -m bench depthwise tune=tiles`, H100 and H200).
TILES_CL = {
    "fwd": {(32, 32, 1): (64, 32, 4), (64, 32, 2): (32, 64, 4), (128, 16, 1): (16, 128, 4),
            (256, 8, 1): (16, 128, 4), (512, 4, 2): (64, 32, 4), (1024, 2, 1): (16, 128, 4),
            (728, 8, 1): (8, 256, 4), (64, 32, 1): (64, 64, 4), (128, 32, 1): (64, 64, 4),
            (256, 32, 1): (64, 64, 4), (256, 8, 2): (64, 32, 4)},
    "bwd_input": {(32, 32, 1): (128, 32, 4), (64, 32, 2): (128, 32, 4), (128, 16, 1): (64, 64, 4),
                  (256, 8, 1): (16, 128, 4), (512, 4, 2): (32, 128, 4), (1024, 2, 1): (16, 128, 4),
                  (728, 8, 1): (8, 256, 4), (64, 32, 1): (64, 64, 4), (128, 32, 1): (16, 128, 4),
                  (256, 32, 1): (16, 128, 4), (256, 16, 1): (16, 128, 4), (728, 16, 1): (8, 256, 4),
                  (128, 16, 2): (64, 64, 4), (256, 8, 2): (64, 64, 4)},
    "bwd_weight": {(512, 4, 2): (4, 32, 2), (1024, 2, 1): (1, 128, 4), (256, 8, 2): (4, 32, 2)},
}  # fmt: skip
WGRAD_TILES_NCHW = {(256, 8, 1): (2, 64, 4)}  # the gather weight pass in NCHW, as TILES_CL


def pointwise_config(kind: str, channels_last: bool, C: int, H: int, W: int, stride: int, K: int = 3,
                     cpu: bool = False) -> LaunchConfig:
    """Tiles (BLOCK_R, BLOCK_K, num_warps) of the forward ("fwd") and grad-input ("bwd_input") tile kernels.

    channels_last 3x3 at the nets' layers: TILES_CL. Elsewhere in channels_last, up to 128 channels a tile
    (vectors along C) and 2048 elements; the grad-input pass takes 4096 from 16x16 maps, and narrow, tall tiles
    (32 channels) at 32x32 maps. NCHW: a plane's pixels (up to 256) by as many planes as make 2048 elements.
    `python -m bench depthwise tune=tiles` times the candidates around them."""
    np2 = next_pow2
    if cpu:
        return LaunchConfig(128, 64, 1) if channels_last else LaunchConfig(64, 64, 1)
    if channels_last:
        if K == 3 and (C, H, stride) in TILES_CL[kind] and H == W:
            return LaunchConfig(*TILES_CL[kind][C, H, stride])
        block_k = min(np2(C), 32 if kind == "bwd_input" and H * W >= 1024 else 128)
        tile = 4096 if kind == "bwd_input" and H * W >= 256 else 2048
        return LaunchConfig(max(1, min(256, tile // block_k)), block_k, 4)
    OH, OW = output_hw(H, W, stride)
    plane = OH * OW if kind == "fwd" else H * W  # pixels per (n, c) plane of the kernel's output
    block_k = min(np2(plane), 256)
    return LaunchConfig(max(1, 2048 // block_k), block_k, 4)


def wgrad_config(channels_last: bool, C: int, H: int, W: int, stride: int, K: int = 3,
                 cpu: bool = False) -> LaunchConfig:
    """Tiles (BLOCK_R, BLOCK_K, num_warps) of the gather weight pass, whose float32 accumulator is
    (BLOCK_R, KKP, BLOCK_K). channels_last: 32-channel slices, 4096 elements with 4 warps, 2048 with 2 warps for
    outputs of 4 pixels or fewer; NCHW: up to 16 pixels of a plane, 2048 elements. At the nets' layers
    TILES_CL["bwd_weight"] and WGRAD_TILES_NCHW (`python -m bench depthwise tune=tiles`)."""
    np2 = next_pow2
    kkp = np2(K * K)
    if cpu:
        return LaunchConfig(64, 64, 1)
    OH, OW = output_hw(H, W, stride)
    if channels_last:
        if K == 3 and (C, H, stride) in TILES_CL["bwd_weight"] and H == W:
            return LaunchConfig(*TILES_CL["bwd_weight"][C, H, stride])
        block_k = min(np2(C), 32)
        if OH * OW <= 4:  # tiny outputs: fewer rows per step, 2 warps
            return LaunchConfig(max(1, 2048 // (kkp * block_k)), block_k, 2)
        return LaunchConfig(max(1, 4096 // (kkp * block_k)), block_k, 4)
    if K == 3 and (C, H, stride) in WGRAD_TILES_NCHW and H == W:
        return LaunchConfig(*WGRAD_TILES_NCHW[C, H, stride])
    block_k = min(np2(OH * OW), 16)
    return LaunchConfig(max(1, 2048 // (kkp * block_k)), block_k, 4)


# ---------------------------------------------------------------------------------------------------------
# The rows schedule (kernels.depthwise.rows) against the tiles, for the forward and the stride-1 grad-input pass.

POINTWISE_VARIANTS = ("tiles", "rows")  # launch_fwd / launch_bwd_input(variant=...)

# The fastest (ROWS, BLOCK_K, num_warps) per (C, H, stride) where it beat rows_config's rule by 3% or more, in
# geometric mean over batch 256 and 512, forward and stride-1 grad-input alike (`python -m bench depthwise
# tune=rows`, H200). 16-bit and float32 inputs part where the 16-bit tiles grew: float32 runs out of registers
# first.
ROWS_TILES = {(32, 32, 1): (8, 32, 4), (64, 32, 1): (8, 32, 4), (128, 32, 1): (4, 128, 4), (256, 32, 1): (4, 128, 4),
              (128, 16, 1): (4, 32, 4), (256, 16, 1): (4, 256, 4), (728, 16, 1): (4, 256, 4),
              (256, 8, 1): (8, 128, 4), (728, 8, 1): (8, 128, 4), (256, 8, 2): (2, 256, 4)}  # fmt: skip
ROWS_TILES_FP32 = {(32, 32, 1): (8, 32, 4), (64, 32, 1): (8, 32, 4), (64, 32, 2): (4, 32, 4),
                   (128, 32, 1): (4, 64, 8), (256, 32, 1): (4, 64, 8), (128, 16, 1): (4, 64, 4),
                   (128, 16, 2): (2, 128, 4), (256, 16, 1): (4, 128, 4), (728, 16, 1): (2, 128, 4),
                   (256, 8, 1): (8, 128, 4), (728, 8, 1): (8, 128, 4), (256, 8, 2): (2, 128, 4)}  # fmt: skip


def pointwise_variant(kind: str, channels_last: bool, dtype: torch.dtype, H: int, W: int, stride: int,
                      K: int = 3) -> str:
    """The schedule launch_fwd ("fwd") / launch_bwd_input ("bwd_input") use by default: "rows" where it can run
    (channels_last 3x3; the grad-input pass at stride 1 only, as a flipped forward) and measured faster than the
    tiles, each kernel alone at the nets' layers: every 16-bit forward and every stride-1 grad-input; float32
    forwards below 32x32 inputs (at 32x32 the two were about even). `python -m bench depthwise tune=rows`."""
    if not (channels_last and K == 3) or (kind == "bwd_input" and stride != 1):
        return "tiles"
    return "tiles" if kind == "fwd" and dtype == torch.float32 and H * W >= 1024 else "rows"


def rows_config(C: int, H: int, W: int, stride: int, dtype: torch.dtype = torch.bfloat16,
                cpu: bool = False) -> LaunchConfig:
    """(ROWS, BLOCK_K, num_warps) of the rows schedule for x of `dtype`: ROWS_TILES (16-bit) or ROWS_TILES_FP32
    at the nets' layers; elsewhere 4 output rows a program and BLOCK_K channels so that a row tile holds about
    1024 elements (ten of them live at once: nine shifted inputs and the accumulator)."""
    if cpu:
        return LaunchConfig(8, 64, 1)
    table = ROWS_TILES_FP32 if dtype == torch.float32 else ROWS_TILES
    if H == W and (C, H, stride) in table:
        return LaunchConfig(*table[C, H, stride])
    OW = output_hw(H, W, stride)[1]
    return LaunchConfig(4, max(32, min(256, next_pow2(C), 1024 // next_pow2(OW))), 4)


# ---------------------------------------------------------------------------------------------------------
# The weight pass (kernels.depthwise.weight): the 3-D tap gather or nine shifted 2-D loads ("taps").

WGRAD_VARIANTS = ("gather", "taps")
_WGRAD_TAPS_MIN_16BIT = 1 << 21  # output elements (N x C x OH x OW) from which taps is faster in 16 bits
# Elements of the taps pass's (BLOCK_R, BLOCK_K) tile with 4 warps: 8 and 4 per thread
_TAPS_TILE, _TAPS_TILE_SMALL = 1024, 512
_TAPS_PLAIN_SMALL = 1 << 23  # output elements under which the plain 16-bit pass takes the small tile too


def wgrad_variant(channels_last: bool, dtype: torch.dtype, N: int, C: int, H: int, W: int, stride: int,
                  K: int = 3) -> str:
    """The weight-gradient kernel launch_bwd_weight uses by default: "taps" (channels_last 3x3 only: nine shifted
    2-D loads as in the forward, no padded tap lanes) in float32, and in 16 bits from 2**21 output elements
    (N x C x OH x OW); "gather" elsewhere. Taps measured faster at the nets' layers in float32 (all but the
    smallest case) and in 16 bits from that size up, with the fused epilogue and without, at wgrad_taps_config's
    tiles; gather was faster at the one 16-bit case below it. `python -m bench depthwise tune=wgrad`. float16
    follows bfloat16 (same loads; not measured apart)."""
    if not (channels_last and K == 3):
        return "gather"
    if dtype == torch.float32:
        return "taps"
    OH, OW = output_hw(H, W, stride)
    return "taps" if N * C * OH * OW >= _WGRAD_TAPS_MIN_16BIT else "gather"


def wgrad_taps_config(dtype: torch.dtype, N: int, C: int, H: int, W: int, stride: int, need_z: bool,
                      cpu: bool = False) -> LaunchConfig:
    """Tiles (BLOCK_R, BLOCK_K, num_warps) of the taps weight pass, 32 channels wide with 4 warps, of 1024 or
    512 elements (8 or 4 per thread); need_z: the pass recomputes the conv output (a relu or scale epilogue).

    The pass holds nine float32 accumulators and nine x tiles per element of a thread: in 16 bits it moves bytes
    at about half its float32 rate, bound by registers and instructions rather than bytes, so there a smaller
    tile (more programs resident per SM) is faster where the pass also recomputes z, and without that below
    2**23 output elements (from there the large tile is as fast or faster). In float32 the small tile is faster
    without the epilogue where the 32-channel slices are full (C a multiple of 32; at 728 channels it was
    slower), the large one with it. `python -m bench depthwise tune=wgrad` times the candidates around it."""
    if cpu:
        return LaunchConfig(128, 64, 1)
    OH, OW = output_hw(H, W, stride)
    block_k = min(next_pow2(C), 32)
    if dtype == torch.float32:
        small = not need_z and C % block_k == 0
    else:
        small = need_z or N * C * OH * OW < _TAPS_PLAIN_SMALL
    return LaunchConfig(max(1, (_TAPS_TILE_SMALL if small else _TAPS_TILE) // block_k), block_k, 4)


# ---------------------------------------------------------------------------------------------------------
# The backward in one pass (kernels.depthwise.onepass) against the weight pass and the grad-input pass apart.

FUSED_SCHEDULE = {"fused": "tiles", "window": "window"}  # backward_variant's one pass -> launch_bwd_fused's schedule
FUSED_SCHEDULES = tuple(FUSED_SCHEDULE.values())
BACKWARD_VARIANTS = ("split", *FUSED_SCHEDULE)  # split: the weight pass, then the grad-input pass
_FUSED_16BIT_MAX = 1 << 25  # elements of x (N x C x H x W) from which the 16-bit tiles' one pass is slower
_WINDOW_MIN_HW = {torch.float32: 1024, torch.bfloat16: 256, torch.float16: 256}  # map sizes the window pays from


def backward_variant(channels_last: bool, dtype: torch.dtype, N: int, C: int, H: int, W: int, stride: int,
                     K: int = 3, changes_grad: bool = False) -> str:
    """How backward_pass computes grad_x and the weight gradient together: "split" (the weight pass, then the
    grad-input pass), or one pass that reads grad_y once, where one can run (channels_last, 3x3, stride 1, an
    epilogue that leaves the gradient unchanged; changes_grad: a relu or a scale) and measured faster:
    - "window" (whole rows down each image, four loads a pixel) from 16x16 maps in 16 bits and at 32x32 in
      float32: large maps, where the tiles' eighteen loads a pixel bound the one pass;
    - "fused" (pixel tiles of the whole batch) at 16x16 in float32, and in 16 bits below 16x16 maps while x has
      fewer than 2**25 elements (above, the two passes' own tiles win);
    - "split" elsewhere: float32 below 16x16 maps (the tiles' one pass was no faster there, the window faster at
      some of those layers and slower at others).
    `python -m bench depthwise tune=backward` times the three at their default tiles and over candidate tiles.
    float16 follows bfloat16."""
    if not (channels_last and K == 3 and stride == 1) or changes_grad:
        return "split"
    if H * W >= _WINDOW_MIN_HW.get(dtype, 256):
        return "window"
    if dtype == torch.float32:
        return "fused" if H * W >= 256 else "split"
    return "fused" if N * C * H * W < _FUSED_16BIT_MAX else "split"


def bwd_fused_config(C: int, cpu: bool = False) -> LaunchConfig:
    """Tiles (BLOCK_R, BLOCK_K, num_warps) of the one pass on pixel tiles: 16 x 32 with 4 warps (4 elements per
    thread), the fastest of the tiles `python -m bench depthwise tune=backward` times at most layers, in both
    dtypes; it depends on C alone."""
    if cpu:
        return LaunchConfig(128, 64, 1)
    block_k = min(next_pow2(C), 32)
    return LaunchConfig(512 // block_k, block_k, 4)


def window_config(C: int, H: int, W: int, dtype: torch.dtype = torch.bfloat16, cpu: bool = False) -> LaunchConfig:
    """(ROWS, BLOCK_K, num_warps) of the one pass on the window schedule, 4 warps: in 16 bits 8 rows a chunk and
    row tiles of about 512 elements; in float32, and in 16 bits at 32 channels or fewer, whole images (up to
    32 rows) and row tiles of about 1024 elements. The fastest of the tiles `python -m bench depthwise
    tune=backward` times at the nets' 32x32 and 16x16 layers."""
    if cpu:
        return LaunchConfig(3, 8, 1)
    np2_c, np2_w = next_pow2(C), next_pow2(W)
    if dtype == torch.float32 or C <= 32:
        return LaunchConfig(min(H, 32), max(16, min(np2_c, 1024 // np2_w)), 4)
    return LaunchConfig(min(H, 8), max(16, min(np2_c, 512 // np2_w)), 4)


# ---------------------------------------------------------------------------------------------------------
# impl="auto": the kernels or PyTorch.

def triton_preferred(channels_last: bool, dtype: torch.dtype, H: int, W: int, stride: int, fused: bool) -> bool:
    """impl="auto" on CUDA: Triton, except where PyTorch (cuDNN) measured faster forward+backward.

    In NCHW the kernels beat PyTorch's NCHW path at every layer; with a fused epilogue (scale, shift, relu)
    PyTorch needs extra elementwise passes and the kernels win. Unfused channels_last: in 16 bits cuDNN was
    faster at stride 1 with outputs of 8x8 pixels or more, the kernels at stride 2 and at 4x4 and 2x2 outputs;
    in float32 cuDNN was faster everywhere but at 2x2 outputs. (`python -m bench depthwise`, on an H100.) With
    the rows schedule and the one-pass backward the kernels are faster than cuDNN at more layers than this rule
    gives them, yet MobileNetV1's whole compiled step with the kernels at every 16-bit layer ran no faster than
    under this rule (docs/kernels.md), so the rule stays."""
    if fused or not channels_last:
        return True
    OH, OW = output_hw(H, W, stride)
    if dtype == torch.float32:
        return OH * OW <= 4
    return stride == 2 or OH * OW <= 16
