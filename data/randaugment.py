"""RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced search
space"), batched on the device: uint8 (B, C, H, W) in, uint8 out, with no loop over images and no host
synchronisation. The same code runs on the CPU.

The op set, magnitudes and signs are torchvision's (torchvision.transforms.RandAugment with its defaults:
num_magnitude_bins=31, nearest interpolation, fill 0), and each op is pixel-exact against torchvision's own
functional op on one uint8 image (tests/test_randaugment.py; checked on the CPU at every bin; on CUDA the one
step that could round differently is the grid's 3-term bmm, batched here, single in torchvision, and only for a
sample point within float32 rounding of a pixel boundary):

    for each of `ops` rounds, for each image b independently:
        op[b] ~ U(OPS), negate[b] ~ U{0, 1}                       from the caller's torch.Generator
        m = torchvision's magnitude of op at bin `magnitude`, times -1 if negate[b] and op is signed
        x[b] = op(x[b], m)

    Identity                                 x
    ShearX, ShearY (signed)                  shear by atan(m) about the top-left corner, m = 0.3 * bin / 30
    TranslateX, TranslateY (signed)          shift by int(m) pixels, m = 150 / 331 * W (or H) * bin / 30
    Rotate (signed)                          rotate by m degrees about the centre, m = 30 * bin / 30
    Brightness, Color, Contrast, Sharpness   blend with black / the grey image / its mean grey / the 3x3-smoothed
      (signed)                               image, factor 1 + m, m = 0.9 * bin / 30; truncated to uint8
    Posterize                                keep the top 8 - round(bin / 7.5) bits
    Solarize                                 invert pixels >= 255 * (1 - bin / 30)
    AutoContrast                             stretch each channel's min..max to 0..255
    Equalize                                 per-channel histogram equalisation (torchvision's LUT formula)

How it is batched: in each round every op is computed for every image and each image keeps the one it drew
(torch.where), rather than gathering each op's images (a boolean index would synchronise with the host to size
its result). The five geometric ops share one grid_sample over per-image inverse matrices (built as
torchvision builds its grid, so the sampled pixels are the same); the four blends share one blend over
per-image factors and "degenerate" images. Cost, counted with a TorchDispatchMode on the CPU: about 120
device ops per round (each over the whole chunk: conversions, selections, blends, one grid_sample, Equalize's
scatter_add and gathers), plus about 6 per call (the two draws, four small table copies; the tables' ~55 host
ops run on the CPU), whatever the batch size: ~245 launches per CHUNK_IMAGES chunk at ops=2, against some 20
for the crop and flip. Temporaries peak near a few float32 copies of the chunk.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from data.errors import DataError

MAGNITUDE_BINS = 31  # torchvision's num_magnitude_bins: bins 0..30
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")  # torchvision's order
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
BLENDS = ("Brightness", "Color", "Contrast", "Sharpness")
SIGNED = GEOMETRIC + BLENDS
GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601 luma, as TensorFlow's)
LEVELS = 256  # uint8 pixel values


def check_arguments(ops: int, magnitude: int) -> None:
    """DataError unless 0 <= ops and 0 <= magnitude < MAGNITUDE_BINS (both ints)."""
    if isinstance(ops, bool) or not isinstance(ops, int) or ops < 0:
        raise DataError(f"randaugment ops={ops!r} must be an int >= 0 (0: off)")
    if isinstance(magnitude, bool) or not isinstance(magnitude, int) or not 0 <= magnitude < MAGNITUDE_BINS:
        raise DataError(f"randaugment magnitude={magnitude!r} must be an int in 0..{MAGNITUDE_BINS - 1}")


def magnitude_of(op: str, magnitude: int, height: int, width: int) -> float:
    """torchvision's magnitude of `op` at bin `magnitude`, before the sign: its _augmentation_space (float32
    linspace, then a Python float), so every factor below is computed from the same number."""
    spans = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150.0 / 331.0 * width, "TranslateY": 150.0 / 331.0 * height,
             "Rotate": 30.0, **dict.fromkeys(BLENDS, 0.9)}
    if op in spans:
        return float(torch.linspace(0.0, spans[op], MAGNITUDE_BINS)[magnitude])
    if op == "Solarize":  # the threshold
        return float(torch.linspace(255.0, 0.0, MAGNITUDE_BINS)[magnitude])
    if op == "Posterize":  # the bits kept
        return float(8 - (torch.arange(MAGNITUDE_BINS) / ((MAGNITUDE_BINS - 1) / 4)).round().int()[magnitude])
    return 0.0


def _inverse_affine_matrix(center, angle, translate, shear) -> list[float]:
    """torchvision.transforms.functional._get_inverse_affine_matrix with scale 1, in the same float64 order, so
    the matrix is bit for bit the one torchvision samples with (output pixel -> input pixel, centred pixel
    coordinates; angle and shear in degrees)."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = center, translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    matrix = [d, -b, 0.0, -c, a, 0.0]  # the inverse of [[a, b], [c, d]] (determinant 1)
    matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
    matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
    matrix[2] += cx
    matrix[5] += cy
    return matrix


