"""AlexNet, VGG-BN and GoogLeNet against torchvision's ImageNet architectures, and their CIFAR-side options.

With `config="imagenet"` (GoogLeNet also with `torchvision_quirks=True`) our nets are torchvision's: the same
parameter count, and torchvision's state_dict loaded through an explicit name map (the identity: our modules
use torchvision's names) gives the same logits.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import nets
from train.config import Config
from train.optim import zeros_like_tree
from train.step import AUX_LOSS_WEIGHT, TrainState, make_train_step, precision_for

VGG_DEPTHS = (11, 13, 16, 19)

# name -> (torchvision's constructor, its keyword arguments, our build options); 1000 classes for both.
# googlenet: aux_logits=True is its default for weights=None; init_weights=False skips an init we replace anyway
# (and silences its FutureWarning).
IMAGENET = {
    "alexnet": (torchvision.models.alexnet, {}, {"config": "imagenet"}),
    "googlenet": (torchvision.models.googlenet, {"init_weights": False},
                  {"config": "imagenet", "torchvision_quirks": True}),
    **{f"vgg{d}": (getattr(torchvision.models, f"vgg{d}_bn"), {}, {"config": "imagenet"}) for d in VGG_DEPTHS},
}

# Name map torchvision -> ours: the identity, by design (the three files use torchvision's module names).
NAME_MAP: dict[str, str] = {}


def torchvision_net(name: str, device: str = "cpu") -> nn.Module:
    """torchvision's architecture; on the CPU with uninitialised tensors (randomise_ fills them, cheaper than
    torchvision's own init of VGG's 100M-weight classifier)."""
    make, kwargs, _ = IMAGENET[name]
    with torch.device("meta"):
        reference = make(num_classes=1000, **kwargs)
    return reference if device == "meta" else reference.to_empty(device=device)


def our_net(name: str) -> nets.Net:
    return nets.build(name, 1000, **IMAGENET[name][2])


def randomise_(module: nn.Module, generator: torch.Generator) -> None:
    """Every tensor drawn afresh, none left at a constant, so a wrong name map cannot go unnoticed.

    Weights are He-normal (std sqrt(2 / fan_in)): torchvision's own inits (PyTorch's default for AlexNet, std
    0.01 for GoogLeNet) shrink the signal layer after layer until the logits are the last bias and do not depend
    on the input. BatchNorm scales and shifts, biases and running statistics are random too, so that eval mode
    really reads the running statistics and swapped layers of one width would change the logits.
    """
    with torch.no_grad():
        for m in module.modules():
            is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
            for key, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
                if key == "num_batches_tracked":
                    t.zero_()
                    continue
                if t.ndim >= 2:  # conv and linear weights
                    t.normal_(0, math.sqrt(2 / t[0].numel()), generator=generator)
                elif key == "running_var" or (is_bn and key == "weight"):
                    t.uniform_(0.5, 1.5, generator=generator)
                else:  # biases, BatchNorm shifts, running means
                    t.normal_(0, 0.1, generator=generator)


def mapped(ours: nets.Net, reference: nn.Module) -> tuple[dict, dict]:
    """(params, state) for our net from the reference's state_dict through NAME_MAP."""
    sd = {NAME_MAP.get(k, k): v for k, v in reference.state_dict().items()}
    param_names = [k for k, _ in ours.module.named_parameters()]
    buffer_names = [k for k, _ in ours.module.named_buffers()]
    assert set(param_names) | set(buffer_names) == set(sd)
    return {k: sd[k] for k in param_names}, {k: sd[k] for k in buffer_names}


@pytest.mark.parametrize("name", list(IMAGENET))
def test_imagenet_param_count_equals_torchvision(name):
    reference = torchvision_net(name, device="meta")
    ours = our_net(name)
    assert ours.param_count() == sum(p.numel() for p in reference.parameters())
    assert set(ours.module.state_dict()) == {NAME_MAP.get(k, k) for k in reference.state_dict()}


# Input sides: AlexNet at its own 224 (its 6x6 grid then holds six distinct columns); VGG and GoogLeNet at 64,
# which their adaptive average pools accept (VGG: 2x2 -> 7x7, torchvision's minimum is 32; GoogLeNet: 2x2 at 5b).
LOGIT_CASES = [("alexnet", 224), ("vgg11", 64), ("googlenet", 64)]


@pytest.mark.parametrize("name,side", LOGIT_CASES)
def test_torchvision_weights_give_same_logits(name, side):
    reference = torchvision_net(name).eval()
    randomise_(reference, torch.Generator().manual_seed(0))
    ours = our_net(name)
    params, state = mapped(ours, reference)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = reference(x)
        logits, _ = ours.apply(params, state, x, train=False)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # The check means something: the logits depend on the input far beyond the tolerance.
    assert (expected[0] - expected[1]).abs().max() > 0.1


