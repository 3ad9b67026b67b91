"""Packed training (train/packed.py): several seeds trained together give what each seed gives alone.

Models are float64, so packed and separate runs differ only by rounding: the vectorized matmuls and
reductions sum in another order. Errors are max |separate - packed| / max |separate| per weight tensor and
per metrics column. Tolerances: WEIGHT_TOL for the final weights (measured: <= 2e-13 after 30 steps);
METRIC_TOL for the evaluation loss and accuracy, whose cross-entropy both trainers compute in float32
(`logits.float()`), summed in another order (measured: <= 2e-7). The errors are printed (pytest -s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grokbench.models import build_model
from grokbench.tasks.base import read_dataset
from grokbench.train import trainer
from grokbench.train.accelerators import softmax_cross_entropy
from grokbench.train.config import TrainConfig
from grokbench.train.data import build_tensors
from grokbench.train.packed import Packed, clip_grad_norms_, train_packed
from grokbench.train.trainer import BatchSampler, decays, train

from .conftest import TINY_MODEL, TINY_TRAINING
from .helpers import assert_close, drive_optimizer

WEIGHT_TOL = 1e-10
METRIC_TOL = 1e-6
SEEDS = [3, 0, 1]  # not sorted: results come back in this order
MODELS = {
    "gpt": TINY_MODEL,
    "llama": {"family": "llama", "n_layer": 1, "d_model": 32, "n_head": 2},
}
# the recurrent families' operators (their fast forms under vmap, backend auto on the CPU), smaller and
# shorter (RECURRENT_STEPS, 2 seeds) to stay fast (measured: weights <= 5e-16 after 10 steps)
RECURRENT = {
    "rwkv7": {"family": "rwkv7", "n_layer": 1, "d_model": 16, "head_size": 8},
    "mamba": {"family": "mamba", "n_layer": 1, "d_model": 16, "d_state": 4},
    "mamba2": {"family": "mamba2", "n_layer": 1, "d_model": 32, "headdim": 16, "d_state": 4},
}
RECURRENT_STEPS = 10
# a small clip threshold, so that clipping acts (checked below) and each model's own norm matters
TRAINING = {**TINY_TRAINING, "steps": 30, "grad_clip": 0.05, "weight_decay": 0.1}


def _setup(path, spec, **overrides):
    ds = read_dataset(path)
    cfg = TrainConfig.from_dict({**TRAINING, **overrides})
    t = build_tensors(ds, cfg.eval.max_size)

    def model_fn():
        return build_model(spec, len(ds.vocab), t.block_size).double()

    return model_fn, t, cfg


def _first_grad_norm(model_fn, t, cfg, seed) -> float:
    torch.manual_seed(seed)
    model = model_fn().to(cfg.device)
    t = t.to(torch.device(cfg.device))
    idx = BatchSampler(t, cfg, seed)().to(cfg.device)
    softmax_cross_entropy(model(t.x[idx]), t.y[idx]).backward()
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))


@pytest.mark.parametrize("family", list(MODELS))
def test_packed_matches_separate_runs(tiny_dataset_path, family):
    check_packed_matches_separate_runs(tiny_dataset_path, family, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", list(MODELS))
def test_packed_matches_separate_runs_cuda(tiny_dataset_path, family):
    """The CUDA paths (indices drawn ahead through pinned memory, fused AdamW on the stacked weights), in
    float64 without autocast."""
    check_packed_matches_separate_runs(tiny_dataset_path, family, "cuda")


@pytest.mark.parametrize("family", list(RECURRENT))
def test_packed_recurrent_families_match_separate_runs(tiny_dataset_path, family):
    check_packed_matches_separate_runs(
        tiny_dataset_path, family, "cpu", RECURRENT[family], seeds=SEEDS[:2], steps=RECURRENT_STEPS
    )


def check_packed_matches_separate_runs(
    tiny_dataset_path, family, device, spec=None, seeds=SEEDS, **overrides
):
    spec = MODELS[family] if spec is None else spec
    model_fn, t, cfg = _setup(tiny_dataset_path, spec, device=device, precision="fp32", **overrides)
    assert all(_first_grad_norm(model_fn, t, cfg, s) > cfg.grad_clip for s in seeds)  # clipping acts
    packed = train_packed(model_fn, t, cfg, seeds, progress=False)
    assert len(packed) == len(seeds)
    worst = 0.0
    for seed, got in zip(seeds, packed):
        ref = train(model_fn, t, cfg, seed, progress=False)
        assert got.metrics[["step", "split"]].equals(ref.metrics[["step", "split"]])
        for col in ("loss", "accuracy"):
            a, b = (torch.tensor(r.metrics[col].to_numpy()) for r in (ref, got))
            worst = max(worst, assert_close(f"{family} seed {seed} {col}", a, b, METRIC_TOL))
        ref_sd, got_sd = ref.model.state_dict(), got.model.state_dict()
        assert ref_sd.keys() == got_sd.keys()
        for name, w in ref_sd.items():
            worst = max(worst, assert_close(f"{family} seed {seed} {name}", w, got_sd[name], WEIGHT_TOL))
        # the result owns its weights (not a view of the stacked tensors)
        for p in got.model.parameters():
            assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
    print(f"{family} on {device}: largest relative difference {worst:.2e}")
    # the seeds really differ (a mix-up of models would not go unseen)
    losses = [tuple(r.metrics["loss"]) for r in packed]
    assert len(set(losses)) == len(seeds)


FUSED_TOL = 1e-6  # fused vs for-loop AdamW on fp32 weights, same gradients (measured: about 2e-7)


def test_fused_adamw_on_stacked_weights_matches_the_default_and_the_solo_update(monkeypatch):
    """Packed training's AdamW (trainer.adamw over the stacked tensors, its decay groups as
    train_packed builds them), fused as on the CPU now (trainer.use_fused), against the for-loop
    implementation on the same stacked gradients, and each model's slice against a solo fused AdamW of
    that model given that slice's gradients: equal within fp32 rounding (20 steps with warmup)."""
    cfg = TrainConfig.from_dict({**TRAINING, "weight_decay": 0.1})
    cpu = torch.device("cpu")

    def fresh() -> list[torch.nn.Module]:
        out = []
        for seed in (3, 0):
            torch.manual_seed(seed)
            out.append(build_model(TINY_MODEL, 16, 8))
        return out

    def stacked_run(fused: bool) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(trainer, "use_fused", lambda device: fused)
        models = fresh()
        packed = Packed(models, lambda: build_model(TINY_MODEL, 16, 8))
        named = [(n, p) for n, p in models[0].named_parameters() if p.requires_grad]
        decay = [packed.params[n] for n, p in named if decays(p)]
        no_decay = [packed.params[n] for n, p in named if not decays(p)]
        opt, sched = trainer.adamw(decay, no_decay, cfg, cpu)
        assert opt.defaults["fused"] is fused
        drive_optimizer(opt, sched, [packed.params[n] for n, _ in named], steps=20)
        return {n: packed.params[n].detach().clone() for n, _ in named}

    assert trainer.use_fused(cpu)
    fused, plain = stacked_run(True), stacked_run(False)
    worst = max(assert_close(f"stacked {n}", w, fused[n], FUSED_TOL) for n, w in plain.items())
    print(f"fused vs for-loop AdamW on stacked weights: largest relative difference {worst:.2e}")
    # each slice: a solo fused AdamW on that model with that slice's gradients (the same random draws)
    monkeypatch.setattr(trainer, "use_fused", lambda device: True)
    names = list(fused)
    solo_models = fresh()
    solo_params = [dict(m.named_parameters()) for m in solo_models]
    opts = [trainer.make_optimizer(m, cfg, cpu) for m in solo_models]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for n in names:
            g = torch.randn(fused[n].shape, generator=gen, dtype=fused[n].dtype) * 1e-2
            for m, params in enumerate(solo_params):
                params[n].grad = g[m].clone()
        for opt, sched in opts:
            opt.step()
            sched.step()
    for m, params in enumerate(solo_params):
        for n in names:
            assert_close(f"model {m} {n}", params[n].detach(), fused[n][m], FUSED_TOL)