def _geometric_matrix(op: str, m: float, height: int, width: int) -> list[float]:
    """The inverse matrix torchvision's RandAugment samples with for geometric `op` at signed magnitude m
    (autoaugment._apply_op: shears about the top-left corner, the others about the centre)."""
    corner = [-width * 0.5, -height * 0.5]  # center=[0, 0] in pixels, as the centred coordinates F.affine uses
    if op == "ShearX":
        return _inverse_affine_matrix(corner, 0.0, [0.0, 0.0], [math.degrees(math.atan(m)), 0.0])
    if op == "ShearY":
        return _inverse_affine_matrix(corner, 0.0, [0.0, 0.0], [0.0, math.degrees(math.atan(m))])
    if op == "TranslateX":
        return _inverse_affine_matrix([0.0, 0.0], 0.0, [float(int(m)), 0.0], [0.0, 0.0])
    if op == "TranslateY":
        return _inverse_affine_matrix([0.0, 0.0], 0.0, [0.0, float(int(m))], [0.0, 0.0])
    if op == "Rotate":  # F.rotate turns counter-clockwise: the affine matrix of -angle
        return _inverse_affine_matrix([0.0, 0.0], -m, [0.0, 0.0], [0.0, 0.0])
    raise DataError(f"{op!r} is not a geometric op ({', '.join(GEOMETRIC)})")


class _Tables(NamedTuple):
    """Per op of OPS and sign (index 0: +m, 1: -m), float32 on the images' device: the inverse matrix (the
    identity for non-geometric ops) and the blend's (factor, 1 - factor) ((1, 0) for non-blends). Made on the host
    in float64 as torchvision makes its Python floats, then moved in one small copy each."""
    matrices: torch.Tensor  # (len(OPS), 2, 2, 3)
    factors: torch.Tensor  # (len(OPS), 2, 2)


def _tables(magnitude: int, height: int, width: int, device) -> _Tables:
    identity = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    matrices, factors = [], []
    for name in OPS:
        signed = [s * magnitude_of(name, magnitude, height, width) for s in (1.0, -1.0)]
        if name in GEOMETRIC:
            matrices.append([_geometric_matrix(name, m, height, width) for m in signed])
        else:
            matrices.append([sum(identity, [])] * 2)
        factors.append([[1.0 + m, 1.0 - (1.0 + m)] for m in signed] if name in BLENDS else [[1.0, 0.0]] * 2)
    return _Tables(torch.tensor(matrices, dtype=torch.float32).view(len(OPS), 2, 2, 3).to(device),
                   torch.tensor(factors, dtype=torch.float32).to(device))


