"""Hyperparameter selection: for each dataset x model x base training setting, the hyperparameter
combination of the grid (`default+lr0.003`, ...) chosen on the selection split, never on test data.

A *group* is the runs of one dataset, model and base training setting; its *settings* are the
combinations the grid's `hparams` made of that base, each trained over the grid's seeds. The score of a
setting uses only its runs' selection split (`analysis.selection_split`, by default `val_inferred_ood`:
OOD facts disjoint from the test facts). Rules (`analysis.selection_rule`):

- `earliest`: the most seeds that reach the threshold on the selection split; then the lowest mean
  selection step, a seed that never reached it counting as its final step; then the highest mean final
  accuracy on the selection split.
- `final_accuracy`: the highest mean final accuracy on the selection split; then as `earliest`.

Ties go to the setting listed first in the config. The table also shows each setting's test outcome
(`test_ood_reached`), for the report only: it plays no part in the choice.
"""

from __future__ import annotations

import math

import pandas as pd

from ..grid import split_setting
from .analysis import AnalysisConfig, steps_or_final

GROUP = ["dataset", "model", "training_base"]


def _score(runs: pd.DataFrame, acc_col: str) -> dict:
    """A setting's score on the selection split; NaN where its runs have no such split."""
    steps = runs["selection_step"].astype("Float64")
    censored = steps_or_final(runs, "selection_step")
    has_split = acc_col in runs and runs[acc_col].notna().all()
    return {
        "seeds": len(runs),
        "val_reached": int(steps.notna().sum()) if has_split else pd.NA,
        "val_mean_step": float(censored.mean()) if has_split else math.nan,
        "val_final_accuracy": float(runs[acc_col].mean()) if has_split else math.nan,
        "test_ood_reached": int(runs["ood_generalization_step"].notna().sum()),
    }


def _key(row: dict, rule: str) -> tuple:
    earliest = (-row["val_reached"], row["val_mean_step"], -row["val_final_accuracy"])
    if rule == "final_accuracy":
        return (-row["val_final_accuracy"], *earliest[:2])
    return earliest


def settings_table(summary: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """One row per setting of every group: its score, its rank in the group and whether it is selected."""
    acc_col = f"final_acc_{cfg.selection_split}"
    rows = []
    for (dataset, model, base), group in summary.groupby(GROUP, sort=False):
        settings = []
        for training, runs in group.groupby("training", sort=False):
            settings.append({
                "dataset": dataset,
                "model": model,
                "family": runs["family"].iloc[0],
                "training_base": base,
                "training": training,
                "hparams": ", ".join(split_setting(training)[1]) or "(base)",
                **_score(runs, acc_col),
            })  # fmt: skip
        if len(settings) > 1 and (acc_col not in group or group[acc_col].isna().any()):
            raise ValueError(
                f"selection: {dataset}/{model}/{base} has {len(settings)} settings but its runs have no "
                f"split {cfg.selection_split!r} (analysis.selection_split) to choose on"
            )
        ranked = sorted(range(len(settings)), key=lambda i: (_key(settings[i], cfg.selection_rule), i))
        for rank, i in enumerate(ranked, start=1):
            settings[i] |= {"rank": rank, "selected": rank == 1}
        rows += settings
    return pd.DataFrame(rows)


def selected(table: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(dataset, model, training) of every selected setting."""
    chosen = table[table["selected"]]
    return set(zip(chosen["dataset"], chosen["model"], chosen["training"]))
