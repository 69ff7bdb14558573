"""Every registered net, both class counts: the functional contract, pinned sizes, and that it can learn."""

import pytest
import torch
import torch.nn.functional as F

import nets
from nets.core import Net
from train.optim import decay_rule, sgd, zeros_like_tree

# Exact parameter counts (10 classes, 100 classes). A new net must be pinned here.
PARAM_COUNTS = {
    "resnet18": (11_173_962, 11_220_132),
    "resnet34": (21_282_122, 21_328_292),
    "resnet50": (23_520_842, 23_705_252),
    "resnet101": (42_512_970, 42_697_380),
    "resnet152": (58_156_618, 58_341_028),
    "alexnet": (7_704_522, 7_796_772),
    "vgg11": (9_228_362, 9_274_532),
    "vgg13": (9_413_066, 9_459_236),
    "vgg16": (14_724_042, 14_770_212),
    "vgg19": (20_035_018, 20_081_188),
    "googlenet": (5_983_402, 6_075_652),
    "mobilenetv1": (3_217_226, 3_309_476),
    "xception": (20_827_442, 21_011_852),
    "vit": (12_470_026, 12_504_676),
    "vit_tiny": (5_362_762, 5_380_132),
    "vit_small": (21_342_346, 21_376_996),
    "vit_base": (85_152_010, 85_221_220),
}

CASES = [(name, classes) for name in nets.names() for classes in (10, 100)]
# The three deepest nets run test_contract at 10 classes only and skip test_init_is_seeded and
# test_functional_equals_module: the 100-class head, the init and the blocks are the same code as their
# families' smaller members check (resnet18-50, vit_tiny, vit_small), and the three cost ~15 s of the 2-core
# CI's 10 minutes in the first two and ~7 s in the third (`pytest --durations`, 2026-12-01 and -02).
DEEPEST = {"resnet101", "resnet152", "vit_base"}
CONTRACT_CASES = [(name, classes) for name, classes in CASES if classes == 10 or name not in DEEPEST]


def fresh_net(name, classes) -> tuple[Net, dict, dict]:
    net = nets.build(name, classes)
    params, state = net.init(torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()))))
    return net, params, state


def test_every_net_is_pinned():
    assert set(nets.names()) == set(PARAM_COUNTS)


@pytest.mark.parametrize("name,classes", CASES)
def test_param_count(name, classes):
    """The count the skeleton reports, and (at 10 classes: init is the same code at 100) the tensors init makes."""
    net = nets.build(name, classes)
    expected = PARAM_COUNTS[name][classes == 100]
    assert net.param_count() == expected
    if classes == 10:
        params, _ = net.init(torch.Generator().manual_seed(0))
        assert sum(p.numel() for p in params.values()) == expected


@pytest.mark.parametrize("name,classes", CONTRACT_CASES)
def test_contract(name, classes):
    """Shape, finite logits, a gradient for every parameter, BatchNorm state semantics, and one step of the
    real SGD update (momentum, weight decay) lowers the loss on its batch. Batch 2 keeps the deep nets cheap
    on the CPU."""
    net, params, state = fresh_net(name, classes)
    before = {k: v.clone() for k, v in state.items()}
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, classes, (2,))

    def loss_fn(p):
        logits, new_state = net.apply(p, state, x, train=True)
        return F.cross_entropy(logits, y), (logits, new_state)

    grads, (loss, (logits, new_state)) = torch.func.grad_and_value(loss_fn, has_aux=True)(params)
    assert logits.shape == (2, classes) and torch.isfinite(logits).all()
    assert set(grads) == set(params)
    for k, g in grads.items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"no gradient reaches {k}"
    # Train mode: new statistics returned, the caller's untouched.
    for k in state:
        assert torch.equal(state[k], before[k]), f"caller's {k} changed in place"
    if state:
        changed = [k for k in state if not torch.equal(new_state[k], state[k])]
        assert changed, "train mode returned no new BatchNorm statistics"
    # Eval mode: reads the running statistics, returns the state object itself, batch-size independent.
    logits_eval, same = net.apply(params, new_state, x, train=False)
    assert same is new_state
    one, _ = net.apply(params, new_state, x[:1], train=False)
    torch.testing.assert_close(one, logits_eval[:1], rtol=1e-4, atol=1e-5)
    # One SGD step with the trainer's update rule.
    lr = torch.tensor(1e-3)
    stepped, _ = sgd(params, grads, zeros_like_tree(params), lr, 0.9, 5e-4, False, decay_rule(True))
    assert loss_fn(stepped)[0] < loss


@pytest.mark.parametrize("name", [n for n in nets.names() if n not in DEEPEST])
def test_functional_equals_module(name):
    """apply(...) gives what the plain nn.Module gives with the same tensors loaded, in both modes."""
    net, params, state = fresh_net(name, 10)
    module = net.to_module(params, state)
    x = torch.randn(3, 3, 32, 32)
    for train in (False, True):
        module.train(train)
        expected = module(x)
        got, new_state = net.apply(params, state, x, train=train)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        if train:  # the module updated its own buffers in place; the functional call returned the same
            for k, v in module.state_dict().items():
                if k in new_state:
                    torch.testing.assert_close(new_state[k], v)


@pytest.mark.parametrize("name", [n for n in nets.names() if n not in DEEPEST])  # their init: smaller members'
def test_init_is_seeded(name):
    net = nets.build(name, 10)
    a, _ = net.init(torch.Generator().manual_seed(7))
    b, _ = net.init(torch.Generator().manual_seed(7))
    c, _ = net.init(torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].ndim >= 2)


def test_unknown_net_and_option():
    with pytest.raises(nets.NetError, match="unknown model 'resnet19'.*resnet18"):
        nets.build("resnet19")
    with pytest.raises(nets.NetError, match="has no option depth"):
        nets.build("resnet18", depth=3)
    with pytest.raises(nets.NetError, match="stem"):
        nets.build("resnet18", stem="tiny")


def test_zero_init_residual():
    net = nets.build("resnet18", 10, zero_init_residual=True)
    params, _ = net.init(torch.Generator().manual_seed(0))
    assert params["layer1.0.bn2.weight"].abs().sum() == 0
    assert params["layer1.0.bn1.weight"].abs().sum() > 0


def test_skeletons_are_both_modes_read_only():
    """Net.skeletons: the train-mode and eval-mode modules (what train/sync_bn.py rewrites), not replaceable."""
    net = nets.build("resnet18", 10)
    assert net.skeletons[True] is net.module and net.module.training
    assert not net.skeletons[False].training and net.skeletons[False] is not net.module
    with pytest.raises(TypeError):
        net.skeletons[True] = net.skeletons[False]
