"""MobileNetV1, Xception and ViT against their papers and torchvision, and their `kernels` option.

Sizes: the ImageNet configurations have the papers' parameter counts (MobileNetV1's Table 6 at every width,
Xception's 22.9M) and ViT-B/16 has torchvision's, whose weights, loaded through an explicit name map, give
torchvision's logits. Layouts: the CIFAR configurations downsample where their docstrings say. Kernels: every
depthwise convolution and every attention goes through the single doors in nets.blocks, with the net's
`kernels` choice, and on the CPU "auto" and "reference" compute the same thing.
"""

import pytest
import torch
import torchvision

import nets
from nets import blocks

OUR_NETS = ("mobilenetv1", "xception", "vit", "vit_tiny", "vit_small", "vit_base")

# Exact counts of the ImageNet configurations (1000 classes), with the papers' rounded figures.
MOBILENET_IMAGENET_PARAMS = 4_231_976  # paper: 4.2M (Table 6); Keras's trainable parameters
XCEPTION_IMAGENET_PARAMS = 22_855_952  # paper: 22.9M; Keras's trainable parameters


def within(count: int, paper: float, tolerance: float = 0.01) -> bool:
    return abs(count - paper) <= tolerance * paper


def test_mobilenetv1_imagenet_param_count():
    count = nets.build("mobilenetv1", 1000, imagenet=True).param_count()
    assert count == MOBILENET_IMAGENET_PARAMS
    assert within(count, 4.2e6)


@pytest.mark.parametrize("alpha,millions", [(0.75, 2.6), (0.5, 1.3), (0.25, 0.5)])
def test_mobilenetv1_width_multiplier_matches_table_6(alpha, millions):
    count = nets.build("mobilenetv1", 1000, alpha=alpha, imagenet=True).param_count()
    assert round(count / 1e6, 1) == millions


def test_mobilenetv1_depthwise_init_uses_the_true_fan():
    """He init with fan_in = 3 x 3 for the depthwise filters (std sqrt(2/9)), at any width; see the docstring."""
    params, _ = nets.build("mobilenetv1").init(torch.Generator().manual_seed(0))
    for name in ("blocks.0.depthwise.weight", "blocks.12.depthwise.weight"):  # 32 and 1024 channels
        assert abs(params[name].std().item() / (2 / 9) ** 0.5 - 1) < 0.1


def test_xception_imagenet_param_count():
    count = nets.build("xception", 1000, imagenet=True).param_count()
    assert count == XCEPTION_IMAGENET_PARAMS
    assert within(count, 22.9e6)


def last_feature_map(net: nets.Net, size: int) -> tuple[int, ...]:
    """Shape of what the global pooling receives, for one size x size image (on the meta device)."""
    shapes = []
    net.module.pool.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    net.module.eval()(torch.empty(1, 3, size, size, device="meta"))
    return shapes[0]


@pytest.mark.parametrize(
    "name,imagenet,size,expected",
    [
        ("mobilenetv1", False, 32, (1, 1024, 4, 4)),  # stride-1 stem and block 12: 32 -> 16 -> 8 -> 4
        ("mobilenetv1", True, 224, (1, 1024, 7, 7)),  # the paper's 32x reduction
        ("xception", False, 32, (1, 2048, 4, 4)),  # 8x: 32 -> 32 -> 16 -> 8 (middle flow) -> 4
        ("xception", True, 299, (1, 2048, 10, 10)),  # the paper's 299 -> 10
    ],
)
def test_downsampling(name, imagenet, size, expected):
    assert last_feature_map(nets.build(name, 10, imagenet=imagenet), size) == expected


# ---------------------------------------------------------------------------------------------------------
# ViT-B/16 against torchvision.


def vit_b16() -> nets.Net:
    return nets.build("vit_base", 1000, patch=16, image_size=224)  # pool "cls": the default


def torchvision_names(depth: int) -> dict[str, str]:
    """Our state_dict key -> torchvision's VisionTransformer key."""
    names = {
        "patch_embed.weight": "conv_proj.weight",  # (768, 3 * 16 * 16) here, (768, 3, 16, 16) there
        "patch_embed.bias": "conv_proj.bias",
        "cls_token": "class_token",
        "pos_embed": "encoder.pos_embedding",
        "norm.weight": "encoder.ln.weight",
        "norm.bias": "encoder.ln.bias",
        "head.weight": "heads.head.weight",
        "head.bias": "heads.head.bias",
    }
    per_block = {
        "norm1": "ln_1",
        "attn.qkv.weight": "self_attention.in_proj_weight",
        "attn.qkv.bias": "self_attention.in_proj_bias",
        "attn.proj": "self_attention.out_proj",
        "norm2": "ln_2",
        "mlp.fc1": "mlp.0",
        "mlp.fc2": "mlp.3",
    }
    for i in range(depth):
        for ours, theirs in per_block.items():
            suffixes = ("",) if ours.endswith(("weight", "bias")) else (".weight", ".bias")
            for s in suffixes:
                names[f"blocks.{i}.{ours}{s}"] = f"encoder.layers.encoder_layer_{i}.{theirs}{s}"
    return names


