"""Batches made on the device: the split stays there as uint8, and each batch is gathered, augmented and
normalised there, so no host work or transfer sits between training steps. The same code runs on the CPU.

Augmentation (He et al. 2016, "Deep Residual Learning", sec. 4.2): pad 4 pixels on each side, take a
random 32x32 crop, flip it horizontally with probability 1/2. Images are normalised *before* padding and
the padding is 0, so a padded pixel equals the per-pixel mean: neutral, as the paper's padding of
mean-subtracted images. The crop and flip are one gather, with no loop over images:

    dy, dx ~ U{-pad..pad}, flip ~ U{0, 1}                     per image, from the caller's torch.Generator
    out[b, c, i, j] = (x[b, c, r, s] - mean[c, r, s]) / std[c, r, s]   if 0 <= r < H and 0 <= s < W, else 0
        where r = i + dy[b],  s = (W - 1 - j if flip[b] else j) + dx[b]

that is: crop the zero-padded normalised image at offset (pad + dy, pad + dx), then mirror the crop if flip.

RandAugment (Cubuk et al. 2020), optional, first: `randaugment_ops` ops per image at bin `randaugment_magnitude`
of torchvision's op set, on the uint8 images before the crop and flip (data/randaugment.py rand_augment).

Cutout (DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with Cutout"),
optional: a `size` x `size` square centred on a uniformly drawn pixel is set to 0 (the mean, after
normalisation), clipped where it leaves the image, as in the paper.

Mixing, optional, per batch, last: each image is mixed with its partner in a random permutation of the batch,
and the labels become soft targets (B, K) in the same proportion. mixup (Zhang et al. 2018, "mixup: Beyond
Empirical Risk Minimization"): lam * x + (1 - lam) * partner. cutmix (Yun et al. 2019, "CutMix"): a box of
about (1 - lam) of the image, centred on a uniform pixel and clipped, comes from the partner; lam is then the
share of pixels kept. lam ~ Beta(1, 1) = U(0, 1), one per batch: both papers' value on CIFAR.
Precision and memory format (bf16, channels_last) are the trainer's business: batches leave here float32 NCHW.
"""

import torch

from data.errors import DataError
from data.randaugment import check_arguments, rand_augment

CROP_PAD = 4  # pixels of padding on each side before the random crop (He et al. 2016, sec. 4.2)
# Training batches are augmented this many images at a time (rounded to whole batches): augmenting costs
# some 20 small kernel launches, about 0.5 ms on an H100 whatever the batch size (measured per batch), so
# one launch sequence per chunk instead of per batch. Temporaries peak near 4 float32 copies of the chunk,
# 4 x 4096 x 12 KB = 200 MB.
CHUNK_IMAGES = 4096
MIXES = ("none", "mixup", "cutmix")


def _stats_like(stat, images: torch.Tensor) -> torch.Tensor:
    """A mean or std (numpy or torch, (C, H, W)) as float32 on the images' device (no copy if it is)."""
    return torch.as_tensor(stat, dtype=torch.float32, device=images.device)


def normalise(images_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std in float32, for uint8 images (B, C, H, W) and per-pixel mean, std (C, H, W)."""
    return (images_u8.float() - _stats_like(mean, images_u8)) / _stats_like(std, images_u8)


def random_crop_flip(images_u8: torch.Tensor, mean, std, pad: int, generator: torch.Generator | None):
    """Normalised, randomly translated (by up to `pad` pixels, zero fill) and flipped float32 (B, C, H, W).

    The offsets and flips are drawn from `generator`, which lives on the images' device (None: torch's default
    generator for that device), in this order: dy (B,), dx (B,), flip (B,).
    """
    B, C, H, W = images_u8.shape
    device = images_u8.device
    dy = torch.randint(-pad, pad + 1, (B, 1), generator=generator, device=device)
    dx = torch.randint(-pad, pad + 1, (B, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (B, 1), generator=generator, device=device).bool()
    j = torch.arange(W, device=device)
    rows = torch.arange(H, device=device) + dy  # (B, H): source row of each output row
    cols = torch.where(flip, W - 1 - j, j) + dx  # (B, W): source column of each output column
    inside = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]  # (B, H, W)
    source = rows.clamp(0, H - 1)[:, :, None] * W + cols.clamp(0, W - 1)[:, None, :]  # (B, H, W) flat pixel
    source = source.view(B, 1, H * W).expand(B, C, H * W)  # the same pixel in every channel
    # Normalised where each pixel is (with its own position's mean and std), then moved: one gather.
    x = normalise(images_u8, mean, std).view(B, C, H * W).gather(2, source)  # (B, C, H*W)
    return torch.where(inside.view(B, 1, H * W), x, 0.0).view(B, C, H, W)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """x (B, C, H, W) with one `size` x `size` square per image set to 0; centres cy ~ U{0..H-1}, then
    cx ~ U{0..W-1}, drawn from `generator` in that order. The square spans rows cy - size // 2 to
    cy - size // 2 + size - 1 (and likewise columns), clipped to the image."""
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B, 1), generator=generator, device=x.device) - size // 2
    cx = torch.randint(0, W, (B, 1), generator=generator, device=x.device) - size // 2
    rows, cols = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    in_rows = (rows >= cy) & (rows < cy + size)  # (B, H)
    in_cols = (cols >= cx) & (cols < cx + size)  # (B, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return torch.where(hole[:, None], 0.0, x)


