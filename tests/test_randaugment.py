"""RandAugment (data/randaugment.py) against torchvision's own ops, its random draws, and in the loader and trainer.

The oracle is what torchvision.transforms.RandAugment does to one image: its magnitudes
(RandAugment._augmentation_space with 31 bins) and its op application (autoaugment._apply_op, nearest, fill None),
both private but the exact code the transform runs. Every comparison is exact: the batched ops are written to
round as torchvision's do (see the module docstring), so no tolerance is needed.
"""

import json
import math
import random

import pytest
import torch
import torchvision
from runs import one_thread
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

from data import DataError, DeviceBatches, normalise, random_crop_flip
from data.randaugment import MAGNITUDE_BINS, OPS, SIGNED, apply_op, rand_augment
from train.config import ConfigError, parse
from train.loop import run

# A narrow ResNet-18 on the CPU on the seed recipe, as tests/test_train_e2e.py's TINY.
TINY = ["model=resnet18", "net.width=4", "device=cpu", "compile=false", "download=false", "progress=false",
        "recipe=seed"]


@pytest.fixture
def seed(request):
    """A fresh seed per test, shown on failure (pytest prints the test's parameters and this fixture's repr)."""
    value = random.SystemRandom().randrange(2**31)
    request.node.user_properties.append(("seed", value))
    print(f"seed={value}")
    return value


def random_images(n: int, shape, seed: int) -> torch.Tensor:
    """Uniform noise, plus the cases that take other branches: a flat image (AutoContrast's and Equalize's
    "unchanged"), a narrow-range one, one with a single dark pixel (Equalize's step from all but the brightest
    value) and a saturated one (Brightness and Contrast clamp)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    x[0] = 77
    x[1] = x[1] // 8 + 120
    x[2] = 250
    x[2, :, 3, 5] = 3
    x[3] = torch.where(x[3] > 128, 255, x[3])
    return x


def torchvision_magnitude(op: str, magnitude: int, negate: bool, height: int, width: int) -> float:
    """The signed magnitude torchvision's RandAugment.forward passes to _apply_op."""
    magnitudes, signed = torchvision.transforms.RandAugment()._augmentation_space(MAGNITUDE_BINS, (height, width))[op]
    m = float(magnitudes[magnitude].item()) if magnitudes.ndim > 0 else 0.0
    return -m if signed and negate else m


def torchvision_op(image: torch.Tensor, op: str, magnitude: int, negate: bool) -> torch.Tensor:
    _, H, W = image.shape
    return _apply_op(image, op, torchvision_magnitude(op, magnitude, negate, H, W), InterpolationMode.NEAREST, None)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 19, 26), (1, 32, 32)], ids=["rgb32", "rgb19x26", "grey32"])
@pytest.mark.parametrize("op", OPS)
def test_each_op_equals_torchvision_image_by_image(op, shape, seed):
    """apply_op on a batch, half the images negated, equals torchvision's op on each image, at the end bins and
    one random bin, exactly."""
    images = random_images(16, shape, seed)
    negate = torch.arange(16) % 2 == 1
    for magnitude in (0, random.Random(seed).randrange(1, MAGNITUDE_BINS - 1), MAGNITUDE_BINS - 1):
        out = apply_op(images, op, magnitude, negate)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        for b in range(len(images)):
            expected = torchvision_op(images[b], op, magnitude, bool(negate[b]))
            wrong = int((out[b] != expected).sum())
            assert wrong == 0, f"{op} bin {magnitude} image {b} negated={bool(negate[b])}: {wrong} pixels differ"


@pytest.mark.gpu
def test_each_op_equals_torchvision_on_cuda(seed):
    """The same comparison on CUDA, against torchvision's ops on the CUDA image (its Equalize uses histc there)."""
    images = random_images(16, (3, 32, 32), seed).cuda()
    negate = torch.arange(16, device="cuda") % 2 == 1
    for op in OPS:
        for magnitude in (0, random.Random(seed).randrange(1, MAGNITUDE_BINS - 1), MAGNITUDE_BINS - 1):
            out = apply_op(images, op, magnitude, negate)
            for b in range(len(images)):
                expected = torchvision_op(images[b], op, magnitude, bool(negate[b]))
                assert torch.equal(out[b], expected), f"{op} bin {magnitude} image {b}"


