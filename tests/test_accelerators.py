"""Grokking accelerators against their definitions, on tiny tensors with hand-computed values."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grokbench.train.accelerators import (
    AcceleratorConfig,
    Accelerators,
    EMAFilter,
    GrokfastConfig,
    MAFilter,
    WDSchedule,
    log_stablemax,
    perp_grad_,
    set_weight_decay,
    softmax_cross_entropy,
    stablemax_cross_entropy,
    stablemax_s,
    wd_multiplier,
)
from grokbench.train.data import IGNORE


class Two(nn.Module):
    """Two parameters, a 2-vector and a scalar, in float64 so expected values compare exactly."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(3.0, dtype=torch.float64))


def set_grads(model: Two, ga: list[float], gb: float) -> None:
    model.a.grad = torch.tensor(ga, dtype=torch.float64)
    model.b.grad = torch.tensor(gb, dtype=torch.float64)


def grads(model: Two) -> tuple[list[float], float]:
    return model.a.grad.tolist(), model.b.grad.item()


# --- Grokfast -------------------------------------------------------------------------------------------


def test_ema_two_steps_by_hand():
    m, f = Two(), EMAFilter(alpha=0.5, lam=2.0)
    set_grads(m, [1.0, 2.0], 4.0)
    f.apply(m)  # mu = g1; g = g1 + 2 g1 = 3 g1
    assert grads(m) == ([3.0, 6.0], 12.0)
    set_grads(m, [3.0, 0.0], -4.0)
    f.apply(m)  # mu = 0.5 g1 + 0.5 g2 = ([2, 1], 0); g = g2 + 2 mu
    assert grads(m) == ([7.0, 2.0], -4.0)
    assert f.mu["a"].tolist() == [2.0, 1.0] and f.mu["b"].item() == 0.0


def test_ema_defaults_and_raw_gradient_memory():
    f = Accelerators(AcceleratorConfig(grokfast=GrokfastConfig())).filter
    assert isinstance(f, EMAFilter) and (f.alpha, f.lam) == (0.98, 2.0)
    m = Two()
    set_grads(m, [1.0, 1.0], 1.0)
    f.apply(m)
    set_grads(m, [0.0, 0.0], 0.0)
    f.apply(m)  # mu tracks the raw gradients (1 then 0), not the amplified 3
    assert f.mu["a"].tolist() == pytest.approx([0.98, 0.98])
    assert grads(m) == (pytest.approx([1.96, 1.96]), pytest.approx(1.96))


def test_ma_window():
    m, f = Two(), MAFilter(window=2, lam=4.0)
    set_grads(m, [1.0, 2.0], 1.0)
    f.apply(m)  # fewer than `window` gradients so far: unchanged
    assert grads(m) == ([1.0, 2.0], 1.0)
    set_grads(m, [3.0, 0.0], 3.0)
    f.apply(m)  # mean(g1, g2) = ([2, 1], 2); g = g2 + 4 mean
    assert grads(m) == ([11.0, 4.0], 11.0)
    set_grads(m, [5.0, 2.0], -1.0)
    f.apply(m)  # g1 left the window: mean(g2, g3) = ([4, 1], 1)
    assert grads(m) == ([21.0, 6.0], 3.0)
    assert Accelerators(AcceleratorConfig(grokfast=GrokfastConfig(kind="ma"))).filter.lam == 5.0


def test_ma_running_sum_stays_exact():
    m, f = Two(), MAFilter(window=3, lam=1.0)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(10):
        ga, gb = torch.randn(2, generator=gen, dtype=torch.float64), torch.randn((), dtype=torch.float64)
        history.append(ga)
        m.a.grad, m.b.grad = ga.clone(), gb.clone()
        f.apply(m)
        if len(history) >= 3:
            expected = ga + torch.stack(history[-3:]).mean(0)
            torch.testing.assert_close(m.a.grad, expected)


