"""Weights across training (training `checkpoints`, grokbench.train.checkpoints): files at the log-spaced
evaluation steps and at the analysis's transitions, listed with their hashes in run.json, each reproducing
the evaluation recorded at its step, kept across a resume; the settings checked like every other."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from grokbench import study
from grokbench.io import sha256_file
from grokbench.models import count_params
from grokbench.report.analysis import AnalysisConfig, analyze_run
from grokbench.tasks.base import read_dataset
from grokbench.train.checkpoints import (
    CHECKPOINT_DIR,
    Checkpoints,
    WeightCheckpoints,
    checkpoint_file,
    load_checkpoint,
    load_model,
    log_steps,
)
from grokbench.train.config import TrainConfig
from grokbench.train.data import build_tensors
from grokbench.train.resume import Checkpointer, Interrupted
from grokbench.train.run import run
from grokbench.train.trainer import evaluate

from .conftest import TINY_MODEL, TINY_TRAINING

# thresholds this tiny run reaches (as in test_trainer's early stop test), so that every transition happens
THRESHOLDS = {"memorization_threshold": 0.7, "threshold": 0.2}
CHECKPOINTS = {"log_spaced": 5, **THRESHOLDS}
TRAINING = {
    **TINY_TRAINING,
    "steps": 120,
    "lr": 1e-2,
    "device": "cpu",
    "precision": "fp32",  # exact: a loaded checkpoint reproduces its evaluation bit for bit
    "eval": {"dense_every": 10, "dense_until": 120, "max_size": 64},
    "checkpoints": CHECKPOINTS,
}
CELL = {"dataset": "a", "model": "gpt", "training": "default", "seed": 0}
ANALYSIS = AnalysisConfig(**THRESHOLDS)
TRANSITIONS = {
    "memorization": "memorization_step",
    "id": "id_generalization_step",
    "ood": "ood_generalization_step",
}


def _run(data, out, training=TRAINING):
    return run(data, TINY_MODEL, training, 0, out, cell=CELL, progress=False)


@pytest.fixture(scope="module")
def reference(tiny_dataset_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpointed")
    return out, _run(tiny_dataset_path, out)


def test_log_steps_are_evaluation_steps_spread_on_a_log_scale():
    evals = TrainConfig.from_dict(TRAINING).eval.steps(TRAINING["steps"])
    for n in (1, 3, 5, 50):
        steps = log_steps(evals, n, initial=True)
        assert steps[0] == 0 and set(steps) <= set(evals)
        positive = [s for s in evals if s > 0]
        assert len(steps) - 1 <= min(n, len(positive))
        assert steps[1] == positive[0] and (n == 1 or steps[-1] == positive[-1])
        # each log-spaced target has a saved step within half an evaluation gap (on the log scale)
        gap = max(np.diff(np.log(positive)))
        for target in np.linspace(np.log(positive[0]), np.log(positive[-1]), n):
            assert min(abs(np.log(s) - target) for s in steps[1:]) <= gap / 2 + 1e-12
    assert 0 not in log_steps(evals, 3, initial=False)
    assert log_steps(evals, 0, initial=False) == []


def test_checkpoints_on_disk_and_in_run_json(reference):
    out, info = reference
    listed = info["checkpoints"]
    assert listed == json.loads((out / "run.json").read_text())["checkpoints"]
    metrics = pd.read_parquet(out / "metrics.parquet")
    evals = sorted(metrics["step"].unique())
    expected_log = set(log_steps(evals, CHECKPOINTS["log_spaced"], initial=True))
    steps = {c["step"] for c in listed}
    # the transitions are the summary's steps, computed from the metrics by the analysis
    summary = analyze_run(metrics, ANALYSIS)
    transitions = {reason: summary[column] for reason, column in TRANSITIONS.items()}
    assert all(s is not None for s in transitions.values()), "the tiny run should reach every threshold"
    final = TRAINING["steps"]
    assert steps == expected_log | set(transitions.values()) | {final}
    assert sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir()) == sorted(
        checkpoint_file(s).split("/")[-1] for s in steps
    )
    for c in listed:
        assert c["file"] == checkpoint_file(c["step"]) and (out / c["file"]).is_file()
        assert sha256_file(out / c["file"]) == c["sha256"]
        assert info["outputs"][str(out / c["file"])] == c["sha256"]  # audited like every output
        reasons = {r for r, s in transitions.items() if s == c["step"]}
        reasons |= {"log"} if c["step"] in expected_log else set()
        reasons |= {"final"} if c["step"] == final else set()
        assert set(c["reasons"]) == reasons and c["reason"] in reasons
        ckpt = load_checkpoint(out / c["file"])
        assert set(ckpt) == {"model", "model_spec", "step"} and ckpt["step"] == c["step"]
        assert ckpt["model_spec"] == TINY_MODEL
    # the final checkpoint holds the weights of model.pt, in the same layout
    final_ckpt, model_pt = load_checkpoint(out / checkpoint_file(final)), load_checkpoint(out / "model.pt")
    assert set(final_ckpt) == set(model_pt) and final_ckpt["step"] == model_pt["step"]
    assert final_ckpt["model"].keys() == model_pt["model"].keys()
    assert all(torch.equal(final_ckpt["model"][k], model_pt["model"][k]) for k in model_pt["model"])


def test_loaded_checkpoint_reproduces_the_recorded_evaluation(reference, tiny_dataset_path):
    out, info = reference
    cfg = TrainConfig.from_dict(TRAINING)
    t = build_tensors(read_dataset(tiny_dataset_path), cfg.eval.max_size)
    metrics = pd.read_parquet(out / "metrics.parquet")
    for c in info["checkpoints"]:
        model = load_model(out / c["file"], info["vocab_size"], info["block_size"])
        assert count_params(model) == info["n_params"]
        got = evaluate(model, t, cfg.eval.batch_size, contextlib.nullcontext())
        at = metrics[metrics["step"] == c["step"]].set_index("split")
        assert set(got) == set(at.index)
        for split, (loss, acc) in got.items():
            assert acc == at.loc[split, "accuracy"], (c["step"], split)
            assert loss == at.loc[split, "loss"], (c["step"], split)


def test_a_resumed_run_keeps_its_checkpoints(reference, tiny_dataset_path, tmp_path, monkeypatch):
    ref_out, ref = reference
    stop = max(c["step"] for c in ref["checkpoints"] if c["reason"] != "final") // 2 + 5  # mid-run
    before = [c for c in ref["checkpoints"] if c["step"] < stop]
    assert before, "some checkpoint precedes the interruption"
    (tmp_path / CHECKPOINT_DIR).mkdir()
    stale = tmp_path / CHECKPOINT_DIR / "step99999999.pt"  # of an earlier configuration: not listed
    stale.write_bytes(b"old")
    due = Checkpointer.due

    def stop_at(self, step):  # a stop signal arriving at `stop`: the state is saved and the run exits
        self.stop_requested |= step == stop
        return due(self, step)

    monkeypatch.setattr(Checkpointer, "due", stop_at)
    with pytest.raises(Interrupted):
        _run(tiny_dataset_path, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "resume.pt").exists() and not (tmp_path / "run.json").exists()
    saved = {c["file"]: (tmp_path / c["file"]).stat().st_mtime_ns for c in before}
    info = _run(tiny_dataset_path, tmp_path)  # resumes at `stop`
    assert info["n_segments"] == 2 and info["segments"][1]["start_step"] == stop
    assert info["checkpoints"] == ref["checkpoints"]  # the same list, hashes included
    for file, mtime in saved.items():  # saved before the interruption, kept (not written again)
        assert (tmp_path / file).stat().st_mtime_ns == mtime
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir()) == sorted(
        p.name for p in (ref_out / CHECKPOINT_DIR).iterdir()
    )


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


def _rows(curve: dict[int, tuple[float, float, float]]) -> list[dict]:
    names = ("train_inferred_id", "test_inferred_id", "test_inferred_ood")
    return [
        dict(step=s, split=n, loss=0.0, accuracy=a) for s, accs in curve.items() for n, a in zip(names, accs)
    ]


def test_a_transition_that_does_not_stay_moves_to_where_it_does(tmp_path):
    """An evaluation reaching the threshold is saved at once; when the curve falls back below it, the
    transition moves to the next evaluation that reaches it and stays, and the earlier file goes."""
    cfg = Checkpoints(log_spaced=0, initial=False)  # the analysis's default thresholds
    #       step: (train,  ID,   OOD)
    curve = {
        0: (0.0, 0.0, 0.0),
        10: (1.0, 0.95, 0.5),  # memorized, ID reached
        20: (1.0, 0.5, 0.95),  # ID falls back; OOD reached
        30: (1.0, 0.95, 0.95),  # ID reached again, and stays
        40: (1.0, 0.95, 0.95),
    }
    weights = WeightCheckpoints(cfg, tmp_path, {"family": "none"}, list(curve))
    model = _Linear()
    rows: list[dict] = []
    saved_when = {}
    for step, accs in curve.items():
        rows += _rows({step: accs})
        with torch.no_grad():
            model.lin.weight.fill_(step)  # weights that tell the steps apart
        weights.at_eval(step, rows, model)
        saved_when[step] = sorted(weights.saved)
    assert saved_when[10] == [10] and saved_when[20] == [10, 20] and saved_when[30] == [10, 20, 30]
    entries = weights.finish(40, model, pd.DataFrame(rows))
    expected = analyze_run(pd.DataFrame(rows), AnalysisConfig())
    by_step = {e["step"]: set(e["reasons"]) for e in entries}
    assert by_step == {
        expected["memorization_step"]: {"memorization"},
        expected["ood_generalization_step"]: {"ood"},
        expected["id_generalization_step"]: {"id"},
        40: {"final"},
    }
    assert sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir()) == [
        checkpoint_file(s).split("/")[-1] for s in sorted(by_step)
    ]
    for e in entries:
        state = load_checkpoint(tmp_path / e["file"])["model"]
        assert float(state["lin.weight"][0, 0]) == e["step"]


def test_bf16_checkpoints_are_half_the_size(tmp_path):
    model = nn.Linear(64, 64)
    sizes = {}
    for dtype in ("fp32", "bf16"):
        w = WeightCheckpoints(Checkpoints(log_spaced=0, initial=True, dtype=dtype), tmp_path / dtype, {}, [0])
        w.at_eval(0, [], model)
        path = tmp_path / dtype / checkpoint_file(0)
        state = load_checkpoint(path)["model"]
        assert state["weight"].dtype == (torch.bfloat16 if dtype == "bf16" else torch.float32)
        sizes[dtype] = sum(v.numel() * v.element_size() for v in state.values())
        torch.testing.assert_close(state["weight"].float(), model.weight.detach(), rtol=1e-2, atol=0)
    assert sizes["bf16"] * 2 == sizes["fp32"]


@pytest.mark.parametrize(
    ("checkpoints", "message"),
    [
        ({"log_spaced": -1}, "checkpoints.log_spaced=-1"),
        ({"dtype": "fp16"}, "checkpoints.dtype='fp16'"),
        ({"threshold": 1.5}, "checkpoints.threshold=1.5"),
        ({"every": 3}, "unknown key 'every'"),
    ],
)
def test_bad_settings_are_rejected_by_name(checkpoints, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig.from_dict({"checkpoints": checkpoints})


def test_a_study_needs_the_analysis_thresholds(tiny_config):
    config = copy.deepcopy(tiny_config)
    config["training"]["default"]["checkpoints"] = {"log_spaced": 4}  # the analysis's defaults: fine
    study.validate(config)
    config["analysis"] = {"threshold": 0.8}
    with pytest.raises(study.ConfigError, match=r"checkpoints\.threshold=0\.9: must equal config\.analysis"):
        study.validate(config)
    config["training"]["default"]["checkpoints"]["threshold"] = 0.8
    assert math.isclose(
        TrainConfig.from_dict(study.validate(config)["training"]["default"]).checkpoints.threshold, 0.8
    )


def test_a_diverged_run_ends_with_its_final_checkpoint(tiny_dataset_path, tmp_path):
    training = {**TINY_TRAINING, "lr": 1e3, "device": "cpu", "checkpoints": {"log_spaced": 2}}
    info = _run(tiny_dataset_path, tmp_path, training)
    assert info["status"] == "diverged"
    final = [c for c in info["checkpoints"] if "final" in c["reasons"]]
    assert [c["step"] for c in final] == [info["diverged_step"]]
    assert all(c["step"] <= info["diverged_step"] for c in info["checkpoints"])
    model_pt = load_checkpoint(tmp_path / "model.pt")
    assert load_checkpoint(tmp_path / final[0]["file"])["step"] == model_pt["step"] == info["diverged_step"]


def test_without_checkpoints_an_earlier_configurations_files_go(tmp_path):
    from grokbench.train import checkpoints

    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / checkpoint_file(10)).write_bytes(b"old")
    assert checkpoints.finish(None, tmp_path, 40, nn.Linear(1, 1), pd.DataFrame()) == []
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def test_weights_state_of_a_slice_stores_the_slice_only():
    """A pack member's parameters are views of the pack's stacked weights (train/packed.py): its saved
    state holds its own slice, not the whole stack."""
    from torch import nn

    from grokbench.train.checkpoints import weights_state

    stacked = torch.arange(12.0).reshape(2, 6)
    member = nn.Linear(6, 1, bias=False)
    member.weight.data = stacked[1][None]  # (1, 6), a view into (2, 6)
    w = weights_state(member)["weight"]
    assert torch.equal(w, stacked[1][None]) and w.untyped_storage().nbytes() == 6 * 4
