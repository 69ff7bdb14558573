"""random_crop_flip against an explicit pad-and-slice reference, and DeviceBatches' epochs and batches."""

import pytest
import torch
import torch.nn.functional as F
from runs import one_thread
from synthetic import synthetic_cifar

import data.loader
from data import DataError, DeviceBatches, normalisation_stats, normalise, random_crop_flip

PAD = 4


def random_images(n: int, seed: int, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)


def random_stats(seed: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A per-pixel mean and std that differ at every position, so a wrong source position shows."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.rand(3, 32, 32, generator=g) * 255
    std = 20 + torch.rand(3, 32, 32, generator=g) * 60
    return mean.to(device), std.to(device)


def reference_candidates(image_u8: torch.Tensor, mean, std, pad: int) -> dict[tuple, torch.Tensor]:
    """Every crop of F.pad(normalise(image)) and its mirror, keyed by (dy, dx, flip)."""
    _, H, W = image_u8.shape
    padded = F.pad(normalise(image_u8[None], mean, std), (pad, pad, pad, pad))[0]  # zeros = the mean
    out = {}
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            crop = padded[:, pad + dy:pad + dy + H, pad + dx:pad + dx + W]
            out[dy, dx, False], out[dy, dx, True] = crop, crop.flip(-1)
    return out


def identify(out: torch.Tensor, images: torch.Tensor, mean, std, pad: int) -> list[tuple[int, int, bool]]:
    """For each output image, the one (dy, dx, flip) whose reference crop it equals exactly."""
    found = []
    for b in range(len(images)):
        matches = [k for k, ref in reference_candidates(images[b], mean, std, pad).items()
                   if torch.equal(out[b], ref)]
        assert len(matches) == 1, f"image {b}: matches {matches}"
        found.append(matches[0])
    return found


def check_crops(device):
    images = random_images(64, seed=1, device=device)
    mean, std = random_stats(seed=2, device=device)
    g = torch.Generator(device=device).manual_seed(3)
    out = random_crop_flip(images, mean, std, PAD, g)
    assert out.dtype == torch.float32 and out.shape == images.shape and out.device == images.device
    params = identify(out.cpu(), images.cpu(), mean.cpu(), std.cpu(), PAD)
    assert {flip for _, _, flip in params} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in params}) > 20  # many different offsets in one batch


def test_every_crop_is_a_translation_of_the_zero_padded_normalised_image():
    check_crops("cpu")


@pytest.mark.gpu
def test_crops_on_cuda():
    check_crops("cuda")


def test_pad_zero_is_normalise_or_its_mirror_with_probability_one_half():
    images = random_images(2000, seed=4)
    mean, std = random_stats(seed=5)
    out = random_crop_flip(images, mean, std, 0, torch.Generator().manual_seed(6))
    plain = normalise(images, mean, std)
    same = (out == plain).flatten(1).all(1)
    mirrored = (out == plain.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)  # exactly one of the two for every image
    assert 0.45 < mirrored.float().mean().item() < 0.55


def test_offsets_are_uniform_over_the_pad_range():
    """Images whose pixel values spell their coordinates reveal each output's offset and flip cheaply."""
    B, H, W = 4500, 32, 32
    rows = torch.arange(H).view(H, 1).expand(H, W)
    cols = torch.arange(W).view(1, W).expand(H, W)
    base = 100  # so a padded 0 is never a coordinate
    image = torch.stack([rows + base, cols + base, torch.zeros(H, W, dtype=torch.long)]).to(torch.uint8)
    images = image.expand(B, 3, H, W).contiguous()
    mean, std = torch.zeros(3, H, W), torch.ones(3, H, W)
    out = random_crop_flip(images, mean, std, PAD, torch.Generator().manual_seed(7))
    dy = out[:, 0, 16, 16] - base - 16
    flip = out[:, 1, 16, 16] < out[:, 1, 16, 15]
    dx = out[:, 1, 16, 15] - base - torch.where(flip, W - 1 - 15, 15)
    for offsets in (dy, dx):
        counts = torch.bincount((offsets + PAD).long(), minlength=2 * PAD + 1)
        assert len(counts) == 2 * PAD + 1
        expected = B / (2 * PAD + 1)
        assert torch.all((counts - expected).abs() < 0.2 * expected), counts
    assert 0.46 < flip.float().mean().item() < 0.54