def test_googlenet_train_mode_equals_torchvision():
    """Train mode too: batch statistics, the updated running statistics, and both auxiliary heads (torchvision
    returns them as (logits, aux2, aux1), we as (logits, aux1, aux2)); one seed gives both the same dropout."""
    reference = torchvision_net("googlenet").train()
    randomise_(reference, torch.Generator().manual_seed(0))
    ours = our_net("googlenet")
    params, state = mapped(ours, reference)
    state = {k: v.clone() for k, v in state.items()}  # the reference updates its own in place
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        logits, aux2, aux1 = reference(x)
        torch.manual_seed(1)
        (our_logits, our_aux1, our_aux2), new_state = ours.apply(params, state, x, train=True)
    for got, expected in ((our_logits, logits), (our_aux1, aux1), (our_aux2, aux2)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    reference_state = {NAME_MAP.get(k, k): v for k, v in reference.state_dict().items()}
    for k, v in new_state.items():
        torch.testing.assert_close(v, reference_state[k])


def test_googlenet_paper_default_differs_from_torchvision_by_the_third_branch():
    """Without the quirks, each module's third branch is the paper's 5x5: (25 - 9) * #5x5reduce * #5x5 more
    weights per module than torchvision's 3x3."""
    from nets.googlenet import INCEPTIONS

    paper = nets.build("googlenet", 1000, config="imagenet")
    quirks = nets.build("googlenet", 1000, config="imagenet", torchvision_quirks=True)
    extra = sum((25 - 9) * w[3] * w[4] for w in INCEPTIONS.values())
    assert paper.param_count() - quirks.param_count() == extra
    assert paper.module.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert quirks.module.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert nets.build("googlenet", 10).module.inception3a.branch3[1].conv.kernel_size == (5, 5)


def test_googlenet_aux_heads_and_the_trainer_loss():
    """aux_logits=True: train mode returns (logits, aux1, aux2), eval mode the logits alone, and the trainer's
    step trains all three heads with loss = CE(logits) + 0.3 * (CE(aux1) + CE(aux2))."""
    net = nets.build("googlenet", 10, aux_logits=True)
    params, state = net.init(torch.Generator().manual_seed(0))
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    (logits, aux1, aux2), _ = net.apply(params, state, x, train=True)
    assert logits.shape == aux1.shape == aux2.shape == (2, 10)
    eval_logits, _ = net.apply(params, state, x, train=False)
    assert isinstance(eval_logits, torch.Tensor) and eval_logits.shape == (2, 10)

    step = make_train_step(net, Config(), precision_for(torch.device("cpu"), "fp32"))
    ts = TrainState(params, state, zeros_like_tree(params))
    new_ts, metrics = step(ts, (x, y), torch.tensor(0.01))
    expected = F.cross_entropy(logits, y) + AUX_LOSS_WEIGHT * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
    torch.testing.assert_close(metrics["loss"], expected.detach(), rtol=1e-5, atol=1e-5)
    for head in ("aux1.fc2.weight", "aux2.conv.conv.weight", "fc.weight"):
        assert not torch.equal(new_ts.params[head], params[head]), f"{head} was not trained"


def test_alexnet_without_batchnorm():
    """batchnorm=False: biased convolutions, no running statistics, and still a gradient for every parameter."""
    net = nets.build("alexnet", 10, batchnorm=False)
    params, state = net.init(torch.Generator().manual_seed(0))
    assert state == {} and "features.0.bias" in params
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    grads = torch.func.grad(lambda p: F.cross_entropy(net.apply(p, state, x, train=True)[0], y))(params)
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_cifar_heads_and_grids():
    """The CIFAR designs the docstrings describe: VGG ends on a 1x1 map into one Linear(512, classes), AlexNet's
    classifier reads 256 x 4 x 4 features, GoogLeNet's inception groups see 32, 16 and 8 pixels."""
    vgg = nets.build("vgg16", 100).module
    assert [type(m) for m in vgg.classifier] == [nets.blocks.Dropout, nn.Linear]
    assert (vgg.classifier[1].in_features, vgg.classifier[1].out_features) == (512, 100)
    assert nets.build("alexnet", 10).module.classifier[1].in_features == 256 * 4 * 4

    net = nets.build("googlenet", 10).module
    sides = {}
    hooks = [getattr(net, f"inception{n}").register_forward_hook(
        lambda m, i, o, n=n: sides.__setitem__(n, o.shape[-1])) for n in ("3a", "4a", "5b")]
    with torch.device("meta"):
        net(torch.empty(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sides == {"3a": 32, "4a": 16, "5b": 8}


@pytest.mark.parametrize("name,opts,match", [
    ("alexnet", {"config": "tiny"}, "config"),
    ("alexnet", {"dropout": 1.0}, "dropout"),
    ("alexnet", {"batchnorm": "yes"}, "batchnorm"),
    ("vgg11", {"config": "imagenet-ish"}, "config"),
    ("vgg19", {"dropout": -0.1}, "dropout"),
    ("googlenet", {"config": "cifar10"}, "config"),
    ("googlenet", {"aux_logits": 1}, "aux_logits"),
    ("googlenet", {"torchvision_quirks": "true"}, "torchvision_quirks"),
    ("googlenet", {"dropout": "half"}, "dropout"),
])
def test_bad_options_raise(name, opts, match):
    with pytest.raises(nets.NetError, match=match):
        nets.build(name, 10, **opts)
