"""Explicit randomness (nets/rng.py): `Net.apply(..., key=k)` draws dropout and stochastic depth from k alone,
bit for bit the same for the same key, its own per member under torch.func.vmap, a graph input under
torch.compile; without a key, torch's global generator as before; in eval mode, nothing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.func import grad_and_value, vmap

import nets
from nets import blocks, rng
from nets.core import Net
from nets.vit import ViT, ViTSize

# The real ViT at a test size: 2 blocks of width 16 on 16x16 images cut in 8x8 patches (5 tokens), with dropout
# after the embedding, the attention and both MLP layers, and stochastic depth on the last block's branches.
MICRO = ViTSize(dim=16, depth=2, heads=1)
P_DROP, P_PATH = 0.3, 0.5
K = 3  # members of the vmapped step


def micro_vit(dropout: float = P_DROP, drop_path: float = P_PATH) -> Net:
    return Net("vit_micro", lambda: ViT(MICRO, 10, 8, 16, "cls", dropout, "reference", drop_path), 10)


def key(seed: int, step: int = 0) -> torch.Tensor:
    return nets.step_key(torch.tensor(seed), torch.tensor(step))


def inputs(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3, 16, 16), torch.randint(0, 10, (batch,))


class Layers(nn.Module):
    """Two dropout layers, the first called twice, and a drop path: (4, *x.shape) outputs, one per draw."""

    def __init__(self, p: float):
        super().__init__()
        self.first, self.second, self.path = blocks.Dropout(p), blocks.Dropout(p), blocks.DropPath(p)

    def forward(self, x):
        return torch.stack([self.first(x), self.second(x), self.first(x), self.path(x)])


class Tiny(nn.Module):
    """A classifier small enough to compile in a second or two, with every kind of draw: Linear -> dropout
    (called twice) -> drop path -> Linear."""

    def __init__(self, p: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 10)
        self.drop, self.path = blocks.Dropout(p), blocks.DropPath(p)

    def forward(self, x):  # x: (B, 3, 2, 2)
        return self.fc2(self.path(self.drop(self.drop(self.fc1(x.flatten(1))))))


def draws(p: float, x: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
    net = Net("layers", lambda: Layers(p), 10)
    return net.apply({}, {}, x, True, k)[0]


def unsigned_splitmix64(z: int) -> int:
    """The published finaliser in unsigned 64-bit arithmetic (Python integers), the oracle for rng.mix64."""
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_mix64_is_splitmix64_in_signed_words():
    words = [0, 1, -1, 2**63 - 1, -(2**63), *torch.randint(-(2**63), 2**63 - 1, (200,)).tolist()]
    got = rng.mix64(torch.tensor(words, dtype=torch.int64)).tolist()
    assert got == [rng.as_int64(unsigned_splitmix64(w % 2**64)) for w in words]
    # SplitMix64 seeded 0: its first output, from the reference implementation (Vigna's splitmix64.c).
    assert rng.mix64(torch.tensor(rng.GOLDEN)).item() == rng.as_int64(0xE220A8397B1DCDAF)


def test_step_keys_are_elementwise_and_distinct():
    seeds, steps = torch.arange(64).view(-1, 1), torch.arange(1000).view(1, -1)
    keys = nets.step_key(seeds, steps)  # (64, 1000)
    assert keys.dtype == torch.int64 and keys.unique().numel() == keys.numel()
    assert torch.equal(nets.step_key(torch.arange(K), torch.tensor(5)), keys[:K, 5])


def test_same_key_same_output_and_other_keys_other_masks():
    net, (x, _) = micro_vit(), inputs()
    params, state = net.init(torch.Generator().manual_seed(0))
    out = [net.apply(params, state, x, True, k)[0] for k in (key(0), key(0), key(0, 1), key(1))]
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2]) and not torch.equal(out[0], out[3])


def test_dropout_keeps_one_minus_p_and_scales_the_kept_as_nn_dropout_does():
    p, n = 0.3, 200_000
    x = torch.rand(n) + 0.5  # no zeros of its own
    out = Net("dropout", lambda: blocks.Dropout(p), 10).apply({}, {}, x, True, key(3))[0]
    kept = out != 0
    # Binomial(n, 1 - p): standard deviation sqrt(n p (1 - p)) = 205 elements; 5 of them is far out.
    assert abs(int(kept.sum()) - (1 - p) * n) < 5 * (n * p * (1 - p)) ** 0.5
    assert torch.equal(out[kept], x[kept] * (torch.ones(()) / (1 - p)))
    torch.manual_seed(0)
    reference = F.dropout(x, p)  # torch's own scaling, on the elements both keep
    both = kept & (reference != 0)
    assert torch.equal(out[both], reference[both])


def test_drop_path_drops_whole_samples_at_rate_p():
    p, n = 0.3, 20_000
    x = torch.rand(n, 4, 2) + 0.5
    out = Net("drop_path", lambda: blocks.DropPath(p), 10).apply({}, {}, x, True, key(4))[0]
    dropped = (out == 0).flatten(1).all(1)
    kept = (out == x * (torch.ones(()) / (1 - p))).flatten(1).all(1)
    assert torch.all(dropped ^ kept)  # every sample one or the other, never partly
    assert abs(int(dropped.sum()) - p * n) < 5 * (n * p * (1 - p)) ** 0.5


def test_each_layer_and_each_call_draws_its_own_mask():
    """Two dropout layers of one net, and one layer called twice in one forward, never share a mask; the same key
    gives the same four masks again."""
    x = torch.ones(64, 32)
    out = draws(0.5, x, key(5))
    masks = [m != 0 for m in out[:3]]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert not torch.equal(masks[1], masks[2])
    assert torch.equal(out, draws(0.5, x, key(5)))


def test_eval_mode_ignores_the_key():
    net, (x, _) = micro_vit(), inputs()
    params, state = net.init(torch.Generator().manual_seed(0))
    plain = micro_vit(0.0, 0.0).apply(params, state, x, False)[0]
    assert torch.equal(net.apply(params, state, x, False, key(0))[0], plain)
    assert torch.equal(net.apply(params, state, x, False, key(1))[0], plain)


def test_without_a_key_train_mode_draws_from_the_global_generator():
    """As before keys existed: torch.manual_seed reproduces the draws; and a keyed call, even one that raised,
    leaves the layers drawing from the global generator again."""
    x = torch.ones(64, 32)
    torch.manual_seed(7)
    first = draws(0.5, x, None)
    torch.manual_seed(7)
    assert torch.equal(draws(0.5, x, None), first)
    assert not torch.equal(draws(0.5, x, None), first)

    net = micro_vit()
    params, state = net.init(torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):
        net.apply(params, state, torch.randn(2, 3, 24, 24), True, key(0))  # the wrong image size
    assert all(m.key() is None for m in net.module.modules() if isinstance(m, rng.Keyed))
    xs, _ = inputs()
    torch.manual_seed(8)
    after = net.apply(params, state, xs, True)[0]
    torch.manual_seed(8)
    assert torch.equal(micro_vit().apply(params, state, xs, True)[0], after)


@pytest.mark.parametrize("bad", [torch.tensor(1.0), torch.tensor([1, 2]), torch.tensor(1, dtype=torch.int32), 3])
def test_a_key_that_is_not_an_int64_scalar_is_refused(bad):
    net, (x, _) = micro_vit(), inputs()
    params, state = net.init(torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="key must be an int64 tensor of shape"):
        net.apply(params, state, x, True, bad)


def members(net: Net) -> tuple[dict, dict, dict]:
    """K members' params (distinct inits), each member's own and the (K, ...) stack, and the shared state."""
    trees = [net.init(torch.Generator().manual_seed(i))[0] for i in range(K)]
    stacked = {name: torch.stack([t[name] for t in trees]) for name in trees[0]}
    return trees, stacked, net.init(torch.Generator().manual_seed(0))[1]


def loss_and_grad(net: Net, state: dict, x: torch.Tensor, y: torch.Tensor):
    """The trainer's shape: grad_and_value of the loss through apply, the logits as aux."""

    def loss(params, k):
        logits, _ = net.apply(params, state, x, True, k)
        return F.cross_entropy(logits, y), logits

    return grad_and_value(loss, has_aux=True)