@pytest.mark.parametrize("kind", ["ema", "ma"])
def test_filter_state_round_trip(kind):
    cfg = AcceleratorConfig(grokfast=GrokfastConfig(kind=kind, window=3))
    one, two = Accelerators(cfg), Accelerators(cfg)
    m1, m2 = Two(), Two()
    steps = [([1.0, 2.0], 1.0), ([0.5, -1.0], 2.0), ([2.0, 0.0], -3.0), ([1.0, 1.0], 1.0), ([4.0, 1.0], 0.0)]
    for i, (ga, gb) in enumerate(steps):
        if i == 2:  # "checkpoint" one and resume in two, through a serialization round trip
            saved = copy.deepcopy(one.state_dict())
            two.load_state_dict(saved)
        set_grads(m1, ga, gb)
        one.after_backward(m1)
        if i >= 2:
            set_grads(m2, ga, gb)
            two.after_backward(m2)
            assert grads(m1) == grads(m2)
    # state_dict is a snapshot: later steps do not change it
    snapshot = one.state_dict()
    frozen = copy.deepcopy(snapshot)
    set_grads(m1, [9.0, 9.0], 9.0)
    one.after_backward(m1)
    assert str(snapshot) == str(frozen)
    other = "ma" if kind == "ema" else "ema"
    with pytest.raises(ValueError, match=other):
        Accelerators(AcceleratorConfig(grokfast=GrokfastConfig(kind=other))).load_state_dict(saved)


def test_filter_skips_parameters_without_gradient():
    m, f = Two(), EMAFilter()
    m.a.grad = torch.ones(2, dtype=torch.float64)
    f.apply(m)
    assert m.b.grad is None and set(f.mu) == {"a"}


# --- ⊥Grad ----------------------------------------------------------------------------------------------


def test_perp_grad_by_hand():
    w = nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))
    w.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    perp_grad_([w])  # g_perp = (0, 4), rescaled to |g| = 5
    assert w.grad.tolist() == [0.0, 5.0]


def test_perp_grad_orthogonal_and_norm_preserved():
    gen = torch.Generator().manual_seed(1)
    ps = [nn.Parameter(torch.randn(*shape, generator=gen)) for shape in [(4, 3), (5,), (2, 2, 2)]]
    before = []
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
        before.append(p.grad.clone())
    perp_grad_(ps)
    for p, g in zip(ps, before):
        assert abs(torch.dot(p.detach().flatten(), p.grad.flatten()).item()) < 1e-5 * p.norm() * g.norm()
        torch.testing.assert_close(p.grad.norm(), g.norm())


def test_perp_grad_zero_cases():
    zero_w = nn.Parameter(torch.zeros(3))
    zero_w.grad = torch.tensor([1.0, 2.0, 3.0])
    parallel = nn.Parameter(torch.tensor([1.0, 2.0]))
    parallel.grad = torch.tensor([-2.0, -4.0])
    zero_g = nn.Parameter(torch.tensor([1.0, 2.0]))
    zero_g.grad = torch.zeros(2)
    no_grad = nn.Parameter(torch.ones(2))
    perp_grad_([zero_w, parallel, zero_g, no_grad])
    assert zero_w.grad.tolist() == [1.0, 2.0, 3.0]  # w = 0: unchanged
    assert parallel.grad.tolist() == [0.0, 0.0]  # nothing orthogonal to w
    assert zero_g.grad.tolist() == [0.0, 0.0]
    assert no_grad.grad is None


# --- StableMax ------------------------------------------------------------------------------------------


def test_stablemax_s_values():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0])
    assert stablemax_s(x).tolist() == pytest.approx([0.25, 0.5, 1 / 1.5, 1.0, 1.5, 3.0], rel=1e-7)


def test_stablemax_log_probabilities_match_formula():
    x = torch.tensor([[-3.0, 0.0, 2.0, 0.5], [1.0, 1.0, -1.0, 7.0]], dtype=torch.float64)
    s = torch.where(x >= 0, x + 1, 1 / (1 - x))
    torch.testing.assert_close(log_stablemax(x), torch.log(s / s.sum(-1, keepdim=True)))
    # by hand, first row: s = (1/4, 1, 3, 3/2), sum 23/4
    assert log_stablemax(x)[0, 2].item() == pytest.approx(math.log(3 / (23 / 4)))


