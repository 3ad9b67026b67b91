"""Grokking analysis: memorization and generalization steps per run, and one summary table over runs.

Definitions (thresholds and splits set in the config's `analysis` section):
- memorization step: first evaluation from which train inferred accuracy stays >= 0.99;
- ID / OOD generalization step: first evaluation from which test ID / OOD accuracy stays >= 0.9;
- "stays": every later evaluation is >= threshold - tolerance (tolerance 0 by default);
- grokked: the run memorized, and generalized OOD at a strictly later evaluation;
- ood_at_memorization: test OOD accuracy at the memorization step (the last OOD evaluation at or before
  it); NA if the run never memorized;
- ood_gain_after_memorization: how much OOD accuracy rose after memorization: the OOD accuracy at the
  OOD generalization step if that comes strictly after memorization (a grokked run), else at the final
  evaluation, minus ood_at_memorization; NA if never memorized. It tells grokking (OOD low at
  memorization, then a large rise) from slow generalization that was nearly there when the training set
  was memorized (say 0.87 then, 0.92 at the crossing: gain 0.05), which `grokked` alone does not; a
  `groks` claim's `min_gain` asks for a minimum gain;
- delay_ratio: ood_generalization_step / memorization_step; NA if either is, or memorization was at
  step 0. Above 1: generalized OOD after memorizing, below or at 1: with or before it;
- status: how training ended: "completed", or "diverged" when a training loss was not finite (the run
  stopped at `diverged_step`; its metrics end with an evaluation there). Claims leave diverged runs out
  and name them (grokbench.report.claims);
- selection step: first evaluation from which the selection split (OOD validation facts, disjoint from
  the test facts) stays >= the threshold; hyperparameters are chosen on it (grokbench.report.selection), never
  on a test split;
- generalization_step_<split>, for every test split a run evaluates (e.g. test_incontext_ood of an
  in-context dataset): first evaluation from which that split stays >= the threshold (for test_inferred_id
  / test_inferred_ood, the ID / OOD generalization step again); a claim's `split` reads it
  (grokbench.report.claims).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..curves import Transitions, first_stable_step
from ..grid import training_base
from ..params import from_dict


@dataclass(frozen=True)
class AnalysisConfig(Transitions):
    selection_split: str = "val_inferred_ood"
    selection_rule: str = "earliest"  # see grokbench.report.selection

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "analysis") -> AnalysisConfig:
        cfg = from_dict(cls, d, where)
        for key in ("memorization_split", "id_split", "ood_split", "selection_split"):
            if getattr(cfg, key) not in EVAL_SPLITS:
                raise ValueError(f"{where}.{key}={getattr(cfg, key)!r}: expected one of {list(EVAL_SPLITS)}")
        if cfg.selection_split.startswith("test_") or cfg.selection_split in (cfg.id_split, cfg.ood_split):
            raise ValueError(
                f"{where}.selection_split={cfg.selection_split!r}: settings must not be selected on test "
                f"data; use a validation split (e.g. val_inferred_ood, from a dataset's val_size)"
            )
        if cfg.selection_rule not in SELECTION_RULES:
            raise ValueError(
                f"{where}.selection_rule={cfg.selection_rule!r}: expected one of {list(SELECTION_RULES)}"
            )
        return cfg


SELECTION_RULES = ("earliest", "final_accuracy")  # implemented in grokbench.report.selection


def curve(metrics: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray]:
    m = metrics[metrics["split"] == split].sort_values("step")
    if m.empty:
        known = sorted(metrics["split"].unique())
        raise ValueError(f"analysis: split {split!r} not in the metrics; known: {known}")
    return m["step"].to_numpy(), m["accuracy"].to_numpy()


def accuracy_at(steps: np.ndarray, acc: np.ndarray, step: int) -> float | None:
    """Accuracy of the last evaluation at or before `step`; None if there is none. `steps` increasing."""
    i = int(np.searchsorted(steps, step, side="right")) - 1
    return float(acc[i]) if i >= 0 else None


def after_memorization(ood: tuple[np.ndarray, np.ndarray], mem: int | None, gen_ood: int | None) -> dict:
    """ood_at_memorization, ood_gain_after_memorization and delay_ratio (module docstring) of one run
    from its OOD curve (steps, accuracies) and its memorization / OOD generalization steps."""
    steps, acc = ood
    at_mem = accuracy_at(steps, acc, mem) if mem is not None else None
    end = gen_ood if mem is not None and gen_ood is not None and gen_ood > mem else int(steps[-1])
    at_end = accuracy_at(steps, acc, end)
    gain = at_end - at_mem if at_mem is not None and at_end is not None else None
    ratio = gen_ood / mem if mem and gen_ood is not None else None
    return {"ood_at_memorization": at_mem, "ood_gain_after_memorization": gain, "delay_ratio": ratio}


def analyze_run(metrics: pd.DataFrame, cfg: AnalysisConfig) -> dict[str, Any]:
    tol = cfg.tolerance
    mem = first_stable_step(*curve(metrics, cfg.memorization_split), cfg.memorization_threshold, tol)
    gen_id = first_stable_step(*curve(metrics, cfg.id_split), cfg.threshold, tol)
    ood = curve(metrics, cfg.ood_split)
    gen_ood = first_stable_step(*ood, cfg.threshold, tol)
    has_val = cfg.selection_split in set(metrics["split"])
    sel = first_stable_step(*curve(metrics, cfg.selection_split), cfg.threshold, tol) if has_val else None
    last = metrics[metrics["step"] == metrics["step"].max()]
    out: dict[str, Any] = {
        "memorization_step": mem,
        "id_generalization_step": gen_id,
        "ood_generalization_step": gen_ood,
        "grokked": mem is not None and gen_ood is not None and gen_ood > mem,
        "grok_delay": gen_ood - mem if mem is not None and gen_ood is not None else None,
        "selection_step": sel,
        "final_step": int(metrics["step"].max()),
        **after_memorization(ood, mem, gen_ood),
    }
    for split, acc in zip(last["split"], last["accuracy"]):
        out[f"final_acc_{split}"] = float(acc)
        if split in TEST_SPLITS:
            out[f"{SPLIT_STEP}{split}"] = first_stable_step(*curve(metrics, split), cfg.threshold, tol)
    return out


SPLIT_STEP = "generalization_step_"  # + a test split: that split's generalization step (module docstring)


def steps_or_final(runs: pd.DataFrame, column: str) -> pd.Series:
    """A summary step column (e.g. ood_generalization_step) with each run that never reached its threshold
    counted at its final step: censored, so a lower bound on when it would have."""
    return runs[column].astype("Float64").fillna(runs["final_step"].astype("Float64"))


AFTER_MEMORIZATION = ("ood_at_memorization", "ood_gain_after_memorization", "delay_ratio")  # floats, NA
SUMMARY_FIRST = ["run_id", "dataset", "model", "family", "training", "seed", "n_params", "task"]
# every other column of the summary but final_acc_<split>, data.<parameter>, model.<key>, train.<setting>
SUMMARY_COLUMNS = (
    *SUMMARY_FIRST,
    *("training_base", "memorization_step", "id_generalization_step", "ood_generalization_step"),
    *("grokked", "grok_delay", "selection_step", "final_step"),
    *AFTER_MEMORIZATION,
    *("status", "diverged_step", "stopped_early", "wall_seconds", "n_segments", "device", "run_dir"),
)
# evaluation splits a run's metrics can hold (grokbench.train.data.build_tensors): training facts by kind
# and entity group, the test splits, the validation split (val_size) and in-context copies (format)
EVAL_SPLITS = (
    *("train_atomic_id", "train_atomic_ood", "train_inferred_id", "train_inferred_ood"),
    *("test_inferred_id", "test_inferred_ood", "val_inferred_ood", "test_incontext_id", "test_incontext_ood"),
)
TEST_SPLITS = tuple(s for s in EVAL_SPLITS if s.startswith("test_"))  # what claims are judged on


def not_a_column(where: str, name: str, columns: set[str]) -> ValueError:
    """The error for a summary column that does not exist, with the closest names."""
    close = difflib.get_close_matches(name, sorted(columns), n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    per_split = ("final_acc_", SPLIT_STEP)
    fixed = ", ".join(sorted(c for c in columns if "." not in c and not c.startswith(per_split)))
    return ValueError(
        f"{where}={name!r}: not a column of the summary; {hint}columns: {fixed}, final_acc_<split>, "
        f"{SPLIT_STEP}<test split>, "
        "data.<dataset parameter>, model.<model key>, train.<training setting>"
    )


def flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}; lists become strings so that columns stay scalar."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out |= flatten(value, name)
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple) else value
    return out


def dataset_meta(path: str | Path) -> dict[str, Any]:
    """The generator's meta (task, params, version, hash) from a dataset's Parquet metadata."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"grokbench.meta", b"{}"))