def test_packed_tied_weights_stay_tied(tiny_dataset_path):
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL, steps=3)
    (result,) = train_packed(model_fn, t, cfg, [5], progress=False)
    assert result.model.lm_head.weight is result.model.transformer.wte.weight


def test_clip_grad_norms_is_per_model():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, 5, generator=gen, dtype=torch.float64), torch.randn(3, 7, generator=gen)]
    grads[0][1] *= 1e-3  # model 1 below the threshold: left unchanged
    max_norm = 1.0
    expected = []
    for m in range(3):
        own = [g[m].clone() for g in grads]
        params = [torch.zeros_like(g, requires_grad=True) for g in own]
        for p, g in zip(params, own):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        expected.append([p.grad for p in params])
    clip_grad_norms_(grads, max_norm)
    for m in range(3):
        for g, e in zip(grads, expected[m]):
            torch.testing.assert_close(g[m], e, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"accelerators": {"perp_grad": True}}, "accelerators"),
        ({"accelerators": {"grokfast": {"kind": "ema"}}}, "accelerators"),
    ],
)
def test_unsupported_options_raise(tiny_dataset_path, overrides, match):
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL, **overrides)
    with pytest.raises(ValueError, match=match):
        train_packed(model_fn, t, cfg, [0, 1], progress=False)