def _affine(x_u8: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image (B, C, H, W) uint8 resampled through its own inverse matrix theta (B, 2, 3) float32, nearest,
    0 outside: torchvision's _gen_affine_grid and _apply_grid_transform, batched over matrices."""
    B, C, H, W = x_u8.shape
    device = x_u8.device
    base = torch.empty(1, H, W, 3, device=device)  # centred pixel coordinates (x, y, 1), as torchvision's
    base[..., 0].copy_(torch.linspace(-W * 0.5 + 0.5, W * 0.5 + 0.5 - 1, steps=W, device=device))
    base[..., 1].copy_(torch.linspace(-H * 0.5 + 0.5, H * 0.5 + 0.5 - 1, steps=H, device=device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * W, 0.5 * H], device=device)  # (B, 3, 2) to [-1, 1]
    grid = base.view(1, H * W, 3).expand(B, H * W, 3).bmm(scaled).view(B, H, W, 2)
    out = F.grid_sample(x_u8.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().to(torch.uint8)


def _grey(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) luma, truncated as torchvision's rgb_to_grayscale; a one-channel image is its own."""
    if x_u8.shape[1] != 3:
        return x_u8.clone()
    r, g, b = x_u8.unbind(dim=1)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).to(torch.uint8).unsqueeze(1)


def _smoothed(x_u8: torch.Tensor) -> torch.Tensor:
    """torchvision's "degenerate" image for Sharpness: the 3x3 filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
    inside, the border rows and columns kept. Summed in integers: n / 13 is never a tie (13 is odd), so rounding
    it equals rounding torchvision's float32 convolution, on any device and whatever the TF32 settings."""
    x = x_u8.to(torch.int32)
    rows = x[:, :, :-2] + x[:, :, 1:-1] + x[:, :, 2:]  # (B, C, H-2, W)
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (B, C, H-2, W-2): 3x3 sums
    inside = ((box + 4 * x[:, :, 1:-1, 1:-1]).float() / 13).round().to(torch.uint8)
    return torch.cat([x_u8[:, :, :1], torch.cat([x_u8[:, :, 1:-1, :1], inside, x_u8[:, :, 1:-1, -1:]], 3),
                      x_u8[:, :, -1:]], 2)


def _blend(x_u8: torch.Tensor, degenerate: torch.Tensor, ratio: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """ratio * x + rest * degenerate, clamped and truncated to uint8 (torchvision's _blend, rest = 1 - ratio
    rounded to float32 from float64 as torchvision's Python float is); ratio, rest broadcast per image."""
    return (ratio * x_u8 + rest * degenerate).clamp(0, LEVELS - 1).to(torch.uint8)


def _autocontrast(x_u8: torch.Tensor) -> torch.Tensor:
    """Each channel's min..max stretched to 0..255 (unchanged where min == max), as torchvision's."""
    minimum = x_u8.amin(dim=(-2, -1), keepdim=True).float()
    maximum = x_u8.amax(dim=(-2, -1), keepdim=True).float()
    scale = (LEVELS - 1) / (maximum - minimum)  # inf where flat
    flat = ~torch.isfinite(scale)
    minimum, scale = torch.where(flat, 0.0, minimum), torch.where(flat, 1.0, scale)
    return ((x_u8 - minimum) * scale).clamp(0, LEVELS - 1).to(torch.uint8)


def _equalize(x_u8: torch.Tensor) -> torch.Tensor:
    """Per image and channel, torchvision's _scale_channel: with hist the channel's 256-bin histogram and step =
    (pixels - the count of its brightest value) // 255, pixel v -> min(255, (cumsum(hist)[v - 1] + step // 2)
    // step) (0 for v = 0); unchanged where step is 0. All integer arithmetic, one scatter_add for every
    histogram of the batch."""
    B, C, H, W = x_u8.shape
    values = x_u8.reshape(B * C, H * W).long()
    hist = torch.zeros(B * C, LEVELS, dtype=torch.long, device=x_u8.device)
    hist.scatter_add_(1, values, torch.ones_like(values))  # (B*C, 256)
    levels = torch.arange(LEVELS, device=x_u8.device)
    brightest = torch.where(hist > 0, levels, 0).amax(1, keepdim=True)  # (B*C, 1): the last non-empty bin
    step = (H * W - hist.gather(1, brightest)) // (LEVELS - 1)  # (B*C, 1)
    lut = (hist.cumsum(1) + step // 2) // step.clamp(min=1)
    lut = F.pad(lut, [1, 0])[:, :-1].clamp(0, LEVELS - 1)  # shifted: value v maps through cumsum[v - 1]
    out = torch.where(step == 0, values, lut.gather(1, values))
    return out.to(torch.uint8).view(B, C, H, W)


def apply_op(x_u8: torch.Tensor, op: str, magnitude: int, negate: torch.Tensor) -> torch.Tensor:
    """One op of OPS on every image of x_u8 (B, C, H, W) uint8 at bin `magnitude`, negated per image where
    `negate` (B,) bool (signed ops only): torchvision's autoaugment._apply_op, batched. rand_augment computes
    the same functions, with the geometric ops and the blends each grouped into one pass."""
    B, _, H, W = x_u8.shape
    if op not in OPS:
        raise DataError(f"{op!r} is not a RandAugment op; ops: {', '.join(OPS)}")
    drawn = torch.full((B,), OPS.index(op), dtype=torch.long, device=x_u8.device)
    if op in GEOMETRIC:
        return _geometric(x_u8, drawn, negate, _tables(magnitude, H, W, x_u8.device))
    if op in BLENDS:
        return _blends(x_u8, drawn, negate, _tables(magnitude, H, W, x_u8.device))
    return _unsigned(x_u8, op, magnitude)


def _unsigned(x_u8: torch.Tensor, op: str, magnitude: int) -> torch.Tensor:
    """The ops without a sign, on every image."""
    if op == "Posterize":  # keep the top bits: x & ~(2 ** (8 - bits) - 1)
        return x_u8 & -int(2 ** (8 - int(magnitude_of(op, magnitude, 0, 0))))
    if op == "Solarize":  # compared in float32, as torchvision's uint8 >= float threshold
        return torch.where(x_u8 >= magnitude_of(op, magnitude, 0, 0), (LEVELS - 1) - x_u8, x_u8)
    if op == "AutoContrast":
        return _autocontrast(x_u8)
    if op == "Equalize":
        return _equalize(x_u8)
    return x_u8  # Identity


def _geometric(x_u8: torch.Tensor, op: torch.Tensor, negate: torch.Tensor, tables: _Tables) -> torch.Tensor:
    """Each image through the geometric op it drew (op (B,): indices into OPS; images with another op get the
    identity matrix, and their result is not used): one grid_sample."""
    return _affine(x_u8, tables.matrices[op, negate.long()])  # theta (B, 2, 3)


def _blends(x_u8: torch.Tensor, op: torch.Tensor, negate: torch.Tensor, tables: _Tables) -> torch.Tensor:
    """Each image blended as the op it drew asks (Brightness: with black, Color: its grey image, Contrast: its
    mean grey, Sharpness: its smoothed image), factor 1 + m; images with another op get factor 1 (their result
    is not used): one blend."""
    ratio, rest = tables.factors[op, negate.long()].view(-1, 2, 1, 1, 1).unbind(1)  # (B, 1, 1, 1) each
    grey = _grey(x_u8)
    mean_grey = grey.float().mean(dim=(-3, -2, -1), keepdim=True)  # (B, 1, 1, 1): exact sums of integers
    kind = op.view(-1, 1, 1, 1)
    degenerate = torch.where(kind == OPS.index("Color"), grey, 0.0)  # float32 (B, C, H, W); black otherwise
    degenerate = torch.where(kind == OPS.index("Contrast"), mean_grey, degenerate)
    degenerate = torch.where(kind == OPS.index("Sharpness"), _smoothed(x_u8), degenerate)
    if x_u8.shape[1] != 3:  # torchvision leaves one-channel images alone under Color
        color = kind == OPS.index("Color")
        ratio, rest = torch.where(color, 1.0, ratio), torch.where(color, 0.0, rest)
    return _blend(x_u8, degenerate, ratio, rest)


def rand_augment(images_u8: torch.Tensor, ops: int, magnitude: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """RandAugment of uint8 images (B, C, H, W), C 1 or 3: `ops` rounds, each applying to every image one op
    drawn uniformly from OPS at bin `magnitude` (0..30), negated with probability 1/2 where the op is signed.

    Draws from `generator` (on the images' device; None: torch's default generator there), in this order:
    op (B, ops) ~ U{0..len(OPS)-1}, then negate (B, ops) ~ U{0, 1} (drawn for every op, used by the signed
    ones); nothing when ops is 0, and then the images come back as they are. Returns a uint8 tensor of the same
    shape on the same device; the input is not changed."""
    check_arguments(ops, magnitude)
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[1] not in (1, 3):
        raise DataError(f"rand_augment needs uint8 images (B, 1 or 3, H, W), got {images_u8.dtype} "
                        f"{tuple(images_u8.shape)}")
    if ops == 0:
        return images_u8
    B, _, H, W = images_u8.shape
    device = images_u8.device
    drawn = torch.randint(0, len(OPS), (B, ops), generator=generator, device=device)
    negated = torch.randint(0, 2, (B, ops), generator=generator, device=device).bool()
    tables = _tables(magnitude, H, W, device)
    is_geometric = torch.tensor([name in GEOMETRIC for name in OPS], device=device)
    is_blend = torch.tensor([name in BLENDS for name in OPS], device=device)
    x = images_u8
    for r in range(ops):
        op, negate = drawn[:, r], negated[:, r]
        kind = op.view(B, 1, 1, 1)
        out = torch.where(is_geometric[kind], _geometric(x, op, negate, tables), x)  # Identity keeps x
        out = torch.where(is_blend[kind], _blends(x, op, negate, tables), out)
        for name in ("Posterize", "Solarize", "AutoContrast", "Equalize"):
            out = torch.where(kind == OPS.index(name), _unsigned(x, name, magnitude), out)
        x = out
    return x
