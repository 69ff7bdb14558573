"""nets/fold.py: K members of a net folded into one net K times as wide compute exactly the K members."""

import pytest
import torch

import nets
from nets.fold import Folded, fold_images, foldable
from train.members import stack

K = 2
# Every family that folds, at a test size; resnet50 for the Bottleneck, xception for its blocks and
# separable convolutions, vgg11 and alexnet for flatten(1) before Linear layers (AlexNet's over a 2x2 grid).
FOLDING = [("resnet18", {"width": 4}), ("resnet50", {"width": 4}), ("mobilenetv1", {"alpha": 0.25}),
           ("vgg11", {"dropout": 0.0}), ("alexnet", {"dropout": 0.0})]


def members(model, options):
    net = nets.build(model, 10, **options)
    inits = []
    for seed in range(K):
        params, state = net.init(torch.Generator().manual_seed(seed))
        state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
        inits.append(({k: v.double() for k, v in params.items()}, state))
    return net, inits


@pytest.mark.parametrize("model,options", FOLDING, ids=[m for m, _ in FOLDING])
def test_folded_members_are_the_members(model, options):
    """In float64 on fresh random inputs: the folded net's logits and new BatchNorm statistics, train and eval
    mode, are each member's own Net.apply's, and the gradient of the members' summed losses through the folded
    net is each member's own gradient."""
    net, inits = members(model, options)
    assert foldable(net)
    params, state = stack([p for p, _ in inits]), stack([s for _, s in inits])
    x, y = torch.randn(K, 4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (K, 4))
    folded = Folded(net, K)

    def total(params):
        logits = folded.apply(params, state, fold_images(x), True)[0]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")

    grads = torch.func.grad(total)(params)
    for train in (True, False):
        logits, new = folded.apply(params, state, fold_images(x), train)
        for k, (p, s) in enumerate(inits):
            expected, expected_state = net.apply(p, s, x[k], train)
            torch.testing.assert_close(logits[k], expected)
            for name, v in expected_state.items():
                torch.testing.assert_close(new[name][k], v)
    def single(p, s, x, y):
        return torch.nn.functional.cross_entropy(net.apply(p, s, x, True)[0], y, reduction="sum")

    for k, (p, s) in enumerate(inits):
        one = torch.func.grad(single)(p, s, x[k], y[k])
        for name, g in one.items():
            torch.testing.assert_close(grads[name][k], g)
    assert all(v.equal(s) for s, v in zip(state.values(), stack([s for _, s in inits]).values()))  # pure


@pytest.mark.parametrize("model,options,why", [
    ("googlenet", {}, "Inception concatenates along channels"),
    ("vit_tiny", {}, "LayerNorm and attention mix a token's channels"),
    ("vgg11", {"dropout": 0.5}, "dropout draws per member"),
    ("vit_tiny", {"drop_path": 0.1}, "stochastic depth draws per member"),
])
def test_nets_that_would_mix_members_do_not_fold(model, options, why):
    net = nets.build(model, 10, **options)
    assert not foldable(net), why
    with pytest.raises(ValueError, match=f"{model} does not fold into 2 members"):
        Folded(net, 2)


@pytest.mark.parametrize("tta", ["none", "translate"])
def test_the_members_eval_step_folds_and_scores_each_member_as_its_own(tta):
    """make_eval_step(members=K) of a net that folds: each member's scores and log-probabilities (with TTA: of
    the views' averaged probabilities) are its own single eval step's, in float64."""
    from train.step import Precision, make_eval_step

    net, inits = members("resnet18", {"width": 4})
    params, state = stack([p for p, _ in inits]), stack([s for _, s in inits])
    f64 = Precision(None, False, "cpu")  # no autocast: the float64 tensors stay float64
    x, y = torch.randn(5, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (5,))
    got, logits = make_eval_step(net, f64, tta, members=K)(params, state, x, y)
    for k, (p, s) in enumerate(inits):
        expected, expected_logits = make_eval_step(net, f64, tta)(p, s, x, y)
        torch.testing.assert_close(logits[k], expected_logits)
        for name, v in expected.items():
            torch.testing.assert_close(got[name][k], v)