def test_same_seed_same_batch_other_seed_other_batch():
    images = random_images(32, seed=8)
    mean, std = random_stats(seed=9)
    a = random_crop_flip(images, mean, std, PAD, torch.Generator().manual_seed(10))
    b = random_crop_flip(images, mean, std, PAD, torch.Generator().manual_seed(10))
    c = random_crop_flip(images, mean, std, PAD, torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_numpy_stats_are_accepted():
    images = random_images(8, seed=12)
    mean, std = normalisation_stats(images.numpy())
    x = normalise(images, mean, std)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, (images.float() - torch.from_numpy(mean)) / torch.from_numpy(std))


def cutout_reference(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero each image's square by slicing, from the drawn centres (loops: slow, obviously right)."""
    out = x.clone()
    H, W = x.shape[-2:]
    for b in range(len(x)):
        top, left = int(cy[b]) - size // 2, int(cx[b]) - size // 2
        out[b, :, max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = 0
        assert 0 <= int(cy[b]) < H and 0 <= int(cx[b]) < W
    return out


@pytest.mark.parametrize("size", [1, 8, 16, 33])
def test_cutout_zeroes_one_clipped_square_per_image(size):
    x = torch.randn(200, 3, 32, 32) + 5  # never 0 by itself
    out = data.cutout(x, size, torch.Generator().manual_seed(20))
    replay = torch.Generator().manual_seed(20)
    cy = torch.randint(0, 32, (200, 1), generator=replay)[:, 0]
    cx = torch.randint(0, 32, (200, 1), generator=replay)[:, 0]
    assert torch.equal(out, cutout_reference(x, size, cy, cx))
    zeroed = (out == 0).all(1).flatten(1).sum(1)  # holes per image, every channel at once
    assert zeroed.max() == min(size, 32) ** 2  # a square fully inside for some centre
    if 1 < size < 32:
        assert zeroed.min() < size * size  # and clipped at an edge for another
    assert (out != 0).eq(out == x).all()  # outside the hole, untouched


def test_cutout_in_device_batches_only_when_asked():
    plain, holed = batches(train=True, pad=0), batches(train=True, pad=0, cutout=8)
    (xp, yp), (xh, yh) = epoch(plain), epoch(holed)
    assert torch.equal(torch.cat(yp), torch.cat(yh))  # cutout draws after the order, crops and flips
    holes = torch.cat(xh) == 0
    assert not (torch.cat(xp) == 0).any() and holes.all(1).flatten(1).sum(1).min() >= 16  # >= a 4x4 corner
    torch.testing.assert_close(torch.cat(xh), torch.where(holes, 0.0, torch.cat(xp)))
    with pytest.raises(DataError, match="cutout"):
        batches(train=True, cutout=-1)


# --- DeviceBatches ---

N, BATCH = 100, 32


def batches(train: bool, seed: int = 0, **kw) -> DeviceBatches:
    images = random_images(N, seed=13)
    labels = torch.arange(N)  # label = index, so y says which images a batch holds
    mean, std = random_stats(seed=14)
    return DeviceBatches(images, labels, mean, std, BATCH, train, torch.Generator().manual_seed(seed), **kw)


def epoch(loader) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs, ys = zip(*loader, strict=True)
    return list(xs), list(ys)


@pytest.fixture(params=[None, 64, 1], ids=["one chunk", "chunks of 2 batches", "chunks of 1 batch"])
def chunking(request, monkeypatch):
    """Augment an epoch in one chunk (the default size), or in several (CHUNK_IMAGES made small)."""
    if request.param is not None:
        monkeypatch.setattr(data.loader, "CHUNK_IMAGES", request.param)


def test_lengths_and_drop_last(chunking):
    assert len(batches(train=True)) == N // BATCH == 3
    assert len(batches(train=False)) == -(-N // BATCH) == 4
    assert len(batches(train=True, drop_last=False)) == 4
    assert len(batches(train=False, drop_last=True)) == 3
    xs, ys = epoch(batches(train=True))
    assert len(xs) == 3 and all(x.shape == (BATCH, 3, 32, 32) and x.dtype == torch.float32 for x in xs)
    assert all(y.shape == (BATCH,) and y.dtype == torch.int64 for y in ys)
    assert len(torch.cat(ys).unique()) == 3 * BATCH  # no image twice
    xs, ys = epoch(batches(train=False))
    assert [len(y) for y in ys] == [32, 32, 32, 4]


def test_train_epoch_visits_every_image_once_without_drop_last(chunking):
    loader = batches(train=True, drop_last=False)
    first = torch.cat(epoch(loader)[1])
    second = torch.cat(epoch(loader)[1])
    for order in (first, second):
        assert torch.equal(order.sort().values, torch.arange(N))
    assert not torch.equal(first, second)  # a new order every epoch
    assert not torch.equal(first, torch.arange(N))


def test_same_generator_seed_same_batches():
    a, b, c = batches(True, seed=1), batches(True, seed=1), batches(True, seed=2)
    for _ in range(2):  # two epochs
        (xa, ya), (xb, yb), (xc, yc) = epoch(a), epoch(b), epoch(c)
        assert all(torch.equal(p, q) for p, q in zip(xa + ya, xb + yb, strict=True))
        assert not torch.equal(torch.cat(ya), torch.cat(yc))
        assert not torch.equal(xa[0], xc[0])


def test_eval_keeps_order_and_only_normalises():
    loader = batches(train=False)
    xs, ys = epoch(loader)
    assert torch.equal(torch.cat(ys), torch.arange(N))
    assert torch.equal(torch.cat(xs), normalise(loader.images, loader.mean, loader.std))
    xs2, _ = epoch(loader)
    assert all(torch.equal(p, q) for p, q in zip(xs, xs2, strict=True))  # no randomness


def test_train_batches_keep_images_and_labels_together(chunking):
    loader = batches(train=True, pad=0)
    plain = normalise(loader.images, loader.mean, loader.std)
    for x, y in loader:
        for xi, yi in zip(x, y, strict=True):
            assert torch.equal(xi, plain[yi]) or torch.equal(xi, plain[yi].flip(-1))


def test_bad_arguments_are_rejected():
    images, mean, std = random_images(10, seed=0), *random_stats(seed=0)
    with pytest.raises(DataError, match="label per image"):
        DeviceBatches(images, torch.arange(9), mean, std, 4, True)
    with pytest.raises(DataError, match="no batches"):
        DeviceBatches(images, torch.arange(10), mean, std, 16, True)
    with pytest.raises(DataError, match="uint8"):
        DeviceBatches(images.float(), torch.arange(10), mean, std, 4, True)
    with pytest.raises(DataError, match="image shape"):
        DeviceBatches(images, torch.arange(10), mean[0], std, 4, True)
    assert len(DeviceBatches(images, torch.arange(10), mean, std, 16, False)) == 1  # eval keeps the partial


@pytest.mark.gpu
def test_device_batches_on_cuda():
    images, labels = random_images(N, seed=13, device="cuda"), torch.arange(N, device="cuda")
    mean, std = random_stats(seed=14, device="cuda")
    loader = DeviceBatches(images, labels, mean, std, BATCH, True, torch.Generator("cuda").manual_seed(0),
                           drop_last=False)
    xs, ys = epoch(loader)
    assert all(x.is_cuda and y.is_cuda for x, y in zip(xs, ys, strict=True))
    assert torch.equal(torch.cat(ys).sort().values, labels)
    with pytest.raises(DataError, match="generator"):
        DeviceBatches(images, labels, mean, std, BATCH, True, torch.Generator().manual_seed(0))


def test_synthetic_images_are_learnable():
    """A small conv net beats chance (10%) by far within 40 SGD steps on augmented synthetic batches."""
    with one_thread():  # tiny ops: far faster on one thread than on two when the CPU is shared
        torch.manual_seed(0)
        train_x, train_y, test_x, test_y = synthetic_cifar(10, 50, 20, seed=3)
        mean, std = normalisation_stats(train_x)
        train = DeviceBatches(torch.from_numpy(train_x), torch.from_numpy(train_y), mean, std, 64, True,
                              torch.Generator().manual_seed(0))
        net = torch.nn.Sequential(  # pooled to 8x8 first: cheap on a busy 2-core CPU
            torch.nn.AvgPool2d(4), torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
        )
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        steps = 0
        while steps < 40:
            for x, y in train:
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
        with torch.no_grad():
            logits = net(normalise(torch.from_numpy(test_x), mean, std))
        accuracy = (logits.argmax(1) == torch.from_numpy(test_y)).float().mean().item()
        assert accuracy > 0.5, accuracy