def test_dropout_and_seeds_raise(tiny_dataset_path):
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL)
    with pytest.raises(ValueError, match="repeat"):
        train_packed(model_fn, t, cfg, [0, 0], progress=False)
    drop_fn, _, _ = _setup(tiny_dataset_path, {**TINY_MODEL, "dropout": 0.1})
    with pytest.raises(ValueError, match="dropout"):
        train_packed(drop_fn, t, cfg, [0, 1], progress=False)


def test_packed_on_step_and_order(tiny_dataset_path):
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL, steps=4)
    seen: list[int] = []
    a = train_packed(model_fn, t, cfg, [2, 1], progress=False, on_step=seen.append)
    b = train_packed(model_fn, t, cfg, [1], progress=False)
    assert seen == list(range(cfg.steps))
    np.testing.assert_allclose(a[1].metrics["loss"], b[0].metrics["loss"], rtol=METRIC_TOL)


def test_packed_compiled_trains_like_eager(tiny_dataset_path):
    """`compile: true` packed runs the same computation (up to rounding of fused kernels), like
    tests/test_trainer.py's check of the single-run trainer."""
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL, steps=4)
    fp32 = lambda: model_fn().float()  # noqa: E731  (the compiled path is the one CUDA runs use: fp32 weights)
    eager = train_packed(fp32, t, cfg, [1, 0], progress=False)
    compiled = train_packed(fp32, t, TrainConfig.from_dict({**TRAINING, "steps": 4, "compile": True}), [1, 0],
                            progress=False)  # fmt: skip
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(b.metrics["loss"], a.metrics["loss"], rtol=1e-3)


def _poisoned(model_fn, which: set[int]):
    """`model_fn` whose `which`-th calls (0-based: the seeds in order) build a model with a NaN weight."""
    calls = []

    def build():
        model = model_fn()
        if len(calls) in which:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")
        calls.append(1)
        return model

    return build


def test_a_diverged_seed_does_not_touch_the_others(tiny_dataset_path, capsys):
    """Seed 0 (the second) has a NaN weight: its training loss is NaN from step 0. It is reported diverged
    at 0 with only its step-0 evaluation; the other seeds' metrics and weights are bit for bit those of
    the same packed training without the NaN."""
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL, steps=20)
    clean = train_packed(model_fn, t, cfg, SEEDS, progress=False)
    poisoned = train_packed(_poisoned(model_fn, {1}), t, cfg, SEEDS, progress=False, desc="a/gpt")
    assert "a/gpt seed 0: diverged: the training loss at step 0 is nan" in capsys.readouterr().err
    bad = poisoned[1]
    assert bad.diverged_step == 0 and np.isnan(bad.diverged_loss)
    assert set(bad.metrics["step"]) == {0}
    for m in (0, 2):
        assert poisoned[m].diverged_step is None and poisoned[m].diverged_loss is None
        cols = ["step", "split", "loss", "accuracy"]
        assert poisoned[m].metrics[cols].equals(clean[m].metrics[cols])
        for name, w in clean[m].model.state_dict().items():
            assert torch.equal(poisoned[m].model.state_dict()[name], w), name


def test_packed_stops_when_every_seed_diverged(tiny_dataset_path):
    model_fn, t, cfg = _setup(tiny_dataset_path, TINY_MODEL, steps=40)
    seen: list[int] = []
    results = train_packed(_poisoned(model_fn, {0, 1}), t, cfg, [0, 1], progress=False, on_step=seen.append)
    assert [r.diverged_step for r in results] == [0, 0]
    assert seen == list(range(10))  # stopped at the first evaluation after (step 10), not at 40
