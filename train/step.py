"""The pure training and evaluation steps.

    step(train_state, (x, y), lr, key=None) -> (train_state, metrics)

`key` (int64; one per member in a members run) is the step's randomness: dropout and stochastic depth draw
from it (nets.step_key, Net.apply), so the step is a pure function of its inputs; None draws them from torch's
global generator. `train_state` bundles params, BatchNorm state, the optimizer's state (SGD's momentum buffers
or AdamW's moments) and, with `ema` > 0, the exponential moving average of the weights and statistics; nothing
is changed in place, so the step can be compiled once with torch.compile and re-run, and a warm-up call changes
nothing.
(`compile_in_place` gives up that purity for CUDA graphs without copies: its step writes the new state into the
old one's tensors, the EMA's included.)

The evaluation step scores a batch in eval mode, optionally averaged over test-time augmentation's views (TTA:
none, flip or translate), one rule for the trainer and the tools.

Gradients come from one of two places:
  "func":     torch.func.grad_and_value over the net's pure forward (the default);
  "autograd": torch.autograd.grad with the params as leaf tensors that require grad. Needed when a Triton
              kernel with a custom backward is inside the compiled step: in torch 2.11, torch.compile over
              torch.func.grad fails on such kernels, while this form, traced with dynamo's
              trace_autograd_ops, compiles to one graph (docs/kernels.md, "Binding a Triton kernel").
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map_only

from nets.fold import Folded, fold_images, foldable
from train.optim import Tree, make_update

AUX_LOSS_WEIGHT = 0.3  # weight of each auxiliary classifier's loss (GoogLeNet paper, sec. 5)


class TrainState(NamedTuple):
    params: Tree
    state: Tree  # BatchNorm running statistics
    momentum: Tree  # the optimizer's state: SGD's momentum buffers, or AdamW's moments and step (train/optim.py)
    # The weights' exponential moving average (init_ema, ema_update): params and BatchNorm statistics under their
    # own (state_dict) names; empty, and passed through untouched, when the run keeps none (ema=0: the default,
    # one shared empty dict that nothing writes into).
    ema: Tree = {}


@dataclass(frozen=True)
class Precision:
    """How the trainer runs a net on a device: autocast dtype (None = fp32) and memory format."""

    autocast: torch.dtype | None
    channels_last: bool
    device_type: str

    def context(self):
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def precision_for(device: torch.device, precision: str) -> Precision:
    """bf16 autocast and channels_last on CUDA (tensor cores want NHWC); fp32 NCHW on the CPU."""
    on_cuda = device.type == "cuda"
    use_bf16 = precision == "bf16" or (precision == "auto" and on_cuda)
    return Precision(torch.bfloat16 if use_bf16 else None, on_cuda, device.type)


def choose_cudnn_algorithms(device: torch.device, benchmark: bool) -> None:
    """On CUDA, whether cuDNN times its algorithms for each new convolution shape at its first call and keeps the
    fastest (torch.backends.cudnn.benchmark; the config's cudnn_benchmark, on by default), or takes its
    heuristics' choice. Read at every convolution call, compiled graphs' too. It matters most for the members'
    grouped convolutions (nets/fold.py), whose heuristic choice can be far from the fastest."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = benchmark


def choose_kernel_tuning(autotune: bool) -> None:
    """Whether Inductor times several configurations (block sizes, warps) of each kernel it generates at the
    kernel's first run and keeps the fastest (autotune=True, Inductor's default), or compiles only the one its
    heuristics rank first (False, the config's inductor_autotune default). Every timed configuration is also
    built: cold, ResNet-18's speedrun step compiled in 60.0 s instead of 76.7 s (171 configurations of 78
    kernels timed) and trained as fast (73.7k against 73.0k images/s; `python -m bench step nets=resnet18`
    72.1k against 71.8k), H100 (docs/training.md, "Speed run"). Process-wide, as Inductor's config is, like
    cudnn.benchmark; read when a graph is compiled (and part of the compile cache's key). Reductions have no
    other switch than the one torch's tests use (test_configs.force_filter_reduction_configs, which
    Inductor's deterministic mode also implies); a torch without it keeps timing theirs."""
    import torch._inductor.config as inductor

    inductor.triton.autotune_pointwise = autotune
    if hasattr(inductor.test_configs, "force_filter_reduction_configs"):
        inductor.test_configs.force_filter_reduction_configs = not autotune


def stacked_channels_last(t: torch.Tensor) -> torch.Tensor:
    """A members run's stack (K, N, C, H, W) laid out so that each member's (N, C, H, W) is channels_last. Done
    outside vmap: inside it, a batched tensor takes only the contiguous and preserve memory formats."""
    return t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def to_memory_format(params: Tree, precision: Precision) -> Tree:
    """Conv weights in channels_last when activations are, so convolutions need no layout conversion; a members
    run's stacked conv weights (5-d) member by member."""
    if not precision.channels_last:
        return params
    layouts = {4: lambda v: v.contiguous(memory_format=torch.channels_last), 5: stacked_channels_last}
    return {k: layouts.get(v.ndim, lambda v: v)(v) for k, v in params.items()}


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their label among the k largest logits (k capped at the class count): logits
    (..., B, classes) and labels (..., B) give one count per leading index (a members run's (K, B, classes): K)."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (..., B, k)
    return (top == y[..., None]).any(dim=-1).sum(dim=-1)


def init_ema(params: Tree, state: Tree, decay: float) -> Tree:
    """The EMA tree before the first step: copies of the initial params and BatchNorm statistics (one flat tree,
    the module's state_dict), or empty when decay is 0 (no EMA). Copies, so the step's in-place form
    (compile_in_place) can write the trees separately."""
    if not decay:
        return {}
    assert not set(params) & set(state), "params and buffers share a name"
    return {k: v.detach().clone() for k, v in {**params, **state}.items()}


def ema_update(ema: Tree, current: Tree, decay: float) -> Tree:
    """e <- decay * e + (1 - decay) * p for every floating tensor of the EMA tree (one foreach lerp in the
    tensors' own precision: float32 master weights, also under bf16 autocast); integer entries (BatchNorm's
    num_batches_tracked) take the current value, as timm's ModelEmaV2 does. The BatchNorm running statistics are
    averaged with the weights, as ModelEmaV2 averages the whole state_dict: the averaged weights need statistics
    of activations like theirs, and the statistics' average over the same steps is the cheap stand-in for a
    pass over the training data with the averaged weights."""
    floats = [k for k in ema if ema[k].is_floating_point()]
    averaged = dict(zip(floats, torch._foreach_lerp([ema[k] for k in floats], [current[k] for k in floats],
                                                    1 - decay)))
    # A copy of an integer entry, so that no tensor is both the state's and the EMA's.
    return {k: averaged[k] if k in averaged else current[k].clone() for k in ema}


def eval_weights(params: Tree, state: Tree, ema: Tree) -> tuple[Tree, Tree]:
    """The (params, state) that validation, the final test and the tools evaluate: the EMA's entries under the
    params' and state's names when `ema` holds any (a run with ema > 0), else params and state themselves."""
    if not ema:
        return params, state
    return {k: ema[k] for k in params}, {k: ema[k] for k in state}


def make_train_step(net, cfg, precision: Precision, gradients: str = "func", grad_hook=None):
    """The pure step for `net`; `grad_hook(grads) -> grads`, when given, transforms the gradient pytree before
    the optimizer's update (train/collectives.py's all_reduce_mean_ averages it across ranks). With cfg.ema > 0
    the EMA tree is updated after the optimizer's step, from the new params and BatchNorm statistics: the same on
    every rank, as the params are."""
    members = cfg.members > 1
    if members and members_form(cfg, net) == "unroll":
        return PerMember(make_train_step(net, replace(cfg, members=1), precision, gradients, grad_hook), cfg.members)
    update = make_update(cfg, member_dims=int(members))
    # A members run lays its stacked images out first (stacked_channels_last); one run, inside the step.
    prepare = (lambda x: x) if members else precision.prepare
    folded = Folded(net, cfg.members) if members and members_form(cfg, net) == "fold" else None  # else vmap

    def loss_fn(params, bn_state, x, y, key):
        with precision.context():
            out, new_state = net.apply(params, bn_state, prepare(x), train=True, key=key)
        # A net with auxiliary classifiers (GoogLeNet's, when enabled) returns (logits, *aux) in train mode;
        # each auxiliary loss is weighted 0.3, as in Szegedy et al. 2015, sec. 5.
        logits, *aux = out if isinstance(out, tuple) else (out,)
        # y: class indices (B,), or soft targets (B, K) from mixup/cutmix, which cross_entropy takes as well.
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        for a in aux:
            loss = loss + AUX_LOSS_WEIGHT * F.cross_entropy(a.float(), y, label_smoothing=cfg.label_smoothing)
        return loss, (new_state, logits.detach())

    def folded_loss(params, bn_state, x, y, key):
        """The members' summed losses: its gradient is each member's own. (Folded nets draw nothing at random.)"""
        with precision.context():
            logits, new_state = folded.apply(params, bn_state, precision.prepare(fold_images(x)), train=True)
        each = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(0, 1), label_smoothing=cfg.label_smoothing,
                               reduction="none").unflatten(0, (cfg.members, -1)).mean(1)  # (K,)
        return each.sum(), (each.detach(), (new_state, logits.detach()))

    form = {"func": lambda f: torch.func.grad_and_value(f, has_aux=True), "autograd": autograd_form}[gradients]
    grad_and_loss = form(loss_fn)
    if folded is not None:  # either gradient form: the Triton kernels' custom backwards run as they are
        summed = form(folded_loss)

        def grad_and_loss(params, bn_state, x, y, key):
            grads, (_, aux) = summed(params, bn_state, x, y, key)  # aux: each member's loss, (state, logits)
            return grads, aux
    elif members:  # the stacked trees and batches of a members run, member by member (train/members.py)
        if gradients != "func":
            raise ValueError("a vmapped members run needs gradients='func': torch.func.vmap "
                             "cannot map torch.autograd.grad")
        per_member = grad_and_loss
        keyed = torch.func.vmap(per_member, randomness="different")
        unkeyed = torch.func.vmap(per_member, in_dims=(0, 0, 0, 0, None), randomness="different")  # key None

        def grad_and_loss(params, bn_state, x, y, key):
            return (unkeyed if key is None else keyed)(params, bn_state, x, y, key)

    def step(ts: TrainState, batch, lr: torch.Tensor, key: torch.Tensor | None = None):
        x, y = batch
        if members and precision.channels_last and folded is None:
            x = stacked_channels_last(x)
        grads, (loss, (new_state, logits)) = grad_and_loss(ts.params, ts.state, x, y, key)
        if grad_hook is not None:
            grads = grad_hook(grads)
        with torch.no_grad():
            params, momentum = update(ts.params, grads, ts.momentum, lr)
            ema = ema_update(ts.ema, {**params, **new_state}, cfg.ema) if ts.ema else ts.ema
        # With soft targets, a hit is the largest share's class (the image that covers most of the mixed one).
        hard = y.argmax(-1) if y.ndim == logits.ndim else y
        metrics = {"loss": loss.detach(), "correct": topk_correct(logits, hard, 1)}
        return TrainState(params, new_state, momentum, ema), metrics

    return step


def members_form(cfg, net) -> str:
    """How a members step computes its K members (cfg.members_form; auto: auto_members_form). "fold": one net K
    times as wide (nets/fold.py), grouped convolutions; "unroll": the single run's step, compiled once, run for
    each member in turn (PerMember), its kernels a single run's; "vmap": torch.func.vmap over the members
    (BatchNorm written out, train.members.batchnorm_for_members)."""
    if cfg.members_form == "auto":
        return auto_members_form(net)
    return cfg.members_form  # "fold" of a net that does not fold: Folded refuses (the trainer says so first)


# Widest convolution (output channels per member) of a net that auto folds. Images/s summed over the members
# against K = 1 on an H100 (bf16, batch 512 per member, cudnn.benchmark on; `python -m bench members
# parallel=true 'nets=resnet18 width 16,mobilenetv1,resnet18,vit' ks=1,8 members_form=auto,unroll ceiling=true`
# and the same with ks=1,2,4; bench/results/members-h100.md):
#   fold pays for ResNet-18 width 16 (widest 128: 1.09 / 1.40 / 1.51 at K = 2 / 4 / 8, against unroll's 1.02-1.03),
#     where one member leaves the GPU idle (one net at 8 x 512 images: 1.52x K = 1);
#   it loses for MobileNetV1 (widest 1,024: 0.82-0.91) and ResNet-18 (512: 0.76-0.80), which fill the GPU at
#     K = 1 (one net at 8 x 512 images: 1.21x and 1.24x), so the grouped convolutions' slower kernels cost more
#     than the idle share gives back;
#   unroll is 1.00-1.04 for every net at every K: a single run's step K times, never below K = 1.
# The ViT vmapped ran 1.18-1.28x K = 1 with PyTorch's attention, but its single run trains with the Triton
# attention kernel, 1.39x PyTorch's (`python -m bench step`, bench/results/step-h100.md), which vmap cannot train
# (train.members.check_supported): unrolled, its members keep the kernel.
FOLD_MAX_CHANNELS = 128


def auto_members_form(net) -> str:
    """members_form=auto's choice for `net`: "fold" where it folds and its widest convolution has at most
    FOLD_MAX_CHANNELS channels (the nets that leave an H100 idle at batch 512), else "unroll"."""
    widths = [m.out_channels for m in net.module.modules() if isinstance(m, torch.nn.Conv2d)]
    return "fold" if foldable(net) and widths and max(widths) <= FOLD_MAX_CHANNELS else "unroll"


def autograd_form(f):
    """f(params, *args) -> (loss, aux) as (gradient with respect to params, (loss, aux)) by torch.autograd.grad:
    the form for where torch.func.grad cannot be compiled around (Triton kernels with custom backwards, sync
    BN's collectives); params must require grad (as_leaves)."""

    def grad_and_value(params, *args):
        with torch.enable_grad():
            loss, aux = f(params, *args)
            grads = torch.autograd.grad(loss, list(params.values()))
        return dict(zip(params, grads)), (loss.detach(), aux)

    return grad_and_value


def as_leaves(ts: TrainState) -> TrainState:
    """For gradients="autograd": the params become leaf tensors that require grad (in place, no copies)."""
    for p in ts.params.values():
        p.requires_grad_(True)
    return ts


def leaf_step(step):
    """Wraps an "autograd" step so that the params it returns are leaves that require grad again (outside
    any compiled region: setting requires_grad inside one would break the graph)."""

    def wrapped(ts: TrainState, batch, lr, key=None):
        ts, metrics = step(ts, batch, lr, key)
        return as_leaves(ts), metrics

    return wrapped


def uses_custom_kernels(net, device: torch.device) -> bool:
    """Whether the net will run Triton kernels with custom backwards (blocks with a `kernels` switch) here."""
    modules = net.module.modules()
    return device.type == "cuda" and any(getattr(m, "kernels", "reference") != "reference" for m in modules)


def gradients_for(net, device: torch.device, synced: bool = False) -> str:
    """The step's gradient form: "autograd" where torch.func.grad cannot be compiled around (Triton kernels with
    custom backwards; sync BN's collectives, synced: a graph break inside func.grad leaves the whole gradient
    eager, while with autograd the pieces between BatchNorm layers still compile, train/sync_bn.py), else
    "func"."""
    return "autograd" if uses_custom_kernels(net, device) or synced else "func"


# Test-time augmentation, one rule for the trainer's eval step and the tools (train/run_dir.py):
#   none       the image alone
#   flip       the image and its mirror image (left-right)
#   translate  those two, each also translated by +TRANSLATE_PX and by -TRANSLATE_PX pixels in both axes: 6 views
# Every view is a crop the training augmentation makes (data/loader.py random_crop_flip: the normalised image
# zero-padded by CROP_PAD = 4, cropped at offsets (dy, dx) up to 4, then mirrored), so the net has learnt them
# all: the image translated by d is the crop at (d, d); its mirror translated by d is the mirrored crop at
# (d, -d), as the crop translates before it mirrors.
TTA = ("none", "flip", "translate")
TRANSLATE_PX = 2  # pixels; within the training crop's 4


def translated(x: torch.Tensor, d: int) -> torch.Tensor:
    """x (B, C, H, W) moved as the training crop at offset (d, d) moves it: out[..., r, c] = x[..., r + d, c + d],
    0 where that falls outside the image (0 after normalisation: the mean, as the crop's padding)."""
    if d == 0:
        return x
    H, W = x.shape[-2:]
    p = abs(d)
    return F.pad(x, (p, p, p, p))[..., p + d:p + d + H, p + d:p + d + W]  # (B, C, H + 2p, W + 2p) -> (B, C, H, W)


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a batch of normalised images that `tta` averages over (TTA), in this order: for the image,
    then its mirror image, the view translated by 0, +TRANSLATE_PX, -TRANSLATE_PX (translate) or by 0 only."""
    if tta not in TTA:
        raise ValueError(f"tta={tta!r} is not one of: {', '.join(TTA)}")
    bases = [x] if tta == "none" else [x, x.flip(-1)]
    shifts = (0, TRANSLATE_PX, -TRANSLATE_PX) if tta == "translate" else (0,)
    return [translated(v, d) for v in bases for d in shifts]


def tta_averaged(forward, x: torch.Tensor, tta: str) -> torch.Tensor:
    """forward(x) for tta="none"; else the log of the mean of the softmax outputs over tta_views (tta="flip":
    2 views, "translate": 6). Log-probabilities, usable wherever logits are (softmax of them gives the averaged
    probabilities, and cross-entropy of them is the loss of the averaged prediction)."""
    views = tta_views(x, tta)
    if len(views) == 1:
        return forward(x)
    if torch.compiler.is_compiling():
        # Under torch.compile, one forward over the views stacked along the batch: the graph holds the net once
        # rather than once per view (ResNet-18's translate eval graph: 26 s of a cold compile on an H100 with
        # six traced forwards, docs/training.md "Speed run"). Eager, view by view: one view's activations at a
        # time. The same per-image arithmetic either way, as eval-mode nets treat images independently.
        logits = forward(torch.cat(views)).unflatten(-2, (len(views), len(x)))  # (..., views, B, classes)
        log_probs = logits.log_softmax(-1).movedim(-3, 0)  # (views, ..., B, classes)
    else:
        log_probs = torch.stack([forward(v).log_softmax(-1) for v in views])  # (views, ..., B, classes)
    return log_probs.logsumexp(0) - math.log(len(views))


def scores(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summed cross-entropy, top-1 and top-5 hits of logits (..., B, classes) for labels (B,): one of each per
    leading index. Rows labelled IGNORED count for nothing."""
    labels = y.expand(logits.shape[:-1])
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return {"loss": losses.reshape(logits.shape[:-1]).sum(-1), "top1": topk_correct(logits, labels, 1),
            "top5": topk_correct(logits, labels, 5)}


def make_eval_step(net, precision: Precision, tta: str = "none", members: int = 1):
    """(params, state, x, y) -> summed loss, top-1 and top-5 hits, and logits, for a batch in eval mode;
    with tta (TTA) other than "none": of the probabilities averaged over its views (tta_averaged; the loss is
    the cross-entropy of their mean). members > 1: params and state are stacked (train/members.py); the scores
    are one per member and the logits (K, B, classes) the members' (train.members.ensemble_scores combines the
    members still training): folded into one net where the net folds (nets/fold.py), vmapped elsewhere."""
    folded = Folded(net, members) if members > 1 and foldable(net) else None

    def forward(params, bn_state, x):
        with torch.no_grad(), precision.context():
            logits, _ = net.apply(params, bn_state, precision.prepare(x), train=False)
        return logits.float()

    def averaged(params, bn_state, x):
        return tta_averaged(lambda v: forward(params, bn_state, v), x, tta)

    def evaluate(params, bn_state, x, y):
        logits = averaged(params, bn_state, x)
        return scores(logits, y), logits

    def folded_forward(params, bn_state, x):  # every member sees the same images: K copies of x's channels
        with torch.no_grad(), precision.context():
            logits, _ = folded.apply(params, bn_state, precision.prepare(x.repeat(1, members, 1, 1)), train=False)
        return logits.float()  # (K, B, classes)

    def evaluate_members(params, bn_state, x, y):
        if folded is not None:
            per_member = tta_averaged(lambda v: folded_forward(params, bn_state, v), x, tta)
        else:
            per_member = torch.func.vmap(averaged, in_dims=(0, 0, None))(params, bn_state, x)  # (K, B, classes)
        return scores(per_member, y), per_member

    return evaluate if members == 1 else evaluate_members


def eval_member_by_member(eval_step, members: int):
    """A members eval step (make_eval_step's with members > 1) that runs the single run's `eval_step` for each
    member in turn on its views of the stacked params and state: members_form=unroll's, whose members then
    evaluate exactly as their single runs do (the Triton kernels included), one compile for all of them."""

    def evaluate_members(params, bn_state, x, y):
        outs = [eval_step(member(params, k), member(bn_state, k), x, y) for k in range(members)]
        return stack([metrics for metrics, _ in outs]), torch.stack([logits for _, logits in outs])  # (K, B, classes)

    return evaluate_members


def trainer_eval_step(net, cfg, precision: Precision, compiled: bool):
    """The trainer's eval step: make_eval_step's for cfg, compiled when `compiled`, one graph for every batch
    (padded_to cfg.eval_batch_size); a members_form=unroll run's, eval_member_by_member of the single run's."""
    unrolled = cfg.members > 1 and members_form(cfg, net) == "unroll"
    eval_step = maybe_compile(make_eval_step(net, precision, cfg.tta, 1 if unrolled else cfg.members), compiled)
    if compiled:  # one graph for every evaluation batch, the partial last ones included
        eval_step = padded_to(eval_step, cfg.eval_batch_size)
    return eval_member_by_member(eval_step, cfg.members) if unrolled else eval_step


IGNORED = -100  # F.cross_entropy's default ignore_index: a row with this label adds nothing to the loss or the hits


def padded_to(eval_step, size: int):
    """eval_step with every smaller batch padded to `size` rows (zero images labelled IGNORED; their logits cut
    off again), so that a compiled eval step sees one batch shape: the evaluation sets' partial last batches
    (5,000 and 10,000 images in batches of 1,024 end in 904 and 784) no longer compile graphs of their own. In
    eval mode each image's output depends on that image alone, so the padding changes no real row's numbers."""

    def call(params, bn_state, x, y):
        n = len(y)
        if n >= size:
            return eval_step(params, bn_state, x, y)
        x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        y = torch.cat([y, y.new_full((size - n,), IGNORED)])
        metrics, logits = eval_step(params, bn_state, x, y)
        return metrics, logits[..., :n, :]  # (B, classes), or a members run's (K, B, classes)

    return call


def maybe_compile(fn, enabled: bool, gradients: str = "func", cudagraphs: bool = False):
    """torch.compile(fn) when enabled, with dynamo tracing torch.autograd.grad for the "autograd" form.

    cudagraphs=True (CUDA): mode="reduce-overhead", in which the compiled graph's kernels are recorded once as
    a CUDA graph and each call replays it: one launch instead of the hundreds of kernels of a training step,
    whose launching kept the GPU busy only 46% of the compiled ResNet-18 step on an H200
    (`python -m bench.step_profile`, docs/benchmarks.md). Each call starts a new step for torch's CUDA-graph trees
    (cudagraph_mark_step_begin), at which the previous replay's outputs become invalid, passing them back in
    included: so the outputs are returned as copies. A whole train state returned that way costs its copies
    (ResNet-18: about 90 MB and some 190 small kernels per step); compile_in_place returns only the metrics."""
    if not enabled:
        return fn
    # dynamic=False: one graph per input shape. Training batches all have one shape (drop_last), evaluation
    # one too when padded (padded_to): each compiles once, never again in later epochs.
    compiled = torch.compile(fn, dynamic=False, mode="reduce-overhead" if cudagraphs else None)

    def call(*args):
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch._dynamo.config.patch(trace_autograd_ops=True) if gradients == "autograd" else nullcontext():
            out = compiled(*args)
        return tree_map_only(torch.Tensor, torch.clone, out) if cudagraphs else out

    return call


def all_finite(*trees: dict) -> bool:
    """Whether every tensor of the trees is finite (one device sync)."""
    flags = [torch.isfinite(t).all() for tree in trees for t in tree.values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def copy_into(dst: TrainState, src: TrainState) -> None:
    """dst's tensors overwritten with src's, key by key (no_grad: dst's params may be leaves that require grad).
    Empty trees skipped: a net without BatchNorm (the ViT) has no state, and foreach ops refuse empty lists."""
    with torch.no_grad():
        for dst_tree, src_tree in zip(dst, src):
            if dst_tree:
                torch._foreach_copy_(list(dst_tree.values()), [src_tree[k] for k in dst_tree])


def compile_in_place(step, ts: TrainState, gradients: str = "func"):
    """`step` compiled with CUDA graphs (maybe_compile's cudagraphs=True), the train state kept in persistent
    buffers, ts's own tensors, which each call overwrites with the new state inside the graph. They are marked
    static addresses, so the graph reads and writes them where they are; without that, each replay copied the
    state in (torch's graph trees) and out (maybe_compile's output copies), about 90 MB and some 190 small
    copies per ResNet-18 step: in place, the steps ran 1.10-1.19x faster than with those copies (ResNet-18,
    VGG-16, AlexNet on an H200, `python -m bench step`). Returns (ts, metrics) like the step, ts being the
    same tensors. Not pure: a call changes ts (train.loop.warm_up restores it). gradients="autograd": ts's
    params are the leaves that require grad (as_leaves), written under no_grad as an optimizer writes its
    params."""
    mark_static(ts)

    def write(state: TrainState, batch, lr, key=None):
        new, metrics = step(state, batch, lr, key)
        copy_into(state, new)
        return metrics

    compiled = maybe_compile(write, True, gradients, cudagraphs=True)  # its outputs (the metrics) are copies
    return lambda state, batch, lr, key=None: (state, compiled(state, batch, lr, key))


def member(tree: Tree, k: int) -> Tree:
    """Member k's tree out of a stacked one (views)."""
    return {name: t[k] for name, t in tree.items()}


def stack(trees: list[Tree]) -> Tree:
    """One tree of the members' trees, each tensor stacked along a new leading dimension (member k at index k):
    member's inverse."""
    return {name: torch.stack([t[name] for t in trees]) for name in trees[0]}


def mark_static(ts: TrainState) -> None:
    """Every tensor of ts a static address for torch.compile's CUDA graphs: the graph reads and writes it where
    it is (compile_in_place)."""
    for tree in ts:
        for t in tree.values():
            torch._dynamo.mark_static_address(t)


class PerMember(NamedTuple):
    """A members step taken member by member (members_form=unroll): `step` is one member's, the single run's
    step, which prepare_step compiles once and runs for each of the `members` in turn on that member's views of
    the stacked train state (member_by_member)."""

    step: object
    members: int


def member_by_member(per_member: PerMember, ts: TrainState, gradients: str, compiled: bool, cudagraphs: bool):
    """The members step of `per_member`, as prepare_step gives it: a call runs the single run's step (one
    compile, shape for shape the same for every member) for member k on its views of ts's stacked tensors, its
    batch (x[k], y[k]) and key[k], writing member k's new state into those views, so ts stays the state's
    tensors; the metrics are stacked (K,). With CUDA graphs every member's views are static addresses (one
    recording each; torch's graph trees replay the one whose addresses match), so no state is copied."""
    with torch.no_grad():  # views that are leaves, so that the "autograd" form can make them require grad
        views = [TrainState(*(member(tree, k) for tree in ts)) for k in range(per_member.members)]
    for view in views[1:]:  # as prepare_step readies views[0]
        if gradients == "autograd":
            as_leaves(view)
        if cudagraphs:
            mark_static(view)
    prepared, _ = prepare_step(per_member.step, views[0], gradients, compiled, cudagraphs)

    def one(view: TrainState, batch, lr, key=None) -> dict:
        new, metrics = prepared(view, batch, lr, key)
        if new is not view:  # a pure step's new state, into the member's views (in place already with graphs)
            copy_into(view, new)
        return metrics

    def call(state: TrainState, batch, lr, key=None):
        x, y = batch
        return state, stack([one(view, (x[k], y[k]), lr, None if key is None else key[k])
                             for k, view in enumerate(views)])

    return call


def prepare_step(step, ts: TrainState, gradients: str, compiled: bool, cudagraphs: bool):
    """(the step to call, ts to call it with) from the pure `step`, as the trainer runs it: with CUDA graphs,
    compile_in_place (ts's own tensors become the state's buffers); else maybe_compile; a PerMember step,
    member_by_member (ts's tensors hold the members' state, written in place). For the "autograd" form ts's
    params become leaves that require grad, and stay so after each call."""
    if isinstance(step, PerMember):
        return member_by_member(step, ts, gradients, compiled, cudagraphs), ts
    if gradients == "autograd":
        ts = as_leaves(ts)
    if cudagraphs:
        return compile_in_place(step, ts, gradients), ts
    step = maybe_compile(step, compiled, gradients)
    return (leaf_step(step) if gradients == "autograd" else step), ts