def test_vmap_over_keys_and_params_equals_each_member_alone():
    """Forward bit for bit; gradients to float32 rounding (the batched LayerNorm and loss reductions sum in
    another order); and each member's masks are its own key's: the gradients of another key are far off."""
    net, (x, y) = micro_vit(), inputs()
    trees, stacked, state = members(net)
    keys = nets.step_key(torch.arange(K), torch.tensor(7))
    step = loss_and_grad(net, state, x, y)
    grads, (loss, logits) = vmap(step)(stacked, keys)
    for i in range(K):
        g, (l, out) = step(trees[i], keys[i])
        assert torch.equal(logits[i], out)
        torch.testing.assert_close(loss[i], l)
        torch.testing.assert_close({n: t[i] for n, t in grads.items()}, g)
    other, _ = step(trees[0], keys[1])
    assert not torch.allclose(other["head.weight"], grads["head.weight"][0], atol=1e-4)


def test_compiled_step_equals_eager_and_a_new_key_does_not_recompile():
    """torch.compile around vmap(grad_and_value(loss)), the trainer's step, on a tiny net (the ViT's compile
    takes 6 s of a 2-core CI): the key is a graph input, the holder is emptied after the compiled call."""
    net, x, y = Net("tiny", lambda: Tiny(0.5), 10), torch.randn(8, 3, 2, 2), torch.randint(0, 10, (8,))
    _, stacked, state = members(net)
    step = vmap(loss_and_grad(net, state, x, y))
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    for s in (0, 1):
        keys = nets.step_key(torch.arange(K), torch.tensor(s))
        assert torch.equal(compiled(stacked, keys)[1][1], step(stacked, keys)[1][1])
    assert counter.frame_count == 1
    assert all(m.key() is None for m in net.module.modules() if isinstance(m, rng.Keyed))


