"""Issue 31's recipe levers for every family: the weights' exponential moving average (ema=) and test-time
augmentation's views (tta=none|flip|translate).

    the EMA                the float64 recurrence, step by step; ema=0 changes nothing; one graph; in place
    resume with the EMA    a run stopped by SIGTERM mid-epoch resumes to the uninterrupted run's bits, EMA included
    the EMA is evaluated   validation, results.json and the tools score best.pt's EMA weights, not its params
    the views              flip and translate against their views built here in float64; the views are crops the
                           training augmentation makes; the tools' logits are the trainer's eval step's
    the keys               parsing, errors, older config.json and checkpoints
"""

import json
import math
import signal

import pytest
import torch
import torch.nn.functional as F
from runs import STEPS_PER_EPOCH, assert_same_run, bn_net, copy_run, metrics, one_thread, reference_run, train_args
from synthetic import N_TEST_PER_CLASS, N_TRAIN_PER_CLASS, encode_image, synthetic_cifar
from test_resume import stop_after

import nets
import train.loop
from data import normalise, random_crop_flip
from train import checkpoint
from train.cli import main
from train.config import Config, ConfigError, from_json, parse
from train.evaluate import evaluate_run
from train.export import export_run
from train.optim import init_state
from train.predict import predict_images
from train.resume import CHECKPOINT_KEYS
from train.run_dir import load_run
from train.signals import TrainingInterrupted
from train.step import (
    TRANSLATE_PX,
    TrainState,
    eval_weights,
    init_ema,
    make_eval_step,
    make_train_step,
    precision_for,
    prepare_step,
    tta_views,
)

CPU = precision_for(torch.device("cpu"), "fp32")
EPS32 = torch.finfo(torch.float32).eps
DECAY = 0.9  # a 10-step horizon: over a test's few steps the average stays well away from the params
EMA_RUN = ["ema=0.9", "tta=translate"]  # the trainer's run with both levers (runs.train_args: recipe=seed, tiny)


def quiet(line: str) -> None:
    pass


def first_state(cfg, net=None, seed: int = 0) -> TrainState:
    """The trainer's starting TrainState for `cfg` (train.loop.starting_point's trees) on bn_net."""
    net = net or bn_net(width=4)
    params, state = net.init(torch.Generator().manual_seed(seed))
    return TrainState(params, state, init_state(cfg.optimizer, params), init_ema(params, state, cfg.ema))