def summarize(run_dirs: list[str | Path], cfg: AnalysisConfig) -> pd.DataFrame:
    """One row per run: its cell, size, steps to memorize / generalize, final accuracies."""
    rows = []
    for d in map(Path, run_dirs):
        info = json.loads((d / "run.json").read_text())
        metrics = pd.read_parquet(d / "metrics.parquet")
        (data_path,) = info["inputs"]  # a run has one input: its dataset
        meta = dataset_meta(data_path) if Path(data_path).exists() else {}
        row = {
            "run_id": info["run_id"],
            **info["cell"],
            "training_base": training_base(info["cell"]["training"]),
            "family": info["config"]["model"].get("family"),
            "n_params": info["n_params"],
            "task": meta.get("task"),
            **analyze_run(metrics, cfg),
            # how training ended: completed, or diverged (a non-finite loss stopped it at diverged_step)
            "status": info.get("status", "completed"),
            "diverged_step": info.get("diverged_step"),
            "stopped_early": bool(info.get("stopped_early", False)),  # train/early_stop.py
            "wall_seconds": info["wall_seconds"],  # every segment of a resumed run
            "n_segments": info.get("n_segments", 1),
            "device": info["device"],
            "run_dir": str(d),
            # every dataset parameter, model key as the study wrote it (e.g. model.loops; a preset's keys
            # stay behind model.preset) and training setting, for sweeps over them
            **flatten(meta.get("params", {}), "data"),
            **flatten(info["config"]["model"], "model"),
            **flatten(info["config"]["training"], "train"),
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    step_cols = [c for c in df.columns if c.endswith("_step") or c == "grok_delay"]
    df[step_cols] = df[step_cols].astype("Int64")
    df[list(AFTER_MEMORIZATION)] = df[list(AFTER_MEMORIZATION)].astype("Float64")
    first = [c for c in SUMMARY_FIRST if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]