def test_stablemax_loss_answer_tokens_and_mean():
    logits = torch.tensor([[[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [0.0, -3.0, 3.0]]])
    y = torch.tensor([[IGNORE, 1], [2, IGNORE]])
    # answer tokens: row (2, 0, 0) target 1 -> s = (3, 1, 1), p = 1/5; row (1, 1, 1) target 2 -> p = 1/3
    expected = -(math.log(1 / 5) + math.log(1 / 3)) / 2
    assert stablemax_cross_entropy(logits, y).item() == pytest.approx(expected, rel=1e-6)
    assert stablemax_cross_entropy(logits, y, reduction="sum").item() == pytest.approx(2 * expected, rel=1e-6)
    none = stablemax_cross_entropy(logits, y, reduction="none")
    assert none.shape == y.shape and none[0, 0] == 0 and none[1, 1] == 0
    # the ignored entries may hold any logits without changing the loss
    poisoned = logits.clone()
    poisoned[0, 0] = 1e30
    assert stablemax_cross_entropy(poisoned, y) == stablemax_cross_entropy(logits, y)


def test_stablemax_large_logits_finite_and_argmax_unchanged():
    logits = torch.tensor([[[1e30, -1e30, 0.0, 5.0], [-1e20, -2e20, 3e20, 1e-8]]], requires_grad=True)
    y = torch.tensor([[0, 2]])
    loss = stablemax_cross_entropy(logits, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert torch.isfinite(log_stablemax(logits.detach())).all()
    x = torch.randn(50, 7)
    assert torch.equal(log_stablemax(x).argmax(-1), x.argmax(-1))


def test_stablemax_gradient_matches_formula():
    x = torch.tensor([[-2.0, 0.0, 1.5]], dtype=torch.float64, requires_grad=True)
    stablemax_cross_entropy(x.unsqueeze(0), torch.tensor([[2]])).backward()
    # d/dx_i [-log s(x_2) + log sum s] = s'(x_i)/sum s - [i=2] s'(x_2)/s(x_2); s' = 1 (x>=0), 1/(1-x)^2 (x<0)
    s, ds, total = [1 / 3, 1.0, 2.5], [1 / 9, 1.0, 1.0], 1 / 3 + 1.0 + 2.5
    expected = [ds[i] / total - (ds[2] / s[2] if i == 2 else 0.0) for i in range(3)]
    assert x.grad[0].tolist() == pytest.approx(expected)


def test_softmax_loss_is_the_trainers():
    logits = torch.randn(3, 4, 5)
    y = torch.tensor([[IGNORE, 1, 2, IGNORE], [0, IGNORE, IGNORE, IGNORE], [4, 4, IGNORE, 3]])
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    assert torch.equal(Accelerators().loss_fn(logits, y), ref)
    assert torch.equal(softmax_cross_entropy(logits, y, "none")[0, 0], torch.tensor(0.0))


# --- weight-decay schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, {0: 1.0, 500: 1.0}),
        (WDSchedule("constant", end=0.5), {0: 0.5, 10**6: 0.5}),
        (WDSchedule("warmup", steps=100), {0: 0.0, 25: 0.25, 100: 1.0, 1000: 1.0}),
        (WDSchedule("step", steps=10, start=1.0, end=3.0), {0: 1.0, 9: 1.0, 10: 3.0, 99: 3.0}),
        (WDSchedule("cosine", steps=10, start=1.0, end=0.0), {0: 1.0, 5: 0.5, 10: 0.0, 20: 0.0}),
    ],
)
def test_wd_multiplier(schedule, expected):
    for step, value in expected.items():
        assert wd_multiplier(schedule, step) == pytest.approx(value, abs=1e-12)


def test_wd_schedule_sets_group_decay_and_survives_optimizer_state():
    p, q = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([{"params": [p], "weight_decay": 0.2}, {"params": [q], "weight_decay": 0.0}])
    acc = Accelerators(AcceleratorConfig(wd_schedule=WDSchedule("warmup", steps=4)))
    acc.before_step(opt, 1)
    assert [g["weight_decay"] for g in opt.param_groups] == [pytest.approx(0.05), 0.0]
    saved = copy.deepcopy(opt.state_dict())
    fresh = torch.optim.AdamW([{"params": [p], "weight_decay": 0.2}, {"params": [q], "weight_decay": 0.0}])
    fresh.load_state_dict(saved)  # resumed: the base is 0.2, not the 0.05 of the saved step
    acc.before_step(fresh, 3)
    assert fresh.param_groups[0]["weight_decay"] == pytest.approx(0.15)
    set_weight_decay(fresh, 2.0)
    assert fresh.param_groups[0]["weight_decay"] == pytest.approx(0.4)


