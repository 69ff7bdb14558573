"""The Triton kernels under torch.func.vmap over K members (issue 30: K nets trained in one step, stacked
parameters, a batch per member): the depthwise convolution folds the members into its channels, the attention into
its batch, and each runs its kernels once. Checked against running the op member by member and against the float64
reference, for the forward and for vmap(grad(loss)) (the trainer's composition), with arguments shared by every
member mixed with per-member ones; then one vmapped MobileNetV1 step.

Without CUDA the kernels run in Triton's interpreter (test_depthwise sets TRITON_INTERPRET before triton is
imported); the shapes are tiny for it.
"""

import pytest
import torch
import torch.nn.functional as F
from test_attention import TOLERANCE as ATTENTION_TOL
from test_depthwise import (  # noqa: F401 (one_cpu_thread: an autouse fixture, active where imported)
    DEVICE,
    LAYOUTS,
    TOL,
    needs_triton,
    one_cpu_thread,
    rel_err,
)
from torch.func import grad, grad_and_value, vjp, vmap

import nets
import nets.blocks
from kernels.attention import attention
from kernels.depthwise import depthwise_conv2d, launchers, ops

ARGNUMS = (0, 1, 2, 3)  # x, weight, scale, shift: every differentiable argument of the depthwise convolution


def stacked_inputs(K, N, C, H, k, dtype, layout):
    """K members' x (K, N, C, H, H), each in the layout, weight (K, C, 1, k, k), scale and shift (K, C)."""
    x = torch.stack([torch.randn(N, C, H, H, device=DEVICE, dtype=dtype).to(memory_format=LAYOUTS[layout])
                     for _ in range(K)])  # fmt: skip
    w = torch.randn(K, C, 1, k, k, device=DEVICE) / k
    return x, w, 1 + 0.5 * torch.randn(K, C, device=DEVICE), 0.5 * torch.randn(K, C, device=DEVICE)


def dw_op(impl, stride, epilogue):
    """depthwise_conv2d(x, w, stride, ...) with the epilogue's steps; scale and shift ignored where it has none."""
    return lambda x, w, sc, sh: depthwise_conv2d(x, w, stride, sc if "scale" in epilogue else None,
                                                 sh if "shift" in epilogue else None, "relu" in epilogue, impl=impl)


def dw_loss(impl, stride, epilogue):
    """sum(y * grad_y): its gradients are the op's vector-Jacobian products with grad_y."""
    op = dw_op(impl, stride, epilogue)
    return lambda x, w, sc, sh, grad_y: (op(x, w, sc, sh).to(grad_y.dtype) * grad_y).sum()


def forward_and_grads(op, *args):
    """(op(*inputs), the gradients of every input) for the cotangent args[-1], from one forward and one backward."""
    y, pull = vjp(op, *args[:-1])
    return y, pull(args[-1])


