"""mixup and cutmix: mix_batch against slicing references, in DeviceBatches, and soft targets in the step."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_data_loader import batches, epoch
from test_step import CPU, fresh_state, small_net

from data import DataError, mix_batch
from train.config import Config, ConfigError, parse
from train.step import make_train_step

B, K, H, W = 24, 7, 32, 32


def draws(seed: int, kind: str):
    """Replay mix_batch's draws from a generator seeded alike: perm, lam, then cutmix's cy, cx."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(B, generator=g)
    lam = float(torch.rand((), generator=g))
    if kind == "mixup":
        return perm, lam, None
    return perm, lam, (int(torch.randint(0, H, (), generator=g)), int(torch.randint(0, W, (), generator=g)))


def targets_reference(y, perm, share: float) -> torch.Tensor:
    """Row b: `share` on y[b], the rest on y[perm[b]] (the same class gets both), float64 loops."""
    t = torch.zeros(len(y), K, dtype=torch.float64)
    for b in range(len(y)):
        t[b, y[b]] += share
        t[b, y[perm[b]]] += 1 - share
    return t


def test_mixup_is_the_convex_combination_with_a_permutation():
    x, y = torch.randn(B, 3, H, W), torch.randint(0, K, (B,))
    out, t = mix_batch(x, y, "mixup", K, torch.Generator().manual_seed(5))
    perm, lam, _ = draws(5, "mixup")
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[perm])
    assert t.dtype == torch.float32 and t.shape == (B, K)
    torch.testing.assert_close(t.double(), targets_reference(y, perm, lam))
    assert not torch.equal(perm, torch.arange(B))


def test_cutmix_pastes_one_clipped_box_and_labels_by_area():
    x, y = torch.randn(B, 3, H, W), torch.randint(0, K, (B,))
    clipped = partial = 0
    for seed in range(40):
        out, t = mix_batch(x, y, "cutmix", K, torch.Generator().manual_seed(seed))
        perm, lam, (cy, cx) = draws(seed, "cutmix")
        h, w = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
        top, bottom = max(cy - h // 2, 0), min(cy + h // 2, H)
        left, right = max(cx - w // 2, 0), min(cx + w // 2, W)
        ref = x.clone()
        ref[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
        assert torch.equal(out, ref)
        kept = 1 - max(bottom - top, 0) * max(right - left, 0) / (H * W)
        torch.testing.assert_close(t.double(), targets_reference(y, perm, kept))
        clipped += (bottom - top, right - left) != (h // 2 * 2, w // 2 * 2)
        partial += 0 < kept < 1
    assert clipped > 0 and partial > 20  # boxes at an edge, and mostly a real mix


def test_device_batches_mix_after_the_augmentation():
    """The mixed epoch is the plain epoch's batches, each passed through mix_batch on the same stream."""
    plain, mixed = batches(train=True, seed=4), batches(train=True, seed=4, mix="mixup", num_classes=100)
    xs, ys = epoch(plain)
    expected = [mix_batch(x, y, "mixup", 100, plain.generator) for x, y in zip(xs, ys, strict=True)]
    for (x, t), (ex, et) in zip(mixed, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(t, et)
        assert t.shape == (len(x), 100) and torch.allclose(t.sum(1), torch.ones(len(x)))
    x, t = mixed.example()
    assert x.shape == xs[0].shape and t.dtype == torch.float32 and t.shape == (len(x), 100)
    assert torch.equal(t.argmax(1), mixed.labels[: len(x)])
    x, y = plain.example()
    assert y.dtype == torch.int64 and y.shape == (len(x),)


def test_bad_mix_settings_are_one_line_errors():
    with pytest.raises(DataError, match="mix='blend' is not one of: none, mixup, cutmix"):
        batches(train=True, mix="blend")
    with pytest.raises(DataError, match="needs num_classes above every label"):
        batches(train=True, mix="cutmix", num_classes=10)  # labels run to 99
    with pytest.raises(ConfigError, match="mix='blend' is not one of"):
        parse(["mix=blend"])


def test_soft_targets_in_the_step():
    """One-hot soft targets give the hard labels' step exactly; mixed ones the float64 soft cross-entropy."""
    net, cfg = small_net(), Config(label_smoothing=0.1)
    ts = fresh_state(net)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    step = make_train_step(net, cfg, CPU)
    lr = torch.tensor(0.1)
    hard_ts, hard = step(ts, (x, y), lr)
    soft_ts, soft = step(ts, (x, F.one_hot(y, 10).float()), lr)
    torch.testing.assert_close(soft["loss"], hard["loss"])
    assert soft["correct"] == hard["correct"]
    for k in hard_ts.params:
        torch.testing.assert_close(soft_ts.params[k], hard_ts.params[k])

    mixed_x, t = mix_batch(x, y, "mixup", 10, torch.Generator().manual_seed(1))
    _, m = step(ts, (mixed_x, t), lr)
    with torch.no_grad():
        logits, _ = net.apply(ts.params, ts.state, mixed_x, train=True)
    smoothed = 0.9 * t.double() + 0.1 / 10
    expected = -(smoothed * logits.double().log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(m["loss"].double(), expected, rtol=1e-5, atol=1e-6)
    assert m["correct"] == (logits.argmax(1) == t.argmax(1)).sum()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_on_cuda_never_waits_for_the_host(kind):
    """On CUDA the mixed batches stay on the device with no host synchronisation (lam, the box and the
    targets are tensors), as every other part of the loader."""
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8, device="cuda")
    labels = torch.arange(100, device="cuda") % 10
    mean, std = torch.full((3, 32, 32), 128.0, device="cuda"), torch.full((3, 32, 32), 64.0, device="cuda")
    from data import DeviceBatches

    loader = DeviceBatches(images, labels, mean, std, 32, True, torch.Generator("cuda").manual_seed(0),
                           cutout=8, mix=kind, num_classes=10)
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        out = list(loader)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for x, t in out:
        assert x.is_cuda and t.is_cuda and t.shape == (32, 10)
        torch.testing.assert_close(t.sum(1), torch.ones(32, device="cuda"))