def batches(n: int, size: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


# --- the EMA in the step ------------------------------------------------------------------------------------


def test_the_ema_is_the_float64_recurrence_of_the_steps_params_and_statistics():
    """N real steps (make_train_step from a parsed Config with ema=0.9): after each, the test advances
    e <- d * e + (1 - d) * p in float64 from the params and BatchNorm statistics the step returned, e starting
    at the initial values. The EMA tree must hold exactly the params' and statistics' names and equal the
    recurrence to float32 rounding: each step's lerp rounds 3 times (the difference, the product, the sum; the
    weight 1 - d is itself rounded), at most 2 eps of the largest value M a tensor takes, and earlier errors shrink
    by d each step, so the error stays below 2 eps M / (1 - d). Integer entries (num_batches_tracked) are the
    step's own. Using the params from before each step (an off-by-one update) misses by far more."""
    cfg = parse(["recipe=seed", f"ema={DECAY}", "lr=0.05"])
    net = bn_net(width=4)
    ts = first_state(cfg, net)
    step = make_train_step(net, cfg, CPU)
    floats = [k for k, v in ts.ema.items() if v.is_floating_point()]
    start = {**ts.params, **ts.state}
    expected = {k: start[k].double() for k in floats}
    off_by_one = dict(expected)
    largest = {k: start[k].abs().max().double() for k in floats}
    with one_thread():
        for batch in batches(8):
            before = {**ts.params, **ts.state}
            ts, _ = step(ts, batch, torch.tensor(0.05))
            now = {**ts.params, **ts.state}
            for k in floats:
                expected[k] = DECAY * expected[k] + (1 - DECAY) * now[k].double()
                off_by_one[k] = DECAY * off_by_one[k] + (1 - DECAY) * before[k].double()
                largest[k] = torch.maximum(largest[k], now[k].abs().max().double())
    assert list(ts.ema) == [*ts.params, *ts.state]
    assert {k for k in ts.ema if k not in floats} == {k for k in ts.state if "num_batches_tracked" in k}
    for k in ts.ema:
        if k not in floats:
            assert torch.equal(ts.ema[k], ts.state[k]) and ts.ema[k] is not ts.state[k]
    for k in floats:
        tolerance = 2 * EPS32 * largest[k] / (1 - DECAY)
        error = (ts.ema[k].double() - expected[k]).abs().max()
        assert ts.ema[k].dtype == torch.float32 and error <= tolerance, (k, error, tolerance)
        # Off by one step: 40 to 10^6 times the tolerance, in every tensor of this case.
        assert (ts.ema[k].double() - off_by_one[k]).abs().max() > tolerance, k


def test_without_ema_the_state_has_no_ema_and_the_step_computes_the_same_bits():
    """ema=0 (the default): the EMA tree is empty, before and after the steps, and the params, BatchNorm
    statistics and optimizer state are bit for bit those of a TrainState built with the EMA tree absent (the
    three-tree form every caller before the EMA built) and those of the same steps with ema=0.9: the EMA only
    watches."""
    runs = {}
    with one_thread():
        for decay in (0.0, DECAY, None):  # None: the EMA tree left out of the TrainState
            cfg = parse(["recipe=seed", f"ema={decay or 0.0}", "lr=0.05", "nesterov=true"])
            ts = first_state(cfg)
            ts = TrainState(*ts[:3]) if decay is None else ts
            step = make_train_step(bn_net(width=4), cfg, CPU)
            for batch in batches(4):
                ts, _ = step(ts, batch, torch.tensor(0.05))
            runs[decay] = ts
    assert runs[0.0].ema == {} and runs[None].ema == {} and len(runs[DECAY].ema) > 0
    for other in (None, DECAY):
        for tree, base in zip(runs[other][:3], runs[0.0][:3]):
            assert tree.keys() == base.keys() and all(torch.equal(tree[k], base[k]) for k in base)


def test_the_step_with_ema_is_one_graph():
    """The EMA update is inside the step dynamo compiles (no graph break), so it is compiled and CUDA-graphed
    with it."""
    cfg = Config(ema=DECAY)
    step = make_train_step(bn_net(width=4), cfg, CPU)
    explained = torch._dynamo.explain(step)(first_state(cfg), batches(1)[0], torch.tensor(0.1))
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def test_the_in_place_step_writes_the_ema_into_its_own_buffers(monkeypatch):
    """compile_in_place (the CUDA-graph form, here through aot_eager on the CPU) writes the new EMA into the
    EMA tree's own tensors, with the pure step's numbers."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager", dynamic=False))
    torch._dynamo.reset()
    cfg = Config(ema=DECAY, nesterov=True)
    net = bn_net(width=4)
    copy = lambda ts: TrainState(*({k: v.clone() for k, v in tree.items()} for tree in ts))  # noqa: E731
    ts = first_state(cfg, net)
    pure_step, pure = prepare_step(make_train_step(net, cfg, CPU), copy(ts), "func", False, False)
    step, buffers = prepare_step(make_train_step(net, cfg, CPU), copy(ts), "func", True, True)
    pointers = [t.data_ptr() for t in buffers.ema.values()]
    with one_thread():
        for batch in batches(3):
            pure, _ = pure_step(pure, batch, torch.tensor(0.1))
            out, _ = step(buffers, batch, torch.tensor(0.1))
    assert out is buffers and [t.data_ptr() for t in out.ema.values()] == pointers
    for k in pure.ema:
        torch.testing.assert_close(out.ema[k], pure.ema[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(out.ema["0.weight"], ts.ema["0.weight"])


# --- the trainer's run with both levers -----------------------------------------------------------------------


EMA_LOG = []  # the lines ema_run's run logged


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, cifar10_pickles):
    """The tiny reference run (runs.train_args) with ema=0.9 and tta=translate, never stopped."""
    out = tmp_path_factory.mktemp("ema") / "whole"
    with one_thread():
        train.loop.run(parse(train_args(cifar10_pickles, out, *EMA_RUN)), log=EMA_LOG.append)
    return out


def test_a_run_with_ema_stopped_mid_epoch_resumes_bit_for_bit(ema_run, cifar10_pickles, tmp_path):
    """SIGTERM after step 5 of epoch 2, then resume=true: params, BatchNorm statistics, optimizer state, the EMA
    tree, metrics and results equal the run never stopped, bit for bit (CPU, one thread). The EMA is not the
    params (so comparing it is comparing something else)."""
    out = tmp_path / "resumed"
    with pytest.MonkeyPatch.context() as mp, one_thread():
        stop_after(mp, STEPS_PER_EPOCH + 5, lambda: signal.raise_signal(signal.SIGTERM))
        with pytest.raises(TrainingInterrupted, match="SIGTERM: stopped in epoch 2 after step 5 of 18"):
            train.loop.run(parse(train_args(cifar10_pickles, out, *EMA_RUN)), log=quiet)
    saved = checkpoint.load(out / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 5)
    assert set(saved["ema"]) == {*saved["params"], *saved["state"]}
    assert not torch.equal(saved["ema"]["conv1.weight"], saved["params"]["conv1.weight"])
    with one_thread():
        train.loop.run(parse(train_args(cifar10_pickles, out, *EMA_RUN, "resume=true")), log=quiet)
    assert_same_run(ema_run, out)


def module_log_probs(net, params, state, images_u8, mean, std) -> torch.Tensor:
    """float64 (N, K) log of the mean softmax over the translate views, each built here: the image and its
    mirror (torch.flip), each also moved by +2 and -2 pixels in both axes (zero padding after normalising, then
    slicing), through the float64 nn.Module holding (params, state)."""
    module = net.to_module(params, state).double()
    x = (images_u8.double() - mean.double()) / std.double()
    views = []
    for base in (x, x.flip(-1)):
        for d in (0, 2, -2):
            padded = F.pad(base, (2, 2, 2, 2))  # (N, 3, 36, 36), zeros: the mean after normalising
            views.append(padded[:, :, 2 + d:34 + d, 2 + d:34 + d])
    with torch.no_grad():
        probs = torch.stack([module(v).softmax(1) for v in views]).mean(0)
    return probs.log()


def scored(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and top-1 (percent) of log-probabilities."""
    return F.nll_loss(log_probs, labels).item(), 100 * (log_probs.argmax(1) == labels).double().mean().item()


def test_validation_and_the_final_test_use_the_ema_weights(ema_run):
    """results.json's test loss and top-1 are best.pt's EMA weights' (with the 6 translate views), computed here
    in float64 from the checkpoint, and not its raw params'; the last epoch's validation loss is last.pt's EMA
    weights' on the held-out images. The run's numbers are float32 sums over one batch: a few ulps of the loss
    (rel 1e-5); the raw params' loss differs from the EMA's by far more."""
    results = json.loads((ema_run / "results.json").read_text())
    assert (results["weights"], results["tta"]) == ("ema", "translate")
    assert "weights averaged (ema=0.9 per step): validation, the best checkpoint and the test use the EMA " \
           "weights" in EMA_LOG
    assert EMA_LOG[-1].startswith(f"test (best val epoch {results['best_epoch']}, EMA weights): top1 ")
    best, last = checkpoint.load(ema_run / "best.pt"), checkpoint.load(ema_run / "last.pt")
    train_images, _, test_images, test_labels = synthetic_cifar(10, N_TRAIN_PER_CLASS, N_TEST_PER_CLASS)
    net = nets.build("resnet18", 10, width=4)

    def score(saved, images, labels, weights):
        params, state = weights
        return scored(module_log_probs(net, params, state, torch.from_numpy(images), saved["mean"], saved["std"]),
                      torch.from_numpy(labels))

    ema_loss, ema_top1 = score(best, test_images, test_labels, eval_weights(best["params"], best["state"],
                                                                              best["ema"]))
    raw_loss, _ = score(best, test_images, test_labels, (best["params"], best["state"]))
    assert results["test_loss"] == pytest.approx(ema_loss, rel=1e-5)
    assert results["test_top1"] == pytest.approx(ema_top1)
    assert abs(raw_loss - ema_loss) > 1e-3, (raw_loss, ema_loss)

    val_idx = last["val_idx"].numpy()
    _, train_labels = synthetic_cifar(10, N_TRAIN_PER_CLASS, N_TEST_PER_CLASS)[:2]
    val_loss, val_top1 = score(last, train_images[val_idx], train_labels[val_idx],
                               eval_weights(last["params"], last["state"], last["ema"]))
    final = metrics(ema_run)[-1]
    assert final["val_loss"] == pytest.approx(val_loss, rel=1e-5) and final["val_top1"] == pytest.approx(val_top1)


def test_the_tools_use_the_ema_weights_and_the_trainers_views(ema_run, tmp_path):
    """load_run takes best.pt's EMA weights (weights "ema"); LoadedRun.logits(tta="translate") gives the
    trainer's eval step's logits on them, bit for bit (the same function on the same float32 batch); without
    tta= the tools take the run's own views (translate), so evaluate reports results.json's test numbers and
    predict the translate-averaged probabilities, while tta=none evaluates each image alone."""
    loaded = load_run(ema_run)
    best = checkpoint.load(ema_run / "best.pt")
    assert loaded.weights == "ema"
    for tree in (loaded.params, loaded.state):
        assert all(torch.equal(tree[k], best["ema"][k]) for k in tree)
    _, _, images, labels = (torch.from_numpy(a) for a in synthetic_cifar(10, N_TRAIN_PER_CLASS, N_TEST_PER_CLASS))
    with one_thread():
        got = loaded.logits(images, tta="translate")
        _, expected = make_eval_step(loaded.net, CPU, "translate")(
            loaded.params, loaded.state, normalise(images, loaded.mean, loaded.std), labels)
    assert torch.equal(got, expected)
    lines = []
    with one_thread():
        result = evaluate_run(str(ema_run), device="cpu", log=lines.append)
        alone = evaluate_run(str(ema_run), tta="none", device="cpu", log=lines.append)
    saved = json.loads((ema_run / "results.json").read_text())
    assert (result["top1"], result["top5"]) == pytest.approx((saved["test_top1"], saved["test_top5"]))
    assert result["weights"] == "ema" and f"(epoch {loaded.epoch}, EMA weights), tta=translate" in lines[0]
    assert (result["tta"], alone["tta"]) == ("translate", "none") and lines[1].endswith("tta=none")
    image = tmp_path / "one.png"
    image.write_bytes(encode_image(images[0].numpy(), "png"))
    with one_thread():
        found = predict_images(str(ema_run), [str(image)], top=10, device="cpu", log=lines.append)
        plain = predict_images(str(ema_run), [str(image)], top=10, device="cpu", log=quiet, tta="none")
    expected = got[0].softmax(0)
    assert [p for _, p in found[0]["top"]] == pytest.approx(sorted(expected.tolist(), reverse=True), rel=1e-5)
    assert "tta=translate), top 10 of 10 classes" in lines[2] and found[0]["top"] != plain[0]["top"]


def test_export_writes_the_ema_weights(ema_run, tmp_path):
    """export's state_dict.pt holds best.pt's EMA weights, and meta.json says so; its program, the net alone,
    passed export's check against the one-view logits although the run tested with tta=translate."""
    with one_thread():
        paths = export_run(str(ema_run), out=str(tmp_path / "export"), log=quiet)
    best = checkpoint.load(ema_run / "best.pt")
    exported = torch.load(paths["state_dict"], weights_only=True)
    assert exported.keys() == best["ema"].keys() and all(torch.equal(exported[k], best["ema"][k]) for k in exported)
    meta = json.loads(paths["meta"].read_text())
    assert (meta["weights"], meta["tta"]) == ("ema", "none (results.json's test used tta=translate)")


# --- the views ----------------------------------------------------------------------------------------------


def float64_case():
    """bn_net in float64 with perturbed BatchNorm statistics, 16 float64 images and labels."""
    net = bn_net(width=4)
    params, state = net.init(torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    params = {k: v.double() for k, v in params.items()}
    state = {k: v.double() + 0.1 * torch.rand(v.shape, generator=g, dtype=torch.float64)
             if v.is_floating_point() else v for k, v in state.items()}
    return net, params, state, torch.randn(16, 3, 32, 32, generator=g, dtype=torch.float64), \
        torch.randint(0, 10, (16,), generator=g)


def hand_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views, built here: torch.flip for the mirror, F.pad (zeros) and slicing for the 2-pixel moves."""
    mirrors = [x] if tta == "none" else [x, torch.flip(x, dims=[3])]
    moves = (0, 2, -2) if tta == "translate" else (0,)
    return [F.pad(v, (2, 2, 2, 2))[:, :, 2 + d:34 + d, 2 + d:34 + d] for v in mirrors for d in moves]


@pytest.mark.parametrize("one_batch", [False, True], ids=["view-by-view", "views-in-one-batch"])
@pytest.mark.parametrize("tta", ["flip", "translate"])
def test_eval_step_averages_the_softmax_of_its_views(tta, one_batch, monkeypatch):
    """The eval step's logits (float64 net and images; the step returns float32 logits) are the log of the mean
    softmax over the views built here in float64, and its loss their cross-entropy. Tolerance per output: the
    float32 rounding of each view's logits (eps/2 of the largest) moves a log-softmax by at most twice that, and
    the float32 log-softmax and logsumexp add a few eps of the log-probabilities' size (16 allowed). With one
    view fewer (flip for translate, the image alone for flip) the answer moves beyond that tolerance. Both of
    tta_averaged's paths: eager's view by view, and the compiled trace's views stacked into one batch."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: one_batch)
    net, params, state, x, y = float64_case()
    module = net.to_module(params, state).double()

    def expected_for(kind):
        with torch.no_grad():
            outputs = [module(v) for v in hand_views(x, kind)]
        return torch.stack([o.softmax(1) for o in outputs]).mean(0).log(), max(o.abs().max() for o in outputs)

    expected, largest_logit = expected_for(tta)
    metrics, logits = make_eval_step(net, CPU, tta)(params, state, x, y)
    assert logits.dtype == torch.float32 and logits.shape == (16, 10)
    tolerance = EPS32 * largest_logit + 16 * EPS32 * (1 + expected.abs())
    error = (logits.log_softmax(1).double() - expected).abs()
    assert (error <= tolerance).all(), f"error {error.max():.3g}"
    torch.testing.assert_close(metrics["loss"].double(), F.nll_loss(expected, y, reduction="sum"), rtol=1e-5,
                               atol=0)
    assert metrics["top1"] == (expected.argmax(1) == y).sum()
    fewer, _ = expected_for({"flip": "none", "translate": "flip"}[tta])
    assert ((fewer - expected).abs() > tolerance).any()


def test_the_views_are_crops_the_training_augmentation_makes():
    """Each translate view equals, bit for bit, data.loader.random_crop_flip's crop of the same image at the
    offsets and mirror it stands for: the image moved by d is the crop at (dy, dx) = (d, d); its mirror moved by d
    is the mirrored crop at (d, -d), as the crop moves the image before mirroring it. The crop's random offsets
    are read back from a second generator with the same seed (its documented draw order: dy, dx, flip); at pad 2
    and 400 images each of the 6 views is drawn several times."""
    B = 400
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=g)
    mean, std = 100 + 50 * torch.rand(3, 32, 32, generator=g), 40 + 20 * torch.rand(3, 32, 32, generator=g)
    crops = random_crop_flip(images, mean, std, TRANSLATE_PX, torch.Generator().manual_seed(6))
    draws = torch.Generator().manual_seed(6)
    dy, dx = (torch.randint(-TRANSLATE_PX, TRANSLATE_PX + 1, (B,), generator=draws) for _ in range(2))
    flip = torch.randint(0, 2, (B,), generator=draws).bool()
    views = tta_views(normalise(images, mean, std), "translate")
    assert len(views) == 6
    matched = [0] * 6
    for i, (mirrored, d) in enumerate((m, d) for m in (False, True) for d in (0, TRANSLATE_PX, -TRANSLATE_PX)):
        which = (flip == mirrored) & (dy == d) & (dx == (-d if mirrored else d))
        matched[i] = int(which.sum())
        assert torch.equal(views[i][which], crops[which]), (mirrored, d)
    assert min(matched) >= 3, matched


def test_views_for_none_and_flip_and_unknown_kinds():
    x = torch.randn(2, 3, 32, 32)
    assert [v is x for v in tta_views(x, "none")] == [True]
    flip = tta_views(x, "flip")
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    with pytest.raises(ValueError, match="tta='five' is not one of: none, flip, translate"):
        tta_views(x, "five")


# --- the keys -------------------------------------------------------------------------------------------------


def test_ema_and_tta_keys():
    default = parse([])
    assert (default.ema, default.tta) == (0.0, "flip")  # recipe=fast: flip TTA, no EMA
    assert (parse(["recipe=seed"]).ema, parse(["recipe=seed"]).tta) == (0.0, "none")
    assert Config().ema == 0.0 and Config().tta == "none"  # the plain trainer: both off
    cfg = parse(["ema=0.999", "tta=translate"])
    assert (cfg.ema, cfg.tta) == (0.999, "translate")
    for word, kind in (("true", "flip"), ("True", "flip"), ("1", "flip"), ("false", "none"), ("no", "none")):
        assert parse([f"tta={word}"]).tta == kind  # the older, boolean spelling


@pytest.mark.parametrize(
    "argv,message",
    [
        (["ema=1"], r"ema must be in \[0, 1\) \(a decay per step, e.g. 0.999; 0: off\), got 1.0"),
        (["ema=-0.5"], r"ema must be in \[0, 1\)"),
        (["ema=nan"], r"ema must be in \[0, 1\)"),
        (["ema=fast"], "ema='fast' is not a valid float"),
        (["tta=mirror"], "tta='mirror' is not one of: none, flip, translate"),
    ],
)
def test_bad_ema_and_tta_are_one_line_errors(argv, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse(argv)
    assert "\n" not in str(e.value)


def test_an_older_config_with_boolean_tta_loads_as_flip_or_none():
    """results/*/config.json hold "tta": true and no "ema": they load as flip with no EMA, and resume-compare
    equal to the words that spell them today."""
    saved = json.loads(Config().to_json())
    del saved["ema"]
    for old, kind in ((True, "flip"), (False, "none")):
        cfg = from_json(json.dumps({**saved, "tta": old}), "config.json")
        assert (cfg.tta, cfg.ema) == (kind, 0.0)
    with pytest.raises(ConfigError, match="the saved configuration is invalid .*tta=3 is not one of"):
        from_json(json.dumps({**saved, "tta": 3}), "config.json")


def test_a_checkpoint_without_the_ema_key_still_resumes_and_loads(tmp_path, cifar10_pickles, tmp_path_factory):
    """A run saved before the checkpoint held "ema" (its run had none): resume=true and the tools read it as a
    run without EMA."""
    reference = reference_run(tmp_path_factory.getbasetemp(), cifar10_pickles)[0]
    run_dir = copy_run(reference, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        saved = checkpoint.load(run_dir / name)
        assert "ema" in CHECKPOINT_KEYS and saved["ema"] == {}
        checkpoint.save(run_dir / name, {k: v for k, v in saved.items() if k not in ("format", "sha256", "ema")})
    with one_thread():
        assert main([f"out={run_dir}", "resume=true"]) == 0  # finished already: the test set only
    assert json.loads((run_dir / "results.json").read_text())["weights"] == "raw"
    assert load_run(run_dir).weights == "raw"
    assert not math.isnan(json.loads((run_dir / "results.json").read_text())["test_loss"])