def test_signs_matter_for_signed_ops_only(seed):
    images = random_images(4, (3, 32, 32), seed)
    for op in OPS:
        plus = apply_op(images, op, 20, torch.zeros(4, dtype=torch.bool))
        minus = apply_op(images, op, 20, torch.ones(4, dtype=torch.bool))
        assert torch.equal(plus, minus) != (op in SIGNED), op


@pytest.mark.parametrize("ops", [1, 2, 3])
def test_rand_augment_is_torchvision_with_the_drawn_ops(ops, seed):
    """Each image is torchvision's ops applied in turn with the ops and signs rand_augment drew, replayed from a
    generator of the same seed in the documented order: op (B, ops), then negate (B, ops)."""
    images = random_images(48, (3, 32, 32), seed)
    magnitude = random.Random(seed).randrange(MAGNITUDE_BINS)
    out = rand_augment(images, ops, magnitude, torch.Generator().manual_seed(seed))
    replay = torch.Generator().manual_seed(seed)
    drawn = torch.randint(0, len(OPS), (48, ops), generator=replay)
    negated = torch.randint(0, 2, (48, ops), generator=replay).bool()
    for b in range(48):
        expected = images[b]
        for r in range(ops):
            expected = torchvision_op(expected, OPS[drawn[b, r]], magnitude, bool(negated[b, r]))
        assert torch.equal(out[b], expected), f"image {b}, ops {[OPS[i] for i in drawn[b]]}, bin {magnitude}"


def test_draws_only_from_the_given_generator(seed):
    images = random_images(32, (3, 32, 32), seed)
    before = images.clone()
    global_state = torch.get_rng_state()
    first = rand_augment(images, 2, 9, torch.Generator().manual_seed(seed))
    again = rand_augment(images, 2, 9, torch.Generator().manual_seed(seed))
    other = rand_augment(images, 2, 9, torch.Generator().manual_seed(seed + 1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), global_state)  # torch's global generator untouched
    assert torch.equal(images, before)  # the input is not changed
    assert first.dtype == torch.uint8 and first.shape == images.shape and first.device == images.device
    g = torch.Generator().manual_seed(seed)
    state = g.get_state()
    assert rand_augment(images, 0, 9, g) is images  # off: the images as they are,
    assert torch.equal(g.get_state(), state)  # and nothing drawn


def test_every_op_is_chosen_equally_often(seed):
    """ops=1 on 2800 noise images (pixels 20..235, so AutoContrast changes them) at bin 30: each output is
    identified as the one (op, sign) whose result it equals; each op's count is Binomial(2800, 1/14) (mean 200,
    sd 13.6), so +-80 (6 sd) never fails by chance, nor does a signed op's share of negations staying within
    0.5 +- 0.15 (sd ~0.035)."""
    n, magnitude = 2800, MAGNITUDE_BINS - 1
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(20, 236, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    with one_thread():
        out = rand_augment(images, 1, magnitude, g)
        candidates = {(op, sign): apply_op(images, op, magnitude, torch.full((n,), sign))
                      for op in OPS for sign in ((False, True) if op in SIGNED else (False,))}
    matches = torch.stack([(result == out).flatten(1).all(1) for result in candidates.values()], 1)  # (n, k)
    assert int((matches.sum(1) != 1).sum()) == 0, "an output matches no op, or more than one"
    found = [list(candidates)[k] for k in matches.int().argmax(1).tolist()]
    counts = {op: sum(f[0] == op for f in found) for op in OPS}
    for op, count in counts.items():
        assert abs(count - n / len(OPS)) < 80, counts
        if op in SIGNED:
            assert abs(sum(f == (op, True) for f in found) / count - 0.5) < 0.15, op


def test_bad_arguments_are_one_line_errors():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    for ops, magnitude in ((-1, 9), (2, -1), (2, MAGNITUDE_BINS)):
        with pytest.raises(DataError, match="randaugment") as e:
            rand_augment(images, ops, magnitude, None)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="uint8"):
        rand_augment(images.float(), 1, 9, None)
    with pytest.raises(DataError, match="not a RandAugment op"):
        apply_op(images, "Invert", 9, torch.zeros(2, dtype=torch.bool))