def test_vit_b16_param_count_equals_torchvision():
    with torch.device("meta"):
        reference = torchvision.models.vit_b_16()
    assert vit_b16().param_count() == sum(p.numel() for p in reference.parameters()) == 86_567_656


def test_vit_b16_torchvision_weights_give_same_logits():
    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16().eval()
    # torchvision starts the head at zero and the biases and LayerNorms at constants; perturb every tensor
    # so that each entry of the name map matters (a swapped ln_1 / ln_2 would show).
    with torch.no_grad():
        for t in reference.state_dict().values():
            t.add_(torch.randn_like(t) * 0.02)
    theirs = reference.state_dict()
    ours = vit_b16()
    names = torchvision_names(depth=12)
    assert set(names) == set(ours.module.state_dict()) and set(names.values()) == set(theirs)
    params = {k: theirs[v] for k, v in names.items()}
    params["patch_embed.weight"] = theirs["conv_proj.weight"].flatten(1)  # patches flatten as (c, row, col)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits, _ = ours.apply(params, {}, x, train=False)
        expected = reference(x)
    assert logits.abs().max() > 0.1  # the comparison is not between near-zero numbers
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# The `kernels` option and the doors in nets.blocks.


@pytest.mark.parametrize("name", OUR_NETS)
def test_kernels_option_is_validated(name):
    assert nets.options(name)["kernels"] == "auto"
    nets.build(name, kernels="reference")
    with pytest.raises(nets.NetError, match="kernels must be one of auto, reference"):
        nets.build(name, kernels="triton")


def test_other_options_are_validated():
    for name, opts, message in [
        ("mobilenetv1", {"alpha": 0}, "alpha"),
        ("mobilenetv1", {"alpha": "wide"}, "alpha"),
        ("mobilenetv1", {"imagenet": "yes"}, "imagenet"),
        ("xception", {"imagenet": 1}, "imagenet"),
        ("vit", {"pool": "max"}, "pool"),
        ("vit", {"patch": 5}, "multiple of patch"),
        ("vit", {"image_size": 0}, "image_size"),
        ("vit", {"dropout": 1.0}, "dropout"),
    ]:
        with pytest.raises(nets.NetError, match=message):
            nets.build(name, **opts)


# Small configurations where the family allows: the point is the code path, not the size.
KERNEL_CASES = [
    ("mobilenetv1", {"alpha": 0.25}),
    ("xception", {}),
    ("vit_tiny", {}),
    ("vit_tiny", {"pool": "mean"}),
]


@pytest.mark.parametrize("name,opts", KERNEL_CASES)
def test_reference_equals_auto_on_cpu(name, opts):
    auto = nets.build(name, 10, kernels="auto", **opts)
    reference = nets.build(name, 10, kernels="reference", **opts)
    params, state = auto.init(torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32)
    for train in (False, True):
        got, got_state = auto.apply(params, state, x, train)
        expected, expected_state = reference.apply(params, state, x, train)
        assert torch.equal(got, expected)
        assert all(torch.equal(got_state[k], expected_state[k]) for k in state)


def count_calls(monkeypatch, door: str) -> list:
    """Replace nets.blocks.<door> by a wrapper that records (input shape, impl) and calls the original."""
    calls, original = [], getattr(blocks, door)

    def counted(*args, **kwargs):
        impl = kwargs.get("impl", args[-1])
        calls.append((tuple(args[0].shape), impl, args[0]._base is not None))  # (shape, impl, is a view)
        return original(*args, **kwargs)

    monkeypatch.setattr(blocks, door, counted)
    return calls


@pytest.mark.parametrize("name,opts", KERNEL_CASES[:2])
@pytest.mark.parametrize("kernels", blocks.KERNEL_CHOICES)
def test_depthwise_layers_go_through_blocks(monkeypatch, name, opts, kernels):
    calls = count_calls(monkeypatch, "depthwise")
    net = nets.build(name, 10, kernels=kernels, **opts)
    depthwise_layers = [m for m in net.module.modules() if isinstance(m, blocks.DepthwiseConv2d)]
    plain_grouped = [m for m in net.module.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise_layers) == len(plain_grouped) == {"mobilenetv1": 13, "xception": 34}[name]
    params, state = net.init(torch.Generator().manual_seed(0))
    net.apply(params, state, torch.randn(2, 3, 32, 32), train=True)
    assert len(calls) == len(depthwise_layers)
    assert all(impl == kernels for _, impl, _ in calls)


@pytest.mark.parametrize("kernels", blocks.KERNEL_CHOICES)
def test_attention_goes_through_blocks(monkeypatch, kernels):
    calls = count_calls(monkeypatch, "attention")
    net = nets.build("vit_tiny", 10, kernels=kernels)
    params, state = net.init(torch.Generator().manual_seed(0))
    net.apply(params, state, torch.randn(2, 3, 32, 32), train=True)
    # One call per block, on the QKV projection's output viewed (not copied) as (B, S, 3, heads, D): 64
    # patches + the class token.
    assert calls == [((2, 65, 3, 3, 64), kernels, True)] * 12
