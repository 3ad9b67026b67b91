"""Hyperparameter grids (config), selection on the validation split, and the claims' verdicts.

Selection and claims are tested on hand-made summaries, where each verdict and number can be worked out
on paper; tests/test_pipeline.py checks them end to end against the metrics files.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from grokbench.report.analysis import AnalysisConfig
from grokbench.report.claims import bootstrap_ratio, judge, parse
from grokbench.report.selection import settings_table
from grokbench.study import ConfigError, cells, validate

from ..conftest import TINY_CONFIG

FINAL = 1000


def run(dataset="d", model="gpt", training="default", seed=0, mem=100, ood=None, val=None, val_acc=0.5):
    """One summary row: memorization / test-OOD / validation steps (None: never)."""
    return {
        "run_id": f"{dataset}/{model}/{training}/seed{seed}",
        "dataset": dataset,
        "model": model,
        "family": model,
        "training": training,
        "training_base": training.split("+")[0],
        "seed": seed,
        "memorization_step": mem,
        "ood_generalization_step": ood,
        "grokked": mem is not None and ood is not None and ood > mem,
        "selection_step": val,
        "final_step": FINAL,
        "final_acc_val_inferred_ood": val_acc,
        "final_acc_test_inferred_ood": 0.95 if ood is not None else 0.5,
    }


def summary(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("memorization_step", "ood_generalization_step", "selection_step"):
        df[col] = df[col].astype("Int64")
    return df


# --- config: hyperparameter grids ----------------------------------------------------------------


def grid_config(**block) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["a"]["val_size"] = 8
    cfg["grid"] = [{"datasets": ["a"], "models": ["gpt"], "seeds": [0, 1], **block}]
    return cfg


def test_hparams_expand_to_named_settings():
    cfg = validate(grid_config(hparams={"lr": [3e-3, 1e-2], "weight_decay": [0.1, 0.0]}))
    names = sorted({c.training for c in cells(cfg)})
    # the base lr (3e-3) and weight decay (TrainConfig default 0.1) keep the base name
    assert names == ["default", "default+lr0.01", "default+lr0.01+weight_decay0", "default+weight_decay0"]
    assert cfg["training"]["default+lr0.01+weight_decay0"] == {
        **TINY_CONFIG["training"]["default"], "lr": 1e-2, "weight_decay": 0.0
    }  # fmt: skip
    assert len(cells(cfg)) == 8


def test_accelerator_settings_are_grid_axes():
    """Nested training settings sweep by dotted key; a null accelerator becomes a mapping."""
    hparams = {"accelerators.grokfast.alpha": [0.9, 0.98], "accelerators.loss": ["softmax", "stablemax"]}
    cfg = validate(grid_config(hparams=hparams))
    names = sorted({c.training for c in cells(cfg)})
    assert names == [
        "default+accelerators.grokfast.alpha0.9",
        "default+accelerators.grokfast.alpha0.9+accelerators.lossstablemax",
        "default+accelerators.grokfast.alpha0.98",
        "default+accelerators.grokfast.alpha0.98+accelerators.lossstablemax",
    ]  # grokfast is off in the base, so both alphas differ from it; softmax is the base's loss
    spec = cfg["training"]["default+accelerators.grokfast.alpha0.9+accelerators.lossstablemax"]
    assert spec["accelerators"] == {"grokfast": {"alpha": 0.9}, "loss": "stablemax"}
    assert spec["lr"] == TINY_CONFIG["training"]["default"]["lr"]


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"accelerators.grokfast.alpa": [0.9]}, r"unknown key 'accelerators.grokfast.alpa' \(did you mean "
         r"'accelerators.grokfast.alpha'\?\)"),
        ({"accelerators.grokfast.alpha": [1.5]}, r"config.grid\[0\].hparams.accelerators.grokfast.alpha=1.5"),
        ({"accelerators.loss": ["hinge"]}, r"config.grid\[0\].hparams.accelerators.loss='hinge'"),
        ({"accelerators.wd_schedule.kind": ["cosine"]}, r"wd_schedule.steps=None: expected an integer >= 1"),
        ({"precision": ["bf 16"]}, r"hparams.precision\[0\]='bf 16': a swept text value is part of"),
    ],
)  # fmt: skip
def test_bad_accelerator_axes_named(hparams, message):
    with pytest.raises(ConfigError, match=message):
        validate(grid_config(hparams=hparams))


def test_hparams_need_a_validation_split():
    cfg = grid_config(hparams={"lr": [1e-3, 3e-3]})
    del cfg["datasets"]["a"]["val_size"]
    with pytest.raises(ConfigError, match=r"config.grid\[0\].hparams: .*config.datasets.a.val_size > 0"):
        validate(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"analysis": {"selection_split": "test_inferred_ood"}}, "analysis.selection_split=.*test data"),
        ({"analysis": {"selection_rule": "best"}}, r"config.analysis.selection_rule: 'best' is not one of"),
        ({"hparams": {"lr": [-1.0]}}, r"config.grid\[0\].hparams.lr=-1.0: expected a positive number"),
        ({"hparams": {"momentum": [0.9]}}, r"config.grid\[0\].hparams: unknown key 'momentum'"),
        ({"claims": [{"id": "x", "text": "t", "check": "groks", "where": {"model": "rwkv"}}]},
         r"config.claims\[0\].where.model: 'rwkv' is not defined"),
        ({"claims": [{"id": "x", "text": "t", "check": "sooner", "where": {"model": "gpt"}}]},
         r"config.claims\[0\].than: required by check 'sooner'"),
        ({"claims": [{"id": "x", "text": "t", "check": "groks", "where": {}, "figure": "nope"}]},
         r"config.claims\[0\].figure='nope'"),
        ({"claims": [{"id": "x", "text": "t", "check": "groks", "where": {}}] * 2},
         r"config.claims\[1\].id='x': used by an earlier claim"),
        ({"claims": [{"id": "x", "text": "t", "check": "grok", "where": {}}]}, r"config.claims\[0\].check"),
    ],
)  # fmt: skip
def test_bad_selection_or_claims_named(change, message):
    cfg = grid_config(hparams={"lr": [1e-3, 3e-3]})
    if "hparams" in change:
        cfg["grid"][0]["hparams"] = change["hparams"]
    else:
        cfg.update(change)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_sweep_filters_checked_against_the_grid():
    cfg = grid_config(hparams={"lr": [3e-3, 1e-2]})
    cfg["sweeps"] = {"lr": {"x": "train.lr", "training": ["default", "default+lr0.01"]}}
    validate(cfg)  # a hyperparameter setting is a training name like any other
    cfg["sweeps"]["lr"]["training"] = ["default+lr0.03"]
    with pytest.raises(ConfigError, match=r"config.sweeps.lr.training: 'default\+lr0.03' is not defined"):
        validate(cfg)
    cfg["sweeps"]["lr"] = {"x": "train.lr", "models": ["gpt"], "datasets": ["b"]}
    cfg["datasets"]["b"] = dict(cfg["datasets"]["a"], seed=1)  # defined, not in the grid
    with pytest.raises(ConfigError, match="config.sweeps.lr: no run of the grid matches"):
        validate(cfg)


def test_claim_matching_no_run_of_the_grid_is_rejected():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["b"] = dict(cfg["datasets"]["a"], seed=1)  # defined, but not in the grid
    cfg["claims"] = [{"id": "x", "text": "t", "check": "groks", "where": {"dataset": "b"}}]
    with pytest.raises(ConfigError, match=r"config.claims\[0\].where=\{'dataset': 'b'\}: no run of the grid"):
        validate(cfg)


# --- selection -----------------------------------------------------------------------------------


def lr_sweep(test_first: bool = False) -> pd.DataFrame:
    """Three settings of one group: lr0.01 reaches the validation threshold on both seeds (at 400, 600),
    base on one (200), lr0.03 on none but with the best final validation accuracy."""
    rows = [
        run(training="default", seed=0, val=200, val_acc=0.90, ood=300),
        run(training="default", seed=1, val=None, val_acc=0.70, ood=None),
        run(training="default+lr0.01", seed=0, val=400, val_acc=0.92, ood=None if test_first else 450),
        run(training="default+lr0.01", seed=1, val=600, val_acc=0.91, ood=None if test_first else 650),
        run(training="default+lr0.03", seed=0, val=None, val_acc=0.99, ood=100 if test_first else None),
        run(training="default+lr0.03", seed=1, val=None, val_acc=0.99, ood=100 if test_first else None),
    ]
    return summary(rows)


def test_earliest_rule_prefers_seeds_reached_then_mean_step():
    table = settings_table(lr_sweep(), AnalysisConfig())
    t = table.set_index("training")
    assert list(t["val_reached"]) == [1, 2, 0]
    assert t.loc["default", "val_mean_step"] == (200 + FINAL) / 2  # never reached: its final step
    assert t.loc["default+lr0.01", "val_mean_step"] == 500
    assert list(t["rank"]) == [2, 1, 3] and t["selected"].sum() == 1 and t.loc["default+lr0.01", "selected"]
    assert t.loc["default+lr0.01", "hparams"] == "lr0.01" and t.loc["default", "hparams"] == "(base)"


def test_final_accuracy_rule():
    table = settings_table(lr_sweep(), AnalysisConfig(selection_rule="final_accuracy"))
    assert table.set_index("training").loc["default+lr0.03", "selected"]


def test_selection_ignores_test_data():
    """The test outcome is reported per setting but never changes the choice."""
    base = settings_table(lr_sweep(), AnalysisConfig())
    flipped = settings_table(lr_sweep(test_first=True), AnalysisConfig())
    assert list(base["selected"]) == list(flipped["selected"])
    assert list(base["test_ood_reached"]) != list(flipped["test_ood_reached"])


def test_several_settings_without_the_selection_split_fail_by_name():
    df = lr_sweep().drop(columns="final_acc_val_inferred_ood")
    with pytest.raises(ValueError, match="d/gpt/default has 3 settings but its runs have no split"):
        settings_table(df, AnalysisConfig())


# --- claims --------------------------------------------------------------------------------------


def verdicts(df: pd.DataFrame, *claims: dict) -> pd.DataFrame:
    parsed = [parse(c, f"claims[{i}]") for i, c in enumerate(claims)]
    table = settings_table(df, AnalysisConfig())
    return judge(df, table, parsed, "test_inferred_ood").set_index("id")


GROKS = [
    ((300, 400, 500), "supported"),
    ((300, None, None), "inconclusive"),
    ((None, None, None), "contradicted"),
    ((50, 60, 70), "contradicted"),
]


@pytest.mark.parametrize(("oods", "verdict"), GROKS)
def test_groks_counts_seeds_that_memorize_then_generalize(oods, verdict):
    """memorized at 100: OOD at 50-70 is generalization without grokking; a majority of 3 is 2."""
    df = summary([run(seed=s, ood=o) for s, o in enumerate(oods)])
    v = verdicts(df, {"id": "g", "text": "GPT groks", "check": "groks", "where": {"model": "gpt"}})
    assert v.loc["g", "verdict"] == verdict
    assert v.loc["g", "k"] == sum(o is not None and o > 100 for o in oods)


def test_groks_uses_the_selected_setting_only():
    v = verdicts(lr_sweep(), {"id": "g", "text": "t", "check": "groks", "where": {"model": "gpt"}})
    assert v.loc["g", "n"] == 2 and v.loc["g", "settings"] == "gpt/default+lr0.01"
    assert v.loc["g", "verdict"] == "supported"  # the selected lr0.01 grokked on both seeds


def test_fails_looks_at_every_setting():
    fails = {"id": "f", "text": "t", "check": "fails", "where": {"model": "gpt"}}
    v = verdicts(lr_sweep(), fails)
    assert v.loc["f", "verdict"] == "contradicted" and v.loc["f", "n"] == 6  # lr0.01: 2/2 reached
    assert "d/gpt/default: 1/2" in v.loc["f", "evidence"]
    only_one = summary([run(seed=0, ood=300), run(seed=1), run(seed=2)])
    assert verdicts(only_one, fails).loc["f", "verdict"] == "inconclusive"
    none = summary([run(seed=s) for s in range(3)])
    assert verdicts(none, fails).loc["f", "verdict"] == "supported"


def sooner_claim(**extra) -> dict:
    return {"id": "s", "text": "gpt sooner", "check": "sooner", "where": {"model": "gpt"},
            "than": {"model": "llama"}, **extra}  # fmt: skip


def test_sooner_ratio_and_interval():
    df = summary([run(seed=0, ood=200), run(seed=1, ood=400)]
                 + [run(model="llama", seed=s, ood=o) for s, o in enumerate((600, 900, None))])  # fmt: skip
    v = verdicts(df, sooner_claim()).loc["s"]
    assert v["mean_steps"] == 300 and v["mean_steps_than"] == (600 + 900 + FINAL) / 3  # censored: final
    assert v["ratio"] == pytest.approx(v["mean_steps_than"] / 300)
    ratio, low, high = bootstrap_ratio(np.array([200.0, 400.0]), np.array([600.0, 900.0, FINAL]))
    assert (v["ci_low"], v["ci_high"]) == (low, high) and low > 1
    assert v["verdict"] == "supported" and "1000*" in v["evidence"]
    reverse = verdicts(df, sooner_claim(where={"model": "llama"}, than={"model": "gpt"})).loc["s"]
    assert reverse["verdict"] == "contradicted"


def test_sooner_overlapping_or_never_reached_is_inconclusive():
    overlap = summary([run(seed=0, ood=200), run(seed=1, ood=800)]
                      + [run(model="llama", seed=s, ood=o) for s, o in enumerate((300, 700))])  # fmt: skip
    assert verdicts(overlap, sooner_claim()).loc["s", "verdict"] == "inconclusive"
    never = summary([run(seed=0), run(model="llama", seed=0)])
    assert verdicts(never, sooner_claim()).loc["s", "verdict"] == "inconclusive"


def test_bootstrap_is_reproducible_and_brackets_the_ratio():
    a, b = np.array([100.0, 150.0, 200.0]), np.array([300.0, 350.0, 500.0])
    first, second = bootstrap_ratio(a, b), bootstrap_ratio(a, b)
    assert first == second
    ratio, low, high = first
    assert low <= ratio <= high and ratio == pytest.approx(b.mean() / a.mean())
