"""Packs as the pipeline's unit of training (grokbench.grid.packs, grokbench.train.pack, study validation).

A pack's member outputs equal a single run's. In float64 (models made double here), they differ only by
the rounding of batched kernels: weights by <= ~1e-13 relative (model.pt stores float32, so the files
agree to float32 rounding: FILE_TOL), metrics by the float32 cross-entropy both trainers compute
(METRIC_TOL, as tests/test_packed.py). In fp32 the rounding differences grow over training as those of any
two reductions in another order do; measured on this tiny GPT over 40 steps: metrics <= 1e-7, every weight
<= 7e-7 relative to its tensor's largest, but for the attention's key bias (no gradient in exact
arithmetic: its values are rounding noise) at 3e-3, all weights as one vector 1.2e-4 relative to the
largest weight: fp32 compares all weights as one vector (FP32_WEIGHT_TOL) and metrics (FP32_METRIC_TOL).
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from grokbench import grid, study
from grokbench.train import pack as pack_mod
from grokbench.train import run as run_mod
from grokbench.train.checkpoints import Checkpoints, WeightCheckpoints, load_checkpoint
from grokbench.train.config import TrainConfig
from grokbench.train.packed import train_packed
from grokbench.train.trainer import train

from .conftest import TINY_CONFIG, TINY_MODEL, TINY_TRAINING
from .helpers import assert_close

METRIC_TOL = 1e-6
FILE_TOL = 1e-6  # float64 weights stored as float32: at most a float32 rounding apart
FP32_WEIGHT_TOL = 1e-3
FP32_METRIC_TOL = 1e-5
CELL = {"dataset": "a", "model": "gpt", "training": "default"}


def _double(monkeypatch):
    """Both trainers build float64 models."""
    build = run_mod.build_model

    def double(*args, **kwargs):
        return build(*args, **kwargs).double()

    monkeypatch.setattr(run_mod, "build_model", double)
    monkeypatch.setattr(pack_mod, "build_model", double)


def _compare_outputs(solo_dir, pack_dir, weight_tol, metric_tol, whole=False):
    a, b = (pd.read_parquet(d / "metrics.parquet") for d in (solo_dir, pack_dir))
    assert a[["step", "split"]].equals(b[["step", "split"]])
    for col in ("loss", "accuracy"):
        assert_close(col, torch.tensor(a[col].to_numpy()), torch.tensor(b[col].to_numpy()), metric_tol)
    wa, wb = (load_checkpoint(d / "model.pt") for d in (solo_dir, pack_dir))
    assert wa["step"] == wb["step"] and wa["model"].keys() == wb["model"].keys()
    if whole:  # all weights as one vector, relative to the largest weight
        flat = [torch.cat([w.flatten() for w in state["model"].values()]) for state in (wa, wb)]
        assert_close("weights", *flat, weight_tol)
        return
    for name, w in wa["model"].items():
        assert_close(name, w, wb["model"][name], weight_tol)


def test_pack_outputs_equal_single_runs_float64(tmp_path, tiny_dataset_path, monkeypatch):
    _double(monkeypatch)
    training = {**TINY_TRAINING, "steps": 20, "precision": "fp32", "device": "cpu", "grad_clip": 0.05}
    seeds = [3, 2]  # not sorted: outputs go to the folder given for each seed
    cells = [{**CELL, "seed": s} for s in seeds]
    pack_dirs = [tmp_path / "pack" / f"seed{s}" for s in seeds]
    infos = pack_mod.run_pack(tiny_dataset_path, TINY_MODEL, training, seeds, pack_dirs, cells,
                              "a/gpt/default/pack2-3", 2, progress=False)  # fmt: skip
    for seed, cell, pack_dir, info in zip(seeds, cells, pack_dirs, infos):
        solo_dir = tmp_path / "solo" / f"seed{seed}"
        solo = run_mod.run(tiny_dataset_path, TINY_MODEL, training, seed, solo_dir, cell=cell, progress=False)
        _compare_outputs(solo_dir, pack_dir, FILE_TOL, METRIC_TOL)
        on_disk = json.loads((pack_dir / "run.json").read_text())
        assert on_disk == json.loads(json.dumps(info))
        assert on_disk["pack"] == {"id": "a/gpt/default/pack2-3", "size": 2, "seeds": seeds,
                                   "members": ["a/gpt/default/seed3", "a/gpt/default/seed2"]}  # fmt: skip
        same = ("run_id", "cell", "config", "status", "n_params", "vocab_size", "block_size", "stopped_step")
        solo = json.loads(json.dumps(solo))
        assert {k: on_disk[k] for k in same} == {k: solo[k] for k in same}
        assert "pack" not in solo
        assert sorted(p.name for p in pack_dir.iterdir()) == ["metrics.parquet", "model.pt", "run.json"]


def test_pack_checkpoints_equal_single_runs_float64(tmp_path, tiny_dataset_path, monkeypatch):
    """Weights across training in a pack: each member keeps the checkpoints its single run keeps (same
    steps, reasons, weights), in its own folder, each file holding its slice only."""
    _double(monkeypatch)
    training = {**TINY_TRAINING, "steps": 20, "precision": "fp32", "device": "cpu"}
    training["checkpoints"] = {"log_spaced": 2, "memorization_threshold": 0.3, "threshold": 0.2}
    seeds = [1, 0]
    cells = [{**CELL, "seed": s} for s in seeds]
    pack_dirs = [tmp_path / "pack" / f"seed{s}" for s in seeds]
    infos = pack_mod.run_pack(tiny_dataset_path, TINY_MODEL, training, seeds, pack_dirs, cells, "p", 2,
                              progress=False)  # fmt: skip
    for seed, cell, pack_dir, info in zip(seeds, cells, pack_dirs, infos):
        solo_dir = tmp_path / "solo" / f"seed{seed}"
        solo = run_mod.run(tiny_dataset_path, TINY_MODEL, training, seed, solo_dir, cell=cell, progress=False)
        steps = [(c["step"], c["reasons"]) for c in info["checkpoints"]]
        assert steps == [(c["step"], c["reasons"]) for c in solo["checkpoints"]]
        assert len(steps) >= 3 and any("memorization" in reasons for _, reasons in steps)  # a transition
        for c in info["checkpoints"]:
            a, b = solo_dir / c["file"], pack_dir / c["file"]
            assert abs(a.stat().st_size - b.stat().st_size) < 0.01 * a.stat().st_size  # not the whole pack
            wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
            for name, w in wa.items():
                assert_close(f"step {c['step']} {name}", w, wb[name], FILE_TOL)


def test_pack_outputs_fp32_within_tolerance(tmp_path, tiny_dataset_path):
    training = {**TINY_TRAINING, "precision": "fp32", "device": "cpu"}
    cells = [{**CELL, "seed": s} for s in (0, 1)]
    dirs = [tmp_path / "pack" / f"seed{s}" for s in (0, 1)]
    pack_mod.run_pack(tiny_dataset_path, TINY_MODEL, training, [0, 1], dirs, cells, "p", 2, progress=False)
    solo_dir = tmp_path / "solo"
    run_mod.run(tiny_dataset_path, TINY_MODEL, training, 1, solo_dir, cell=cells[1], progress=False)
    _compare_outputs(solo_dir, dirs[1], FP32_WEIGHT_TOL, FP32_METRIC_TOL, whole=True)


def test_early_stop_per_member(tiny_dataset_path):
    """Each member stops at its own step, with the metrics and weights of a single run stopped there; the
    pack trains on while one still trains."""
    from grokbench.models import build_model
    from grokbench.tasks.base import read_dataset
    from grokbench.train.data import build_tensors

    stop = {"evals": 1, "memorization_threshold": 0.35, "threshold": 0.0}
    cfg = TrainConfig.from_dict({**TINY_TRAINING, "steps": 40, "early_stop": stop})
    ds = read_dataset(tiny_dataset_path)
    t = build_tensors(ds, cfg.eval.max_size)

    def model_fn():
        return build_model(TINY_MODEL, len(ds.vocab), t.block_size).double()

    seeds = [1, 0]  # stop at steps 20 and 10
    seen: list[int] = []
    packed = train_packed(model_fn, t, cfg, seeds, progress=False, on_step=seen.append)
    solo = [train(model_fn, t, cfg, s, progress=False) for s in seeds]
    stops = [r.stopped_step for r in solo]
    assert [r.stopped_step for r in packed] == stops
    assert len(set(stops)) > 1, stops  # the members stop at different steps (else the test shows little)
    assert len(seen) == max(s if s is not None else cfg.steps for s in stops)  # the last one sets the end
    for p, s in zip(packed, solo):
        assert p.metrics[["step", "split"]].equals(s.metrics[["step", "split"]])
        for col in ("loss", "accuracy"):
            a, b = (torch.tensor(r.metrics[col].to_numpy()) for r in (s, p))
            assert_close(col, a, b, METRIC_TOL)
        for name, w in s.model.state_dict().items():
            assert_close(name, w, p.model.state_dict()[name], 1e-10)


def _config(seeds, size, **training):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["grid"][0]["seeds"] = seeds
    cfg["training"]["default"] = {**TINY_TRAINING, **training}
    if size is not None:
        cfg["pack"] = {"size": size}
    return study.validate(cfg)


def test_packs_are_seed_blocks():
    packs = grid.packs(_config([0, 1, 2, 5, 4], 2))
    assert [(p.pack_id, p.seeds) for p in packs] == [
        ("a/gpt/default/pack0-1", (0, 1)),
        ("a/gpt/default/pack2-3", (2,)),
        ("a/gpt/default/pack4-5", (4, 5)),
    ]
    assert packs[0].cells == [grid.Cell("a", "gpt", "default", 0), grid.Cell("a", "gpt", "default", 1)]
    # adding seeds in new blocks leaves the existing packs as they are
    more = grid.packs(_config([0, 1, 2, 5, 4, 6, 7], 2))
    assert set(packs) - set(more) == set() and len(more) == 4
    # size 1 (the default, also when unset): one pack per run
    unset = _config([0, 1], None)
    assert "pack" not in unset and [p.seeds for p in grid.packs(unset)] == [(0,), (1,)]


@pytest.mark.parametrize(
    "training, model, message",
    [
        ({"accelerators": {"perp_grad": True}}, {}, r"default.accelerators .*not supported in a pack"),
        ({"accelerators": {"loss": "stablemax"}}, {}, "accelerators"),
        ({"accelerators": {"grokfast": {"kind": "ema"}}}, {}, "accelerators"),
        ({}, {"dropout": 0.1}, r"models.gpt.dropout=0.1 is not supported in a pack"),
        ({}, {"family": "mamba", "n_layer": 1, "d_model": 32, "backend": "kernels"}, "backend='kernels'"),
    ],
)
def test_unsupported_in_a_pack_rejected_by_name(training, model, message):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["grid"][0]["seeds"] = [0, 1]
    cfg["pack"] = {"size": 2}
    cfg["training"]["default"] = {**TINY_TRAINING, **training}
    cfg["models"]["gpt"] = model if "family" in model else {**TINY_MODEL, **model}
    with pytest.raises(study.ConfigError, match=r"config.pack.size=2: pack a/gpt/default/pack0-1") as err:
        study.validate(cfg)
    assert err.match(message)
    cfg["grid"][0]["seeds"] = [0, 2]  # one seed per block: single runs, anything goes
    study.validate(cfg)
    cfg["pack"] = {"size": 1}
    cfg["grid"][0]["seeds"] = [0, 1]
    study.validate(cfg)


def test_pack_size_schema():
    with pytest.raises(study.ConfigError, match=r"config.pack.size: 0 is less than the minimum of 1"):
        _config([0], 0)
    with pytest.raises(study.ConfigError, match="unknown key 'sise'"):
        study.validate({**copy.deepcopy(TINY_CONFIG), "pack": {"sise": 2}})
    assert _config([0], None).get("pack") is None and _config([0], 3)["pack"] == {"size": 3}


def test_pack_resumes_bit_for_bit(tmp_path, tiny_dataset_path):
    """A pack stopped by SIGTERM saves its state and raises Interrupted; resumed, it ends with the metrics
    and weights of an uninterrupted pack, bit for bit (early stop and evaluations on both sides)."""
    import os
    import signal

    from grokbench.models import build_model
    from grokbench.tasks.base import read_dataset
    from grokbench.train.data import build_tensors
    from grokbench.train.resume import Checkpointer, Interrupted

    stop = {"evals": 1, "memorization_threshold": 0.35, "threshold": 0.0}
    cfg = TrainConfig.from_dict({**TINY_TRAINING, "steps": 20, "early_stop": stop})
    ds = read_dataset(tiny_dataset_path)
    t = build_tensors(ds, cfg.eval.max_size)

    def model_fn():
        return build_model(TINY_MODEL, len(ds.vocab), t.block_size)

    seeds = [1, 0]
    spec = Checkpoints(log_spaced=3)

    def kept(name):  # a new one per process, as run_pack makes them
        return [
            WeightCheckpoints(spec, tmp_path / name / str(s), TINY_MODEL, cfg.eval.steps(cfg.steps))
            for s in seeds
        ]

    ref_weights = kept("ref")
    ref = train_packed(model_fn, t, cfg, seeds, progress=False, weights=ref_weights)
    path = tmp_path / "pack-resume.pt"

    def sigterm_at(k):
        return lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == k else None

    for k in (4, 13):  # stopped twice: before and after evaluations (and seed 0's early stop at 10)
        with pytest.raises(Interrupted):
            train_packed(model_fn, t, cfg, seeds, progress=False, checkpoint=Checkpointer(path, "fp"),
                         on_step=sigterm_at(k), weights=kept("resumed"))  # fmt: skip
        assert path.exists()
    other = Checkpointer(path, "another")  # another configuration's state is ignored
    assert other.load() is None
    checkpoint = Checkpointer(path, "fp")
    got_weights = kept("resumed")
    got = train_packed(model_fn, t, cfg, seeds, progress=False, checkpoint=checkpoint, weights=got_weights)
    ended = [s["ended"] for s in checkpoint.segments(cfg.steps, "completed")]
    assert ended == ["stopped", "stopped", "completed"]
    assert [r.stopped_step for r in ref] == [None, 10]  # seed 0 stopped before the second save
    for a, b in zip(ref, got):
        cols = ["step", "split", "loss", "accuracy"]
        assert a.metrics[cols].equals(b.metrics[cols]) and a.stopped_step == b.stopped_step
        for name, w in a.model.state_dict().items():
            assert torch.equal(w, b.model.state_dict()[name]), name
    # the weights kept across training, restored with the state: the same steps, the same bytes
    for a, b in zip(ref_weights, got_weights):
        assert a.saved and [(e["step"], e["sha256"]) for e in a.saved.values()] == [
            (e["step"], e["sha256"]) for e in b.saved.values()
        ]


def test_diverged_member_ends_as_a_single_run(tiny_dataset_path, monkeypatch):
    """On the CPU a member whose training loss turns non-finite at step k (not an evaluation step) ends as
    a single run does: diverged_step k, metrics ending with an evaluation at k, the weights of step k; the
    others train on. The NaN is injected into seed 1's training loss at step 7 on both sides (a real
    divergence's step depends on rounding), in float64."""
    from grokbench.models import build_model
    from grokbench.tasks.base import read_dataset
    from grokbench.train import accelerators, packed
    from grokbench.train.data import build_tensors

    k, bad_seed = 7, 1
    cfg = TrainConfig.from_dict({**TINY_TRAINING, "steps": 12})  # evaluations at 0, 10, 12
    ds = read_dataset(tiny_dataset_path)
    t = build_tensors(ds, cfg.eval.max_size)

    def model_fn():
        return build_model(TINY_MODEL, len(ds.vocab), t.block_size).double()

    calls = {"n": 0}
    solo_loss, packed_loss = accelerators.LOSS_FUNCTIONS["softmax"], packed.answer_losses

    def nan_at_k(loss):
        calls["n"] += 1
        return loss + float("nan") if calls["n"] == k + 1 else loss

    seeds = [0, 1, 2]
    solo = []
    for seed in seeds:
        calls["n"] = 0
        fn = (lambda lg, y: nan_at_k(solo_loss(lg, y))) if seed == bad_seed else solo_loss
        monkeypatch.setitem(accelerators.LOSS_FUNCTIONS, "softmax", fn)
        solo.append(train(model_fn, t, cfg, seed, progress=False))
    monkeypatch.setitem(accelerators.LOSS_FUNCTIONS, "softmax", solo_loss)
    calls["n"] = 0
    nan = torch.tensor([0.0, float("nan"), 0.0], dtype=torch.float64)

    def packed_nan_at_k(logits, y):  # seed 1's loss, of the pack's (n,) losses
        calls["n"] += 1
        losses = packed_loss(logits, y)
        return losses + nan if calls["n"] == k + 1 else losses

    monkeypatch.setattr(packed, "answer_losses", packed_nan_at_k)
    got = train_packed(model_fn, t, cfg, seeds, progress=False)
    assert [r.diverged_step for r in solo] == [r.diverged_step for r in got] == [None, k, None]
    assert k not in cfg.eval.steps(cfg.steps) and got[1].metrics["step"].max() == k
    for p, s in zip(got, solo):
        assert p.metrics[["step", "split"]].equals(s.metrics[["step", "split"]])
        for col in ("loss", "accuracy"):
            a, b = (torch.tensor(r.metrics[col].to_numpy()) for r in (s, p))
            assert_close(col, a, b, METRIC_TOL)
        for name, w in s.model.state_dict().items():
            assert_close(name, w, p.model.state_dict()[name], 1e-10)