def test_step_key_compiles_with_seed_and_step_as_inputs():
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(nets.step_key, backend=counter, fullgraph=True)
    for s in (3, 4):
        seeds, step = torch.arange(K) + s, torch.tensor(s)
        assert torch.equal(compiled(seeds, step), nets.step_key(seeds, step))
    assert counter.frame_count == 1


@pytest.mark.parametrize("name", nets.names())
def test_every_random_layer_draws_from_the_key(name):
    """No family keeps a random layer of torch's: every dropout is ours, bound to the net's key, with its own
    salt (checked on the skeleton; the ImageNet configs have the most dropout layers)."""
    config = {"config": "imagenet"} if "config" in nets.declarations(name) else {}
    rates = {option: 0.1 for option in ("dropout", "drop_path") if option in nets.declarations(name)}
    module = nets.build(name, 10, **config, **rates).module
    assert not [m for m in module.modules() if isinstance(m, nn.Dropout) and not isinstance(m, blocks.Dropout)]
    keyed = [m for m in module.modules() if isinstance(m, rng.Keyed)]
    assert all(m.holder is not None for m in keyed)
    assert len({m.salt for m in keyed}) == len(keyed)


@pytest.mark.gpu
def test_inductor_on_the_gpu_draws_the_eager_masks():
    """The trainer's GPU path: Inductor (Triton) compiling the keyed draws, whose int64 arithmetic wraps and
    whose constants exceed 32 bits, must give the eager masks bit for bit, at the keep rate 1 - p (a miscompile
    would keep or drop everything silently), and a new key must not recompile."""
    p, n, cuda = 0.3, 200_000, torch.device("cuda")
    net = Net("dropout", lambda: blocks.Dropout(p), 10)
    x = torch.rand(n, device=cuda) + 0.5
    compiled = torch.compile(lambda x, k: net.apply({}, {}, x, True, k)[0], fullgraph=True)
    for s in (3, 4):
        k = key(s).to(cuda)
        out = compiled(x, k)
        assert torch.equal(out, net.apply({}, {}, x, True, k)[0])
        kept = int((out != 0).sum())
        assert abs(kept - (1 - p) * n) < 5 * (n * p * (1 - p)) ** 0.5
    assert torch.equal(compiled(x, key(5).to(cuda)) != 0, net.apply({}, {}, x, True, key(5).to(cuda))[0] != 0)
