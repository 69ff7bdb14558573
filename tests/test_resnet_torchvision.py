"""Independent check of the ResNet family against torchvision's ImageNet architectures."""

import pytest
import torch
import torchvision

import nets

DEPTHS = (18, 34, 50, 101, 152)


def torchvision_resnet(depth):
    return getattr(torchvision.models, f"resnet{depth}")


@pytest.mark.parametrize("depth", DEPTHS)
def test_imagenet_param_count_equals_torchvision(depth):
    with torch.device("meta"):
        reference = torchvision_resnet(depth)(num_classes=1000)
    ours = nets.build(f"resnet{depth}", 1000, stem="imagenet")
    assert ours.param_count() == sum(p.numel() for p in reference.parameters())


# Name map torchvision -> ours: the identity, by design (nets/resnet.py uses torchvision's names).
NAME_MAP = {}


@pytest.mark.parametrize("depth", (18, 50))
def test_torchvision_weights_give_same_logits(depth):
    reference = torchvision_resnet(depth)(num_classes=1000).eval()
    sd = {NAME_MAP.get(k, k): v for k, v in reference.state_dict().items()}
    ours = nets.build(f"resnet{depth}", 1000, stem="imagenet")
    params0, state0 = ours.init(torch.Generator().manual_seed(0))
    params = {k: sd[k] for k in params0}
    state = {k: sd[k] for k in state0}
    assert set(params) | set(state) == set(sd)
    # Non-trivial running statistics, so eval mode really reads them.
    for k in state:
        if k.endswith("running_mean"):
            state[k] = torch.randn_like(state[k]) * 0.1
        elif k.endswith("running_var"):
            state[k] = torch.rand_like(state[k]) + 0.5
    reference.load_state_dict({**params, **state})
    x = torch.randn(2, 3, 64, 64)
    logits, _ = ours.apply(params, state, x, train=False)
    torch.testing.assert_close(logits, reference(x), rtol=1e-4, atol=1e-4)