def mix_batch(x: torch.Tensor, y: torch.Tensor, kind: str, num_classes: int,
              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x mixed with x[perm], soft targets (B, num_classes) float32) for `kind` "mixup" or "cutmix".

    Draws from `generator`, in this order: perm (randperm(B)), lam (U(0, 1), 0-dim), and for cutmix the box
    centre cy ~ U{0..H-1}, then cx ~ U{0..W-1}. The cutmix box has sides h = int(H * sqrt(1 - lam)) and
    w = int(W * sqrt(1 - lam)) and spans rows cy - h // 2 to cy + h // 2 - 1 (likewise columns), clipped to
    the image, as CutMix's reference code. Everything stays on the device (no host synchronisation)."""
    B, _, H, W = x.shape
    perm = torch.randperm(B, generator=generator, device=x.device)
    lam = torch.rand((), generator=generator, device=x.device)
    if kind == "mixup":
        x = lam * x + (1 - lam) * x[perm]
    elif kind == "cutmix":
        cy = torch.randint(0, H, (), generator=generator, device=x.device)
        cx = torch.randint(0, W, (), generator=generator, device=x.device)
        h, w = (H * (1 - lam).sqrt()).long(), (W * (1 - lam).sqrt()).long()
        rows, cols = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
        in_rows = (rows >= cy - h // 2) & (rows < cy + h // 2)
        in_cols = (cols >= cx - w // 2) & (cols < cx + w // 2)
        box = in_rows[:, None] & in_cols[None, :]  # (H, W)
        x = torch.where(box, x[perm], x)
        lam = 1 - box.sum() / (H * W)
    else:
        raise DataError(f"mix={kind!r} is not one of: mixup, cutmix")
    one_hot = _one_hot(y, num_classes)
    return x, lam * one_hot + (1 - lam) * one_hot[perm]


def _one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 (B, num_classes) one-hot rows; a scatter, as F.one_hot checks the labels' range on the host
    (a device synchronisation on CUDA)."""
    return torch.zeros(len(y), num_classes, device=y.device).scatter_(1, y[:, None], 1.0)


class DeviceBatches:
    """Iterable of (x float32 (B, C, H, W), y int64 (B,)) batches of a split that lives on one device.

    train=True: each epoch (each iter()) visits the images in a new order from torch.randperm(generator) and
    augments them CHUNK_IMAGES at a time: rand_augment (when `randaugment_ops` > 0, at bin
    `randaugment_magnitude`), then random_crop_flip, then cutout (when `cutout` > 0); drop_last defaults to
    True, so every step sees a full batch. With `mix` "mixup" or "cutmix", each batch is then mixed (mix_batch)
    and y is soft targets, float32 (B, num_classes). The generator's draws, per epoch: the order, then per chunk
    rand_augment's, random_crop_flip's and cutout's (each in its own documented order), then per batch of the
    chunk mix_batch's.
    train=False: the stored order, normalise only, and the partial last batch is kept (drop_last False).
    `generator` must be on the images' device; the same seed gives the same batches.
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int,
                 train: bool, generator: torch.Generator | None = None, drop_last: bool | None = None,
                 pad: int = CROP_PAD, cutout: int = 0, mix: str = "none", num_classes: int = 0,
                 randaugment_ops: int = 0, randaugment_magnitude: int = 9):
        if images_u8.dtype != torch.uint8 or images_u8.ndim != 4:
            raise DataError(f"DeviceBatches needs uint8 images (N, C, H, W), got {images_u8.dtype} "
                            f"{tuple(images_u8.shape)}")
        if labels.shape != images_u8.shape[:1] or labels.device != images_u8.device:
            raise DataError(f"DeviceBatches needs one label per image on the images' device, got labels "
                            f"{tuple(labels.shape)} on {labels.device} for images "
                            f"{tuple(images_u8.shape)} on {images_u8.device}")
        if generator is not None and generator.device.type != images_u8.device.type:
            raise DataError(f"the generator is on {generator.device} but the images are on "
                            f"{images_u8.device}; make it with "
                            f"torch.Generator(device={str(images_u8.device)!r})")
        if batch_size < 1 or pad < 0 or cutout < 0:
            raise DataError(f"batch_size={batch_size} must be >= 1, pad={pad} >= 0 and cutout={cutout} >= 0")
        if mix not in MIXES:
            raise DataError(f"mix={mix!r} is not one of: {', '.join(MIXES)}")
        check_arguments(randaugment_ops, randaugment_magnitude)
        if mix != "none" and len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise DataError(f"mix={mix} needs num_classes above every label, got num_classes={num_classes} "
                            f"for labels {int(labels.min())}..{int(labels.max())}")
        self.images, self.labels = images_u8, labels.long()
        self.mean, self.std = _stats_like(mean, images_u8), _stats_like(std, images_u8)
        if self.mean.shape != images_u8.shape[1:] or self.std.shape != images_u8.shape[1:]:
            raise DataError(f"mean {tuple(self.mean.shape)} and std {tuple(self.std.shape)} must have "
                            f"the image shape {tuple(images_u8.shape[1:])}, as normalisation_stats gives")
        self.batch_size, self.train, self.generator, self.pad = batch_size, train, generator, pad
        self.cutout, self.mix, self.num_classes = cutout, mix, num_classes
        self.randaugment_ops, self.randaugment_magnitude = randaugment_ops, randaugment_magnitude
        self.drop_last = train if drop_last is None else drop_last
        # An empty evaluation set is allowed (val_fraction=0 holds none out); a training loader must give a batch.
        if len(self) == 0 and (train or len(images_u8)):
            raise DataError(f"no batches: {len(images_u8)} images, batch_size={batch_size}, "
                            f"drop_last={self.drop_last}; use a smaller batch_size or drop_last=False")

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        size, end = self.batch_size, len(self) * self.batch_size  # end: past the last batch's images
        if not self.train:  # slices, not gathers: the stored order
            for start in range(0, end, size):
                batch = slice(start, start + size)
                yield normalise(self.images[batch], self.mean, self.std), self.labels[batch]
            return
        order = torch.randperm(len(self.images), generator=self.generator, device=self.images.device)
        chunk = size * max(1, CHUNK_IMAGES // size)
        for chunk_start in range(0, end, chunk):
            index = order[chunk_start:min(chunk_start + chunk, end)]
            images = self.images[index]
            if self.randaugment_ops:
                images = rand_augment(images, self.randaugment_ops, self.randaugment_magnitude, self.generator)
            x = random_crop_flip(images, self.mean, self.std, self.pad, self.generator)
            if self.cutout:
                x = cutout(x, self.cutout, self.generator)
            y = self.labels[index]
            for start in range(0, len(index), size):
                yield self._mixed(x[start:start + size], y[start:start + size])

    def _mixed(self, x: torch.Tensor, y: torch.Tensor):
        if self.mix == "none":
            return x, y
        return mix_batch(x, y, self.mix, self.num_classes, self.generator)

    def example(self):
        """A batch of the kind iter() gives (shape, dtype, hard or soft labels), from the first images, not
        augmented and drawing nothing from the generator: for compiling the step before the first epoch."""
        x = normalise(self.images[: self.batch_size], self.mean, self.std)
        y = self.labels[: self.batch_size]
        return (x, y) if self.mix == "none" else (x, _one_hot(y, self.num_classes))
