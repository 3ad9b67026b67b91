"""The trainer: answer-only targets, sampling, optimizer groups, schedule, determinism, learning."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from grokbench.grid import Cell
from grokbench.models import build_model, count_params
from grokbench.tasks.base import read_dataset
from grokbench.train import trainer
from grokbench.train.config import EvalSchedule, TrainConfig
from grokbench.train.data import IGNORE, build_tensors
from grokbench.train.run import run
from grokbench.train.trainer import BatchSampler, make_optimizer, train

from .conftest import TINY_MODEL, TINY_TRAINING
from .helpers import assert_close, drive_optimizer


def test_targets_are_answer_tokens_only(tiny_dataset_path):
    ds = read_dataset(tiny_dataset_path)
    t = build_tensors(ds, eval_max_size=10_000)
    for i in (0, len(ds.facts) - 1):
        inp, ans = list(ds.facts["input_ids"][i]), list(ds.facts["answer_ids"][i])
        seq = inp + ans
        assert t.x[i, : len(seq) - 1].tolist() == seq[:-1]
        targets = t.y[i][t.y[i] != IGNORE].tolist()
        assert targets == ans
        # the answer is predicted from the position of the last input token on
        assert (t.y[i, : len(inp) - 1] == IGNORE).all()


def test_eval_splits(tiny_dataset_path):
    ds = read_dataset(tiny_dataset_path)
    t = build_tensors(ds, eval_max_size=30)
    assert set(t.eval_sets) == {
        "train_atomic_id",
        "train_atomic_ood",
        "train_inferred_id",
        "test_inferred_id",
        "test_inferred_ood",
    }
    split = ds.facts["split"].to_numpy()
    assert all(len(v) <= 30 for v in t.eval_sets.values())
    assert (split[t.eval_sets["test_inferred_ood"].numpy()] == "test_inferred_ood").all()
    assert (split[t.train_inferred.numpy()] == "train").all()
    # a fixed subsample: the same on every call
    assert torch.equal(build_tensors(ds, 30).eval_sets["train_inferred_id"], t.eval_sets["train_inferred_id"])


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_batch_sampler_atomic_fraction(tiny_dataset_path, fraction):
    t = build_tensors(read_dataset(tiny_dataset_path), 64)
    sampler = BatchSampler(t, TrainConfig(batch_size=40, atomic_fraction=fraction), seed=0)
    idx = sampler()
    assert len(idx) == 40
    n_atomic = int(torch.isin(idx, t.train_atomic).sum())
    assert n_atomic == round(fraction * 40)
    assert torch.isin(idx, torch.cat([t.train_atomic, t.train_inferred])).all()


def test_batch_sampler_uniform(tiny_dataset_path):
    t = build_tensors(read_dataset(tiny_dataset_path), 64)
    idx = BatchSampler(t, TrainConfig(batch_size=4000, atomic_fraction=None), seed=0)()
    share = float(torch.isin(idx, t.train_atomic).float().mean())
    expected = len(t.train_atomic) / (len(t.train_atomic) + len(t.train_inferred))
    assert abs(share - expected) < 0.03


def test_no_weight_decay_on_biases_and_norms():
    model = build_model(TINY_MODEL, vocab_size=20, block_size=6)
    cfg = TrainConfig(weight_decay=0.1, warmup_steps=4, lr=1e-3)
    opt, sched = make_optimizer(model, cfg, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"])
    assert {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]} == {"weight", "bias"}
    assert all("ln" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
    # linear warmup to lr, then constant
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3])


def test_eval_schedule_dense_then_sparse():
    assert EvalSchedule(dense_every=10, dense_until=30, every=25).steps(100) == [
        0, 10, 20, 30, 55, 80, 100
    ]  # fmt: skip
    assert EvalSchedule(dense_every=10, dense_until=30, every=25).steps(15) == [0, 10, 15]


def _train(path, seed, **overrides):
    ds = read_dataset(path)
    cfg = TrainConfig.from_dict({**TINY_TRAINING, **overrides})
    t = build_tensors(ds, cfg.eval.max_size)
    return train(lambda: build_model(TINY_MODEL, len(ds.vocab), t.block_size), t, cfg, seed, progress=False)


def test_deterministic_per_seed(tiny_dataset_path):
    a, b = _train(tiny_dataset_path, 0), _train(tiny_dataset_path, 0)
    c = _train(tiny_dataset_path, 1)
    cols = ["step", "split", "loss", "accuracy"]
    pd.testing.assert_frame_equal(a.metrics[cols], b.metrics[cols])
    assert not a.metrics["loss"].equals(c.metrics["loss"])


def test_tiny_run_learns_atomic_facts(tiny_dataset_path):
    """All 48 atomic facts memorized within a few hundred steps (atomic-only batches)."""
    result = _train(tiny_dataset_path, 0, steps=300, atomic_fraction=0.99, lr=1e-2)
    m = result.metrics
    last = m[m["step"] == m["step"].max()].set_index("split")["accuracy"]
    first = m[m["step"] == 0].set_index("split")["accuracy"]
    assert last["train_atomic_id"] == 1.0 and last["train_atomic_ood"] == 1.0
    assert first["train_atomic_id"] < 0.5
    assert set(m.columns) == {"step", "split", "loss", "accuracy", "elapsed"}


def test_run_writes_outputs_and_provenance(tiny_dataset_path, tmp_path):
    cell = {"dataset": "a", "model": "gpt", "training": "default", "seed": 3}
    info = run(tiny_dataset_path, TINY_MODEL, TINY_TRAINING, 3, tmp_path, cell=cell, progress=False)
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.parquet", "model.pt", "run.json"}
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["run_id"] == "a/gpt/default/seed3" == info["run_id"] == Cell("a", "gpt", "default", 3).run_id
    assert saved["cell"] == cell
    vocab_size = len(read_dataset(tiny_dataset_path).vocab)
    expected = count_params(build_model(TINY_MODEL, vocab_size, saved["block_size"]))
    assert saved["n_params"] == expected
    assert saved["config"]["training"]["steps"] == TINY_TRAINING["steps"]
    assert saved["inputs"][str(tiny_dataset_path)]
    assert saved["code_fingerprint"] and saved["packages"]["torch"]
    # what the operators ran (models/backends.py resolved): GPT is attention only
    assert saved["backends"] == {"backend": None, "seq_len": saved["block_size"], "operators": {}}
    ckpt = torch.load(tmp_path / "model.pt")
    assert ckpt["step"] == TINY_TRAINING["steps"]
    # how it ended and what it cost: one segment, the whole run
    assert saved["status"] == "completed"
    assert saved["diverged_step"] is None and saved["diverged_loss"] is None
    assert saved["n_segments"] == 1
    (segment,) = saved["segments"]
    assert segment["ended"] == "completed"
    assert (segment["start_step"], segment["end_step"]) == (0, TINY_TRAINING["steps"])
    assert segment["wall_seconds"] == saved["wall_seconds"] > 0
    assert segment["started"] == saved["started"] <= segment["finished"] <= saved["finished"]
    # no temporary files left behind by the atomic writes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("backend", "operators"),
    [
        ("auto", {"selective_scan": "fast", "short_conv": "fast"}),
        ("torch", {"selective_scan": "torch", "short_conv": "fast"}),
    ],
)
def test_run_records_the_backend_each_operator_ran(tiny_dataset_path, tmp_path, backend, operators):
    """run.json's `backends`: a Mamba on the CPU runs its fast selective scan under "auto"
    (backends.use_fast), the reference loop under "torch"; its causal conv is always Mamba's shifted
    products."""
    spec = {"family": "mamba", "n_layer": 1, "d_model": 16, "d_state": 4, "backend": backend}
    run(tiny_dataset_path, spec, {**TINY_TRAINING, "steps": 2}, 0, tmp_path, progress=False)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["backends"] == {"backend": backend, "seq_len": saved["block_size"], "operators": operators}


def test_compiled_model_trains_like_eager(tiny_dataset_path):
    """`compile: true` runs the same computation (up to float rounding of fused kernels)."""
    eager = _train(tiny_dataset_path, 0, steps=20)
    compiled = _train(tiny_dataset_path, 0, steps=20, compile=True)
    pd.testing.assert_frame_equal(
        compiled.metrics[["step", "split", "loss"]], eager.metrics[["step", "split", "loss"]], rtol=1e-3
    )


def test_no_weight_decay_where_a_family_says_so():
    """Mamba's A_log (2-D), D and dt bias are not decayed, as in the authors' code."""
    model = build_model({"family": "mamba", "n_layer": 1, "d_model": 16}, vocab_size=20, block_size=6)
    opt, _ = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert not [n for n in names if n.endswith(("A_log", ".D", "dt_proj.bias"))]
    assert any(n.endswith("A_log") for n, _ in model.named_parameters())
    assert any(n.endswith("in_proj.weight") for n in names)


# --- divergence: a non-finite training loss stops the run at that step ---------------------------------


class NaNAt(torch.nn.Module):
    """`inner`, with a NaN output at its `at`-th training-mode call (0-based): the training loss of loop step
    `at` is NaN (each step makes one training forward; evaluations run in eval mode)."""

    def __init__(self, inner: torch.nn.Module, at: int):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls - 1 == self.at:
                out = out * float("nan")
        return out


def _train_model(path, seed, wrap=lambda m: m, **overrides):
    ds = read_dataset(path)
    cfg = TrainConfig.from_dict({**TINY_TRAINING, **overrides})
    t = build_tensors(ds, cfg.eval.max_size)
    model_fn = lambda: wrap(build_model(TINY_MODEL, len(ds.vocab), t.block_size))  # noqa: E731
    return train(model_fn, t, cfg, seed, progress=False, desc="a/gpt/default/0")


def _assert_stopped_at(diverged, reference, k):
    """`diverged` stopped at step k: its metrics and weights are those of a run of k steps, bit for bit."""
    assert diverged.diverged_step == k and np.isnan(diverged.diverged_loss)
    assert reference.diverged_step is None and reference.diverged_loss is None
    cols = ["step", "split", "loss", "accuracy"]
    assert diverged.metrics["step"].max() == k
    pd.testing.assert_frame_equal(diverged.metrics[cols], reference.metrics[cols], check_exact=True)
    weights = diverged.model.inner.state_dict()
    for name, ref in reference.model.state_dict().items():
        assert torch.equal(weights[name], ref), name


def test_divergence_stops_the_run_before_the_update(tiny_dataset_path, capsys):
    """CPU: the loss is checked on the host every step; the run stops before the update of step 7, so it
    ends with the weights and metrics (evaluated at step 7) of a run of 7 steps."""
    k = 7  # not an evaluation step: the run is evaluated once more there
    diverged = _train_model(tiny_dataset_path, 0, lambda m: NaNAt(m, k))
    assert "a/gpt/default/0: diverged: the training loss at step 7 is nan" in capsys.readouterr().err
    _assert_stopped_at(diverged, _train_model(tiny_dataset_path, 0, steps=k), k)
    # at an evaluation step, that evaluation (made before the step's update) is the last one
    at_eval = _train_model(tiny_dataset_path, 0, lambda m: NaNAt(m, 10))
    _assert_stopped_at(at_eval, _train_model(tiny_dataset_path, 0, steps=10), 10)


def test_divergence_on_the_device_skips_every_later_update(tiny_dataset_path, monkeypatch):
    """The CUDA path, run on the CPU with fused AdamW: the check stays on the device and fused AdamW skips
    the updates from the divergence on (`found_inf`). With the host never told before the next blocking
    check (the evaluation at step 10), steps 8 and 9 still run, and change nothing: the run ends with the
    weights and metrics of a run of 7 steps."""
    monkeypatch.setattr(trainer, "use_fused", lambda device: True)
    monkeypatch.setattr(trainer.Divergence, "after_step", lambda self: None)  # the host hears nothing
    k = 7
    diverged = _train_model(tiny_dataset_path, 0, lambda m: NaNAt(m, k))
    reference = _train_model(tiny_dataset_path, 0, steps=k)
    assert reference.model.training  # (train() leaves the model in training mode)
    _assert_stopped_at(diverged, reference, k)


def test_diverging_run_writes_its_outputs_and_says_so(tiny_dataset_path, tmp_path, capsys):
    """A learning rate of 1e3 (with weight decay 0.1 the weights are multiplied by -99 each step) overflows
    within a few steps: run.json says diverged and where, metrics and weights are written."""
    cell = {"dataset": "a", "model": "gpt", "training": "hot", "seed": 0}
    training = {**TINY_TRAINING, "lr": 1e3}
    info = run(tiny_dataset_path, TINY_MODEL, training, 0, tmp_path, cell=cell, progress=False)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["status"] == info["status"] == "diverged"
    k = saved["diverged_step"]
    assert isinstance(k, int) and 0 < k < TINY_TRAINING["steps"]
    assert saved["diverged_loss"] in ("nan", "inf", "-inf")
    assert f"a/gpt/hot/seed0: diverged: the training loss at step {k} is" in capsys.readouterr().err
    m = pd.read_parquet(tmp_path / "metrics.parquet")
    assert m["step"].max() == k and (m["step"] == k).sum() == 5  # evaluated at k, every split
    assert torch.load(tmp_path / "model.pt")["step"] == k
    (segment,) = saved["segments"]
    assert segment["ended"] == "diverged" and segment["end_step"] == k and saved["n_segments"] == 1
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.parquet", "model.pt", "run.json"}


def test_diverging_run_exits_0(tiny_dataset_path, tmp_path):
    """The command succeeds, so the pipeline goes on and the summary reports the run."""
    cmd = [
        sys.executable, "-m", "grokbench", "train", "--data", str(tiny_dataset_path),
        "--out-dir", str(tmp_path),
        "--model", json.dumps(TINY_MODEL), "--training", json.dumps({**TINY_TRAINING, "lr": 1e3}),
        "--threads", "1", "--no-progress",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "diverged: the training loss at step" in out.stderr
    assert "diverged at step" in out.stdout
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "diverged"


def test_early_stop_ends_a_run_that_generalized_and_stayed(tiny_dataset_path, tmp_path):
    """With early_stop, the run ends k evaluations after OOD generalization, with the steps an
    uninterrupted run reports; a run that never gets there trains every step."""
    from grokbench.curves import first_stable_step

    long = {**TINY_TRAINING, "steps": 400, "lr": 1e-2, "eval": {"dense_every": 10, "dense_until": 400}}
    full = _train(tiny_dataset_path, 0, **long).metrics
    stop = {"evals": 2, "memorization_threshold": 0.7, "threshold": 0.2}  # what this tiny run reaches
    cut = _train(tiny_dataset_path, 0, **long, early_stop=stop).metrics

    def step_of(m, split, threshold):
        c = m[m["split"] == split].sort_values("step")
        return first_stable_step(c["step"].to_numpy(), c["accuracy"].to_numpy(), threshold)

    ood = step_of(full, "test_inferred_ood", 0.2)
    assert ood is not None and step_of(full, "train_inferred_id", 0.7) is not None
    assert cut["step"].max() < full["step"].max()
    assert step_of(cut, "test_inferred_ood", 0.2) == ood  # the same step as the whole curve's here
    assert (cut["step"].unique() > ood).sum() >= 2  # at least two evaluations after it (and memorized)
    assert step_of(cut, "train_inferred_id", 0.7) == step_of(full, "train_inferred_id", 0.7)
    shared = full[full["step"] <= cut["step"].max()].reset_index(drop=True)
    pd.testing.assert_frame_equal(cut.drop(columns="elapsed"), shared.drop(columns="elapsed"))
    never = _train(tiny_dataset_path, 0, **long, early_stop={"evals": 2, "threshold": 1.0}).metrics
    assert never["step"].max() == 400

    cell = {"dataset": "a", "model": "gpt", "training": "default", "seed": 0}
    info = run(
        tiny_dataset_path, TINY_MODEL, {**long, "early_stop": stop}, 0, tmp_path, cell=cell, progress=False
    )
    assert info["stopped_early"] and info["stopped_step"] == int(cut["step"].max())


FUSED_TOL = 1e-6  # fused vs for-loop AdamW on fp32 weights, same gradients (measured: about 2e-7)


def test_fused_adamw_on_the_cpu_matches_the_default(tiny_dataset_path, monkeypatch):
    """trainer.use_fused is True on the CPU (FUSED_DEVICES, by measurement): torch's fused AdamW gives the
    for-loop implementation's updates within fp32 rounding, on the trainer's two weight-decay groups with
    its warmup schedule (20 steps of the same gradients), and in one training step of the trainer itself.
    (Over many training steps the two drift apart as any two roundings do: 1e-3 relative on a bias after
    30 steps, through Adam's division by small second moments.)"""
    assert trainer.use_fused(torch.device("cpu"))
    cfg = TrainConfig.from_dict({**TINY_TRAINING, "weight_decay": 0.1})
    weights = {}
    for fused in (True, False):
        monkeypatch.setattr(trainer, "use_fused", lambda device, fused=fused: fused)
        torch.manual_seed(0)
        model = build_model(TINY_MODEL, 16, 8)
        opt, sched = make_optimizer(model, cfg, torch.device("cpu"))
        assert opt.defaults["fused"] is fused
        drive_optimizer(opt, sched, list(model.parameters()), steps=20)
        weights[fused] = model.state_dict()
    worst = max(assert_close(f"fused {k}", w, weights[True][k], FUSED_TOL) for k, w in weights[False].items())
    print(f"fused vs for-loop AdamW, 20 steps: largest relative difference {worst:.2e}")
    one_step = {}
    for fused in (True, False):
        monkeypatch.setattr(trainer, "use_fused", lambda device, fused=fused: fused)
        one_step[fused] = _train_model(tiny_dataset_path, 0, steps=1, weight_decay=0.1, grad_clip=0.5)
    for k, w in one_step[False].model.state_dict().items():
        assert_close(f"one training step {k}", w, one_step[True].model.state_dict()[k], FUSED_TOL)