# --- config and entry point -----------------------------------------------------------------------------


def test_defaults_are_off():
    cfg = AcceleratorConfig.from_dict({})
    assert cfg == AcceleratorConfig() and not cfg.active
    acc = Accelerators(cfg)
    m = Two()
    set_grads(m, [1.0, 2.0], 3.0)
    acc.after_backward(m)
    assert grads(m) == ([1.0, 2.0], 3.0)
    assert acc.state_dict() == {"grokfast": None}


def test_config_from_dict_nested():
    cfg = AcceleratorConfig.from_dict(
        {
            "grokfast": {"kind": "ma", "window": 50},
            "perp_grad": True,
            "loss": "stablemax",
            "wd_schedule": {"kind": "cosine", "steps": 1000, "start": 1.0, "end": 0.1},
        },
        where="training.accelerators",
    )
    assert cfg.grokfast == GrokfastConfig(kind="ma", window=50) and cfg.grokfast.amplification == 5.0
    assert cfg.wd_schedule == WDSchedule("cosine", 1000, 1.0, 0.1) and cfg.active
    assert AcceleratorConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({"loss": "sparsemax"}, "t.acc.loss="),
        ({"perp_grad": 1}, "t.acc.perp_grad="),
        ({"grokfast": {"kind": "kalman"}}, "t.acc.grokfast.kind="),
        ({"grokfast": {"alpha": 1.0}}, "t.acc.grokfast.alpha="),
        ({"grokfast": {"lam": -1.0}}, "t.acc.grokfast.lam="),
        ({"grokfast": {"window": 0}}, "t.acc.grokfast.window="),
        ({"grokfast": {"beta": 0.5}}, "t.acc.grokfast: unknown key 'beta'"),
        ({"grokfast": "ema"}, "t.acc.grokfast="),
        ({"wd_schedule": {"steps": 10}}, "t.acc.wd_schedule.kind"),
        ({"wd_schedule": {"kind": "linear"}}, "t.acc.wd_schedule.kind="),
        ({"wd_schedule": {"kind": "warmup"}}, "t.acc.wd_schedule.steps="),
        ({"wd_schedule": {"kind": "step", "steps": 5, "end": -1.0}}, "t.acc.wd_schedule.end="),
        ({"wd_shedule": None}, "t.acc: unknown key 'wd_shedule'"),
    ],
)
def test_config_errors_name_the_key(d, key):
    with pytest.raises(ValueError) as err:
        AcceleratorConfig.from_dict(d, where="t.acc")
    assert str(err.value).startswith(key)


def test_accelerators_order_filter_then_perp_grad():
    m = Two()
    acc = Accelerators(AcceleratorConfig(grokfast=GrokfastConfig(alpha=0.5, lam=1.0), perp_grad=True))
    set_grads(m, [2.0, 1.0], 5.0)
    acc.after_backward(m)
    # filter: g = 2 g1 = ([4, 2], 10); ⊥Grad on a = (1, -2): a.g = 0, unchanged; on scalar b: parallel -> 0
    assert grads(m) == ([4.0, 2.0], 0.0)
    assert acc.filter.mu["a"].tolist() == [2.0, 1.0]  # the filter kept the raw gradient


def test_accelerated_training_step_runs():
    """A few steps of a tiny model with everything on: finite loss, decay scheduled, state saved."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 8), nn.Linear(8, 5))
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    cfg = AcceleratorConfig.from_dict(
        {
            "grokfast": {},
            "perp_grad": True,
            "loss": "stablemax",
            "wd_schedule": {"kind": "warmup", "steps": 2},
        }
    )
    acc = Accelerators(cfg)
    x = torch.tensor([[0, 1, 2], [3, 4, 0]])
    y = torch.tensor([[IGNORE, IGNORE, 3], [IGNORE, IGNORE, 1]])
    losses = []
    for step in range(3):
        loss = acc.loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        acc.after_backward(model)
        acc.before_step(opt, step)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.1)
    assert set(acc.state_dict()["grokfast"]["mu"]) == {"0.weight", "1.weight", "1.bias"}
