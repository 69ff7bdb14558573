"""Stochastic depth (nets.blocks.DropPath) and the ViTs' drop_path option."""

import pytest
import torch

import nets
from nets.blocks import DropPath
from nets.core import NetError
from nets.vit import drop_path_rates


def test_drop_path_is_the_identity_in_eval_mode_and_at_zero():
    x = torch.randn(8, 5, 3)
    assert torch.equal(DropPath(0.3).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_each_sample_is_dropped_whole_or_kept_rescaled_at_rate_p():
    torch.manual_seed(11)
    p, n = 0.3, 20000
    x = torch.rand(n, 4, 2) + 0.5  # no zeros of its own
    out = DropPath(p).train()(x)
    dropped = (out == 0).flatten(1).all(1)
    kept = torch.isclose(out, x / (1 - p)).flatten(1).all(1)
    assert torch.all(dropped ^ kept)  # every sample one or the other, never partly
    # Binomial(n, p): standard deviation sqrt(n p (1 - p)) = 65 samples; 5 of them is far out.
    assert abs(int(dropped.sum()) - p * n) < 5 * (n * p * (1 - p)) ** 0.5
    assert torch.allclose(out.mean(0), x.mean(0), rtol=0.05)  # the expectation is kept


def test_drop_path_draws_from_the_global_generator_in_float32_for_bf16_branches():
    x = torch.ones(64, 3, dtype=torch.bfloat16)
    torch.manual_seed(3)
    a = DropPath(0.5).train()(x)
    torch.manual_seed(3)
    b = DropPath(0.5).train()(x)
    torch.manual_seed(4)
    c = DropPath(0.5).train()(x)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b) and not torch.equal(a, c)


def test_rates_rise_linearly_from_zero_to_drop_path():
    assert drop_path_rates(0.1, 5) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert drop_path_rates(0.2, 1) == [0.2]
    net = nets.build("vit", 10, drop_path=0.12)
    got = [block.drop_path.p for block in net.module.blocks]
    assert got == pytest.approx(drop_path_rates(0.12, 7)) and got[-1] == pytest.approx(0.12)


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.1", True])
def test_bad_drop_path_is_a_one_line_error(bad):
    with pytest.raises(NetError, match="net.drop_path=") as e:
        nets.build("vit", 10, drop_path=bad)
    assert "\n" not in str(e.value)


def test_vit_with_drop_path_evaluates_as_without_and_trains_differently():
    small = dict(patch=8, image_size=16)
    plain, dropped = nets.build("vit_tiny", 10, **small), nets.build("vit_tiny", 10, drop_path=0.5, **small)
    params, state = plain.init(torch.Generator().manual_seed(0))
    x = torch.randn(6, 3, 16, 16)
    assert torch.equal(plain.apply(params, state, x, train=False)[0], dropped.apply(params, state, x, train=False)[0])
    torch.manual_seed(0)
    train_plain = plain.apply(params, state, x, train=True)[0]
    torch.manual_seed(0)
    train_dropped = dropped.apply(params, state, x, train=True)[0]
    assert torch.isfinite(train_dropped).all() and not torch.allclose(train_plain, train_dropped)
