"""The trainer: answer-only targets, sampling, optimizer groups, schedule, determinism, learning."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from grokbench.models import build_model, count_params
from grokbench.tasks.base import read_dataset
from grokbench.train.config import EvalSchedule, TrainConfig
from grokbench.train.data import IGNORE, build_tensors
from grokbench.train.run import run
from grokbench.train.trainer import BatchSampler, make_optimizer, train

from .conftest import TINY_MODEL, TINY_TRAINING


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
    assert saved["run_id"] == "a/gpt/default/3" == info["run_id"]
    assert saved["cell"] == cell
    vocab_size = len(read_dataset(tiny_dataset_path).vocab)
    expected = count_params(build_model(TINY_MODEL, vocab_size, saved["block_size"]))
    assert saved["n_params"] == expected
    assert saved["config"]["training"]["steps"] == TINY_TRAINING["steps"]
    assert saved["inputs"][str(tiny_dataset_path)]
    assert saved["code_fingerprint"] and saved["packages"]["torch"]
    ckpt = torch.load(tmp_path / "model.pt")
    assert ckpt["step"] == TINY_TRAINING["steps"]
    # no temporary files left behind by the atomic writes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


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