def loader(images, ops, magnitude, seed, **kw):
    mean, std = torch.full((3, 32, 32), 120.0), torch.full((3, 32, 32), 60.0)
    return DeviceBatches(images, torch.arange(len(images)) % 10, mean, std, 16, train=True,
                         generator=torch.Generator().manual_seed(seed), randaugment_ops=ops,
                         randaugment_magnitude=magnitude, **kw)


def test_device_batches_apply_it_first_in_the_documented_draw_order(seed):
    """The first epoch's batches equal randperm, then rand_augment on the uint8 chunk, then random_crop_flip
    (normalised float32), replayed from the same seed; the same seed gives the same epoch."""
    images = random_images(64, (3, 32, 32), seed)
    batches = loader(images, 2, 12, seed)
    epoch = list(batches)
    assert len(epoch) == 4
    for x, y in epoch:
        assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and y.shape == (16,)
    replay = torch.Generator().manual_seed(seed)
    order = torch.randperm(64, generator=replay)
    expected = random_crop_flip(rand_augment(images[order], 2, 12, replay), batches.mean, batches.std, 4, replay)
    assert torch.equal(torch.cat([x for x, _ in epoch]), expected)
    again = list(loader(images, 2, 12, seed))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch, again))
    plain = torch.cat([x for x, _ in loader(images, 0, 12, seed, pad=0)])  # off: normalise(images[order]), flipped
    order_off = torch.randperm(64, generator=torch.Generator().manual_seed(seed))
    unflipped = normalise(images[order_off], batches.mean, batches.std)
    assert all(torch.equal(p, u) or torch.equal(p, u.flip(-1)) for p, u in zip(plain, unflipped))


def test_device_batches_and_config_reject_bad_values(cifar10_pickles):
    images = torch.zeros(32, 3, 32, 32, dtype=torch.uint8)
    for ops, magnitude in ((-1, 9), (1, -1), (1, 31)):
        with pytest.raises(DataError, match="randaugment") as e:
            loader(images, ops, magnitude, 0)
        assert "\n" not in str(e.value)
    for word in ("randaugment=-1", "randaugment_magnitude=31", "randaugment_magnitude=-2", "randaugment=two"):
        with pytest.raises(ConfigError, match="randaugment") as e:
            parse([word])
        assert "\n" not in str(e.value)
    cfg = parse(["randaugment=2", "randaugment_magnitude=30"])
    assert (cfg.randaugment, cfg.randaugment_magnitude) == (2, 30)
    assert (parse([]).randaugment, parse([]).randaugment_magnitude) == (0, 9)


def test_training_with_randaugment_completes_and_learns(cifar10_pickles, tmp_path):
    """randaugment=2 through the real trainer on the CPU: finite losses, results.json written, above chance."""
    cfg = parse([*TINY, f"data={cifar10_pickles}", f"out={tmp_path}", "randaugment=2", "epochs=5",
                 "batch_size=20", "lr=0.05", "val_fraction=0.2", "schedule=onecycle", "seed=3"])
    with one_thread():  # small ops on 2 busy cores run faster on one thread
        results = run(cfg, log=lambda line: None)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all(math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"]) for m in lines)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results)) and saved["epochs_run"] == 5
    assert json.loads((tmp_path / "config.json").read_text())["randaugment"] == 2
    assert lines[-1]["train_loss"] < lines[0]["train_loss"] and results["best_val_top1"] > 20
