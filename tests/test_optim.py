"""The functional SGD step and the schedules against torch's own implementations."""

import random

import pytest
import torch

from train.config import Config
from train.optim import adamw, decay_rule, init_state, sgd, zeros_like_tree
from train.schedule import OneCycle, Plateau, load_schedule, make_schedule


@pytest.mark.parametrize("nesterov", (False, True))
@pytest.mark.parametrize("decay_all", (True, False))
def test_sgd_equals_torch_optim(nesterov, decay_all):
    """Several steps with changing lr and fresh gradients match torch.optim.SGD to float tolerance."""
    shapes = {"conv.weight": (8, 3, 3, 3), "bn.weight": (8,), "fc.weight": (10, 8), "fc.bias": (10,)}
    params = {k: torch.randn(s, dtype=torch.float64) for k, s in shapes.items()}
    ref = {k: v.clone().requires_grad_() for k, v in params.items()}
    decays = decay_rule(decay_all)
    groups = [
        {"params": [ref[k] for k in shapes if decays(k, params[k])], "weight_decay": 5e-4},
        {"params": [ref[k] for k in shapes if not decays(k, params[k])], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD([g for g in groups if g["params"]], lr=0.1, momentum=0.9, nesterov=nesterov)
    buf = zeros_like_tree(params)
    for lr in (0.1, 0.05, 0.2, 0.01, 0.1):
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        for g in opt.param_groups:
            g["lr"] = lr
        for k, p in ref.items():
            p.grad = grads[k].clone()
        opt.step()
        params, buf = sgd(params, grads, buf, torch.tensor(lr, dtype=torch.float64), 0.9, 5e-4, nesterov, decays)
    for k in params:
        torch.testing.assert_close(params[k], ref[k].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("decay_all", (True, False))
def test_adamw_equals_torch_optim(decay_all):
    """Several steps with changing lr and fresh gradients of mixed scales match torch.optim.AdamW."""
    shapes = {"conv.weight": (8, 3, 3, 3), "bn.weight": (8,), "fc.weight": (10, 8), "fc.bias": (10,)}
    params = {k: torch.randn(s, dtype=torch.float64) for k, s in shapes.items()}
    ref = {k: v.clone().requires_grad_() for k, v in params.items()}
    decays = decay_rule(decay_all)
    groups = [
        {"params": [ref[k] for k in shapes if decays(k, params[k])], "weight_decay": 0.05},
        {"params": [ref[k] for k in shapes if not decays(k, params[k])], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    state = init_state("adamw", params)
    assert set(state) == {f"exp_avg.{k}" for k in shapes} | {f"exp_avg_sq.{k}" for k in shapes} | {"step"}
    for lr, scale in ((1e-3, 1.0), (3e-3, 1e-4), (2e-3, 10.0), (1e-4, 1.0), (5e-3, 0.1)):
        grads = {k: scale * torch.randn_like(v) for k, v in params.items()}
        for g in opt.param_groups:
            g["lr"] = lr
        for k, p in ref.items():
            p.grad = grads[k].clone()
        opt.step()
        params, state = adamw(params, grads, state, torch.tensor(lr, dtype=torch.float64), 0.9, 0.95, 0.05,
                              decays)
    assert state["step"] == 5
    for k in params:
        torch.testing.assert_close(params[k], ref[k].detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state[f"exp_avg_sq.{k}"], opt.state[ref[k]]["exp_avg_sq"], rtol=1e-12, atol=0)


def test_sgd_is_pure():
    params = {"w": torch.randn(3, 3)}
    grads, buf = {"w": torch.randn(3, 3)}, {"w": torch.randn(3, 3)}
    copies = [{k: v.clone() for k, v in t.items()} for t in (params, grads, buf)]
    sgd(params, grads, buf, torch.tensor(0.1), 0.9, 5e-4, True, decay_rule(True))
    for tree, copy in zip((params, grads, buf), copies):
        assert torch.equal(tree["w"], copy["w"])


def test_decay_rule():
    assert decay_rule(False)("fc.bias", torch.zeros(3)) is False
    assert decay_rule(False)("fc.weight", torch.zeros(3, 3)) is True
    assert decay_rule(True)("fc.bias", torch.zeros(3)) is True


def test_plateau_equals_torch_reduce_on_plateau():
    """Same lr decisions as ReduceLROnPlateau on random error curves with plateaus."""
    rng = random.Random()
    for _ in range(20):
        patience = rng.randint(0, 4)
        ours = Plateau(lr=0.1, patience=patience, factor=0.1, min_lr=1e-4)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=patience,
                                                         min_lr=1e-4)
        error = 50.0
        for _ in range(60):
            error = error - rng.choice([0, 0, 0, 1, 0.001]) * rng.random() * 5
            ours.observe(error)
            ref.step(error)
            assert ours.lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)


def test_plateau_restores_from_state_dict():
    a = Plateau(lr=0.1, patience=2)
    for e in (10, 9, 9, 9):
        a.observe(e)
    b = Plateau(**a.state_dict())
    for e in (9, 9, 9):
        a.observe(e)
        b.observe(e)
    assert a == b and a.lr == pytest.approx(0.01)


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_fixed_length_schedules_against_their_closed_forms(decay):
    """Warm-up to the peak at step 100 of 500 (20%), then the decay's closed form in the step's fraction of
    the remaining 400, reaching 0 at the last step; cosine sits above linear through the decay's first half
    and below it through the second."""
    import math

    s = make_schedule(Config(schedule={"linear": "onecycle", "cosine": "cosine"}[decay], lr=0.4, epochs=10,
                             warmup_fraction=0.2))
    lrs = [lr for e in range(10) for lr in s.lrs(e, 50)]
    for i, lr in enumerate(lrs):
        t = i + 1
        u = (t - 100) / 400
        want = 0.4 * t / 100 if t <= 100 else 0.4 * ((1 - u) if decay == "linear" else (1 + math.cos(math.pi * u)) / 2)
        assert lr == pytest.approx(want, abs=1e-12)
    assert lrs[-1] == 0 and max(lrs) == pytest.approx(0.4)
    linear = OneCycle(peak=0.4, epochs=10, warmup_fraction=0.2)
    line = [lr for e in range(10) for lr in linear.lrs(e, 50)]
    if decay == "cosine":
        assert all(c > li for c, li in zip(lrs[100:298], line[100:298]))
        assert all(c < li for c, li in zip(lrs[300:499], line[300:499]))


def test_a_saved_onecycle_without_a_decay_loads_as_linear():
    """Runs saved before the decay had a shape resume on the linear one they trained with."""
    saved = {"peak": 0.2, "epochs": 4, "warmup_fraction": 0.25}
    s = load_schedule(Config(schedule="onecycle", lr=0.2, epochs=4), saved)
    assert s.decay == "linear" and s.lrs(3, 10)[-1] == 0 and s.lrs(1, 10)[0] == pytest.approx(0.2 * 29 / 30)


def test_onecycle_shape():
    s = OneCycle(peak=0.4, epochs=10, warmup_fraction=0.2)
    lrs = [lr for e in range(10) for lr in s.lrs(e, 50)]
    assert len(lrs) == 500
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 99
    assert lrs[0] > 0 and lrs[-1] == 0
    assert all(a <= b for a, b in zip(lrs[:100], lrs[1:100]))
    assert all(a >= b for a, b in zip(lrs[99:], lrs[100:]))