def watch(monkeypatch, name, calls):
    """Record (name, the leading dim of its second argument) at every call of launchers.<name>: the weight's
    K*C or x's N, which tells a folded launch from one per member."""
    real = getattr(launchers, name)

    def watched(*args, **kwargs):
        calls.append((name, args[1].shape[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(launchers, name, watched)


def depthwise_by_the_kernels(monkeypatch) -> list:
    """The nets' depthwise layers sent to the Triton kernels (their kernels="auto" takes the reference for CPU
    tensors); returns the list that records each forward launch (watch)."""
    forward_launches = []
    watch(monkeypatch, "launch_fwd", forward_launches)

    def depthwise(x, weight, stride, impl="auto"):  # nets.blocks.depthwise with "auto" sent to the kernels
        return depthwise_conv2d(x, weight, stride=stride, impl="triton" if impl == "auto" else impl)

    monkeypatch.setattr(nets.blocks, "depthwise", depthwise)
    return forward_launches


def float64_member_grads(loss, args, in_dims):
    """The reference's gradients member by member, in float64: (K, ...) per argument, shared ones included."""
    K = next(a.shape[d] for a, d in zip(args, in_dims, strict=True) if d is not None)
    members = [[a.double() if d is None else a.select(d, k).double() for a, d in zip(args, in_dims, strict=True)]
               for k in range(K)]  # fmt: skip
    per_member = [grad(loss, argnums=ARGNUMS)(*m) for m in members]
    return [torch.stack(g) for g in zip(*per_member, strict=True)]


# (K, N, C, H, stride, epilogue, dtype, layout): K = 3 once; channels off the block sizes; stride 2 with the full
# epilogue (the weight pass stores grad_z for the grad-input pass); bfloat16 channels_last with a shift alone at
# stride 1, where backward_variant takes the one-pass backward (dwconv_bwd_fused).
CASES = [
    (3, 2, 5, 6, 1, "", torch.float32, "nchw"),
    (2, 2, 17, 5, 2, "scale,shift,relu", torch.float32, "channels_last"),
    (2, 2, 12, 6, 1, "shift", torch.bfloat16, "channels_last"),
]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_depthwise_vmap_matches_members(case):
    """vmap over (y, vjp(grad_y)): the forward and every gradient, in one forward and one backward per member
    set, against the float64 reference run member by member."""
    K, N, C, H, stride, epilogue, dtype, layout = case
    x, w, sc, sh = stacked_inputs(K, N, C, H, 3, dtype, layout)
    OH = (H - 1) // stride + 1
    grad_y = torch.randn(K, N, C, OH, OH, device=DEVICE, dtype=dtype)

    y, grads = vmap(lambda *a: forward_and_grads(dw_op("triton", stride, epilogue), *a))(x, w, sc, sh, grad_y)
    reference = dw_op("reference", stride, epilogue)
    per_member = [forward_and_grads(reference, *(t[i].double() for t in (x, w, sc, sh, grad_y))) for i in range(K)]
    assert y.shape == (K, N, C, OH, OH) and y.dtype == dtype
    assert rel_err(y, torch.stack([m[0] for m in per_member])) < TOL[dtype]
    for j, (name, t) in enumerate(zip(("x", "weight", "scale", "shift"), (x, w, sc, sh), strict=True)):
        if name in ("scale", "shift") and name not in epilogue:
            continue
        g, g_ref = grads[j], torch.stack([m[1][j] for m in per_member])
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert rel_err(g, g_ref) < TOL[dtype], f"grad {name}: {rel_err(g, g_ref):.2e}"


# (in_dims of (x, weight, scale, shift, grad_y), layout): None = shared by every member, 1 = the member dim second.
SHARED = [((0, None, None, None, 0), "nchw"), ((None, 0, 0, 0, 0), "channels_last"), ((1, 0, None, 0, None), "nchw")]


@needs_triton
@pytest.mark.parametrize("in_dims, layout", SHARED, ids=lambda c: "-".join(map(str, c)) if isinstance(c, tuple) else c)
def test_depthwise_vmap_shared_arguments(in_dims, layout):
    """Arguments without the member dim are expanded to every member; a member dim not first is moved. Each
    shared argument still gets its gradient per member, as vmap(grad(f)) defines it."""
    K, N, C, H, stride, epilogue = 2, 2, 6, 5, 2, "scale,shift,relu"
    x, w, sc, sh = stacked_inputs(K, N, C, H, 3, torch.float32, layout)
    grad_y = torch.randn(K, N, C, 3, 3, device=DEVICE)
    args = [a if d == 0 else a[0] if d is None else a.movedim(0, d)
            for a, d in zip((x, w, sc, sh, grad_y), in_dims, strict=True)]  # fmt: skip
    grads = vmap(grad(dw_loss("triton", stride, epilogue), argnums=ARGNUMS), in_dims=in_dims)(*args)
    ref_grads = float64_member_grads(dw_loss("reference", stride, epilogue), args, in_dims)
    for name, g, g_ref in zip(("x", "weight", "scale", "shift"), grads, ref_grads, strict=True):
        assert g.shape == g_ref.shape and rel_err(g, g_ref) < TOL[torch.float32], name


@needs_triton
def test_depthwise_grad_of_vmap():
    """The other order, grad(vmap(f)): vmap's generated rule batches the backward as well."""
    x, w, sc, sh = stacked_inputs(2, 2, 6, 5, 3, torch.float32, "nchw")
    grad_y = torch.randn(2, 2, 6, 5, 5, device=DEVICE)
    loss = dw_loss("triton", 1, "scale,shift,relu")
    grads = grad(lambda *a: vmap(loss)(*a, grad_y).sum(), argnums=ARGNUMS)(x, w, sc, sh)
    ref_grads = float64_member_grads(dw_loss("reference", 1, "scale,shift,relu"), (x, w, sc, sh, grad_y), (0,) * 5)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        assert rel_err(g, g_ref) < TOL[torch.float32]


@needs_triton
def test_depthwise_vmap_launches_once(monkeypatch):
    """The members fold into one launch of each pass over K*C channels, not one per member (vmap's slow
    per-member fallback, which also warns)."""
    calls = []
    for name in ("launch_fwd", "launch_bwd_weight", "launch_bwd_input"):
        watch(monkeypatch, name, calls)
    x, w, sc, sh = stacked_inputs(3, 2, 5, 5, 3, torch.float32, "nchw")
    grad_y = torch.randn(3, 2, 5, 5, 5, device=DEVICE)
    vmap(grad(dw_loss("triton", 1, "scale,relu"), argnums=ARGNUMS))(x, w, sc, sh, grad_y)
    # K*C = 15 channels in one launch each; the weight pass's second argument is x, N = 2
    assert sorted(calls) == [("launch_bwd_input", 15), ("launch_bwd_weight", 2), ("launch_fwd", 15)]


@needs_triton
@pytest.mark.parametrize("schedule", ["tiles", "window"])
def test_depthwise_bwd_fused_vmap_rule(schedule):
    """The one-pass backward op under vmap (both schedules; autograd picks "window" only from 16x16 maps) equals
    the op run member by member; the shift is shared, its gradient still per member."""
    K, N, C, H = 2, 2, 12, 5
    x, w, _, sh = stacked_inputs(K, N, C, H, 3, torch.float32, "channels_last")
    grad_y = torch.randn(K, N, C, H, H, device=DEVICE)
    batched = vmap(ops.dwconv_bwd_fused, in_dims=(0, 0, 0, None, None))(grad_y, x, w, sh[0], schedule)
    members = [ops.dwconv_bwd_fused(grad_y[i], x[i], w[i], sh[0], schedule) for i in range(K)]
    for got, want in zip(batched, zip(*members, strict=True), strict=True):
        assert rel_err(got, torch.stack(want)) < TOL[torch.float32]


def attention_op(impl):
    return lambda qkv: attention(qkv, impl=impl)


# (in_dims of (qkv, grad_out), dtype): both batched, qkv shared by every member (its gradient is still per member),
# qkv with the member dim second.
ATTENTION_CASES = [((0, 0), torch.bfloat16), ((None, 0), torch.float16), ((1, 0), torch.float16)]


@needs_triton
@pytest.mark.parametrize("in_dims, dtype", ATTENTION_CASES, ids=lambda c: str(c))
def test_attention_vmap_matches_members(in_dims, dtype):
    """K members fold into the batch: vmap over (out, vjp(grad_out)) against the float64 reference run member by
    member."""
    K, B, S, H, D = 2, 1, 17, 2, 16
    tol = ATTENTION_TOL[dtype]
    qkv = torch.randn(K, B, S, 3, H, D, device=DEVICE, dtype=dtype)
    grad_out = torch.randn(K, B, S, H * D, device=DEVICE, dtype=dtype)
    qkv_arg = qkv if in_dims[0] == 0 else qkv[0] if in_dims[0] is None else qkv.movedim(0, 1)
    members = [qkv[0] if in_dims[0] is None else qkv[i] for i in range(K)]
    out, (grads,) = vmap(lambda *a: forward_and_grads(attention_op("triton"), *a), in_dims=in_dims)(
        qkv_arg, grad_out)
    per_member = [forward_and_grads(attention_op("reference"), q.double(), g.double())
                  for q, g in zip(members, grad_out, strict=True)]  # fmt: skip
    assert out.shape == (K, B, S, H * D) and out.dtype == dtype
    assert grads.shape == (K, B, S, 3, H, D) and grads.dtype == dtype
    assert rel_err(out, torch.stack([m[0] for m in per_member])) < tol["out"]
    assert rel_err(grads, torch.stack([m[1][0] for m in per_member])) < tol["grad"]


@needs_triton
def test_mobilenet_members_step(monkeypatch):
    """vmap(grad_and_value(loss)), the members step's composition, over two MobileNetV1 members (alpha 1/32: 1 to
    32 channels; 8x8 images: a few seconds in the interpreter) with the Triton depthwise kernels matches the
    float64 reference member by member, and each depthwise layer launches once for both members.

    The nets' kernels="auto" takes the reference for CPU tensors, so nets.blocks.depthwise is sent to the kernels
    here. Eval mode: train-mode BatchNorm over two 1x1 maps makes the float32 gradients ill-conditioned (the
    float32 reference itself differs from float64 by ~1e-2 in some BatchNorm gradients), which would test the
    conditioning, not the kernels."""
    forward_launches = depthwise_by_the_kernels(monkeypatch)
    K, B = 2, 2
    triton_net = nets.build("mobilenetv1", 10, alpha=1 / 32)
    reference_net = nets.build("mobilenetv1", 10, alpha=1 / 32, kernels="reference")
    trees = [triton_net.init(torch.Generator().manual_seed(k), DEVICE) for k in range(K)]
    params, state = ({n: torch.stack([t[i][n] for t in trees]) for n in trees[0][i]} for i in (0, 1))
    x, y = torch.randn(K, B, 3, 8, 8, device=DEVICE), torch.randint(0, 10, (K, B), device=DEVICE)

    def loss_fn(net, params, state, x, y):
        logits, _ = net.apply(params, state, x, train=False)
        return F.cross_entropy(logits.double(), y)

    step = vmap(grad_and_value(lambda *a: loss_fn(triton_net, *a)), randomness="different")
    grads, loss = step(params, state, x, y)
    assert len(forward_launches) == 13  # one per depthwise layer, over both members' channels
    for k in range(K):
        p64, s64 = ({n: t[k].double() if t.is_floating_point() else t[k] for n, t in tree.items()}
                    for tree in (params, state))  # fmt: skip
        ref_grads, ref_loss = grad_and_value(lambda *a: loss_fn(reference_net, *a))(p64, s64, x[k].double(), y[k])
        assert abs(loss[k].item() - ref_loss.item()) < TOL[torch.float32]
        # All gradients together to float32's tolerance, and the median tensor within 1e-3 (measured over 110
        # member-draws: at most 7.5e-8 and 6.7e-6; another member's gradients are off by order 1). Not every
        # tensor: with one- and two-channel layers a rounding can flip a ReLU, which moves the few tensors behind
        # it far more (one BatchNorm bias by 6.4e-4 in one draw).
        assert rel_err(torch.cat([grads[n][k].flatten() for n in ref_grads]),
                       torch.cat([g.flatten() for g in ref_grads.values()])) < TOL[torch.float32]
        errors = torch.tensor([rel_err(grads[n][k], g) for n, g in ref_grads.items()])
        assert errors.median() < 1e-3, errors


@needs_triton
def test_folded_mobilenet_members_step_runs_the_kernels_in_the_autograd_form(monkeypatch):
    """The trainer's members step for a net that folds (nets/fold.py) with its Triton kernels, as on a GPU where
    torch.func.grad cannot be compiled around their custom backwards: gradients="autograd", one depthwise
    launch per layer over both members' channels, and each member's step (the change of its parameters and
    BatchNorm statistics, which the starting point would dwarf) its single step's in float64 with PyTorch's
    operators, and not the other member's. A float32 step is chaotic against float64 here: a rounding can flip
    a ReLU, after which the tensors upstream of it move by up to a few percent. Measured over 32 member-draws
    (scratch script, this test's body with fresh seeds): the median tensor's relative error 7e-6 to 1.2e-5, in
    one draw 4.0e-4 (a flip; 56% of tensors off by more than 1e-4), the whole update concatenated at most
    6.5e-3; with the other member's single step as reference, the median 1.24 to 1.5 and the whole 12.9 or
    more. So: the median under 1e-2, the whole under 0.1. MobileNetV1 at alpha 1/8 (4 to 128 channels; at 1/32
    its one- and two-channel layers flip far more often), 16x16 images, batch 8."""
    from train.config import Config
    from train.members import init
    from train.optim import init_state
    from train.step import TrainState, as_leaves, make_train_step, member, precision_for

    forward_launches = depthwise_by_the_kernels(monkeypatch)
    K, B = 2, 8
    cfg = Config(model="mobilenetv1", members=K, batch_size=B, lr=0.1, momentum=0.9, weight_decay=5e-4, seed=3)
    precision = precision_for(torch.device(DEVICE), "fp32")
    triton_net = nets.build("mobilenetv1", 10, alpha=1 / 8)
    params, state = init(triton_net, cfg, DEVICE)
    x, y = torch.randn(K, B, 3, 16, 16, device=DEVICE), torch.randint(0, 10, (K, B), device=DEVICE)
    lr = torch.tensor(cfg.lr, device=DEVICE)
    ts = as_leaves(TrainState(params, state, init_state(cfg.optimizer, params, cfg.members)))
    folded, folded_metrics = make_train_step(triton_net, cfg, precision, "autograd")(ts, (x, y), lr)
    assert len(forward_launches) == 13  # one per depthwise layer, over both members' channels
    reference_net = nets.build("mobilenetv1", 10, alpha=1 / 8, kernels="reference")
    single64 = make_train_step(reference_net, Config(**{**vars(cfg), "members": 1}), precision, "func")
    for k in range(K):
        before = TrainState(*({n: t.detach().double() if t.is_floating_point() else t.clone()
                               for n, t in member(tree, k).items()} for tree in ts[:3]))  # fmt: skip
        exact, exact_metrics = single64(before, (x[k].double(), y[k]), lr.double())
        assert abs(folded_metrics["loss"][k].item() - exact_metrics["loss"].item()) < 1e-5
        got, want = [], []
        for tree, exact_tree, before_tree in zip(folded[:2], exact[:2], before[:2]):
            for name, t in exact_tree.items():
                if t.is_floating_point():
                    got.append((tree[name][k].detach().double() - before_tree[name]).flatten())
                    want.append((t - before_tree[name]).flatten())
                else:
                    assert torch.equal(tree[name][k], t), name
        # Bounds between float32's chaos (a flipped ReLU) and another member's step (the docstring's figures).
        errors = torch.tensor([rel_err(g, w) for g, w in zip(got, want)])
        assert errors.median() < 1e-2, errors
        assert rel_err(torch.cat(got), torch.cat(want)) < 0.1
