"""Hyperparameter grids (config), selection on the validation split, and the claims' verdicts.

Selection and claims are tested on hand-made summaries, where each verdict and number can be worked out
on paper; tests/test_pipeline.py checks them end to end against the metrics files.
"""

from __future__ import annotations

import copy
import math

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


# --- sooner: censoring-aware (log-rank, Kaplan-Meier medians) --------------------------------------


def two_sides(where: tuple, than: tuple) -> pd.DataFrame:
    """gpt runs reaching the OOD threshold at `where`, llama at `than` (None: never, censored at FINAL)."""
    return summary([run(seed=s, ood=o) for s, o in enumerate(where)]
                   + [run(model="llama", seed=s, ood=o) for s, o in enumerate(than)])  # fmt: skip


def test_sooner_logrank_and_median_ratio():
    """gpt 200, 300, 400 vs llama 500, 600, 700 (all reached). Log-rank by hand: at 200, 300, 400 the
    at-risk sets are 6, 5, 4 with 3, 2, 1 gpt runs: E = 3/6 + 2/5 + 1/4 = 23/20, O = 3,
    V = 1/4 + 6/25 + 3/16 = 271/400, chi2 = (37/20)^2 / V = 1369/271. KM medians: 300 and 600."""
    v = verdicts(two_sides((200, 300, 400), (500, 600, 700)), sooner_claim()).loc["s"]
    chi2 = 1369 / 271
    assert v["logrank_p"] == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)  # 0.0246
    assert (v["km_median"], v["km_median_than"], v["median_ratio"]) == (300, 600, 2.0)
    assert 1 < v["median_ci_low"] <= 2.0 <= v["median_ci_high"]
    assert v["verdict"] == "supported"
    assert "log-rank chi2 5.05, p = 0.0246" in v["evidence"] and "median ratio 2.00" in v["evidence"]
    reverse = verdicts(two_sides((500, 600, 700), (200, 300, 400)), sooner_claim()).loc["s"]
    assert reverse["verdict"] == "contradicted" and reverse["median_ci_high"] < 1
    assert reverse["logrank_p"] == pytest.approx(v["logrank_p"])


def test_sooner_never_reached_side_is_censored_not_counted_at_its_final_step():
    """llama never reaches the threshold: the log-rank test is the one above (the at-risk sets are the
    same), its KM median is not reached (> final step), so the median ratio and its interval are
    infinite, while the mean ratio treats the runs as reaching it at their final step."""
    v = verdicts(two_sides((200, 300, 400), (None, None, None)), sooner_claim()).loc["s"]
    assert v["logrank_p"] == pytest.approx(math.erfc(math.sqrt(1369 / 271 / 2)), rel=1e-9)
    assert v["km_median_than"] == math.inf and v["median_ratio"] == v["median_ci_low"] == math.inf
    assert v["ratio"] == pytest.approx(FINAL / 300)
    assert v["verdict"] == "supported"
    assert f"vs than > {FINAL} (not reached)" in v["evidence"] and "median ratio > 3.33" in v["evidence"]


def test_sooner_two_runs_a_side_are_not_enough():
    """Perfectly separated 2 vs 2: the mean and median ratios' intervals lie above 1, but the log-rank
    p-value, erfc(sqrt(chi2 / 2)) with chi2 = 49/17 (by hand below), is 0.09 > 0.05."""
    v = verdicts(two_sides((200, 300), (500, 600)), sooner_claim()).loc["s"]
    # at 200, 300: 4 and 3 at risk with 2 and 1 gpt runs: E = 1/2 + 1/3 = 5/6, V = 1/4 + 2/9 = 17/36
    chi2 = (2 - 5 / 6) ** 2 / (17 / 36)
    assert chi2 == pytest.approx(49 / 17)
    assert v["logrank_p"] == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9) and v["logrank_p"] > 0.05
    assert v["ci_low"] > 1 and v["median_ci_low"] > 1
    assert v["verdict"] == "inconclusive"


def test_sooner_verdict_rule():
    from grokbench.report.claims import sooner_verdict

    def km(p, low, high):
        return {"logrank_p": p, "median_ci_low": low, "median_ci_high": high}

    assert sooner_verdict(km(0.01, 1.2, 3.0), reached=True) == "supported"
    assert sooner_verdict(km(0.01, 0.2, 0.9), reached=True) == "contradicted"
    assert sooner_verdict(km(0.01, 0.8, 3.0), reached=True) == "inconclusive"  # curves differ, medians not
    assert sooner_verdict(km(0.2, 1.2, 3.0), reached=True) == "inconclusive"  # medians differ, not the test
    assert sooner_verdict(km(0.01, 1.2, 3.0), reached=False) == "inconclusive"
    assert sooner_verdict(km(0.05, 1.2, 3.0), reached=True) == "inconclusive"  # p < 0.05 strictly


def test_claims_table_keeps_the_old_columns_first():
    from grokbench.report.claims import COLUMNS

    old = ["id", "claim", "check", "verdict", "evidence", "n", "k", "n_than", "mean_steps", "mean_steps_than",
           "ratio", "ci_low", "ci_high", "settings_scope", "settings", "figure", "runs"]  # fmt: skip
    assert [c for c in COLUMNS if c in old] == old
    new = {"logrank_p", "km_median", "km_median_than", "median_ratio", "median_ci_low", "median_ci_high"}
    assert set(COLUMNS) - set(old) == new


# --- groks: a minimum gain after memorization ---------------------------------------------------------


def gains_summary() -> pd.DataFrame:
    """Three gpt runs memorized at 100, all grokked; OOD accuracy at memorization 0.87, 0.3, 0.2 and at
    the OOD generalization step 0.92, 0.9, 0.95: gains 0.05, 0.6, 0.75."""
    rows = [run(seed=s, ood=o) for s, o in enumerate((300, 400, 500))]
    for r, at_mem, gain in zip(rows, (0.87, 0.3, 0.2), (0.05, 0.6, 0.75)):
        r |= {"ood_at_memorization": at_mem, "ood_gain_after_memorization": gain,
              "delay_ratio": r["ood_generalization_step"] / r["memorization_step"]}  # fmt: skip
    return summary(rows)


def groks_claim(**extra) -> dict:
    return {"id": "g", "text": "GPT groks", "check": "groks", "where": {"model": "gpt"}, **extra}


@pytest.mark.parametrize(
    ("min_gain", "k", "verdict"),
    [(None, 3, "supported"), (0.05, 3, "supported"), (0.5, 2, "supported"), (0.7, 1, "inconclusive"),
     (0.8, 0, "contradicted")],
)  # fmt: skip
def test_groks_min_gain(min_gain, k, verdict):
    extra = {} if min_gain is None else {"min_gain": min_gain}
    v = verdicts(gains_summary(), groks_claim(**extra)).loc["g"]
    assert (v["k"], v["verdict"]) == (k, verdict)
    assert "OOD accuracy at memorization 0.87, 0.30, 0.20" in v["evidence"]
    assert "OOD gain after memorization 0.05, 0.60, 0.75" in v["evidence"]
    assert "delay ratio (OOD step / memorization step) 3.00, 4.00, 5.00" in v["evidence"]
    if min_gain is not None:
        assert f"grokked with OOD gain >= {min_gain:g}" in v["evidence"]


def test_groks_min_gain_needs_the_gain_column():
    with pytest.raises(ValueError, match="min_gain needs the summary column 'ood_gain_after_memorization'"):
        verdicts(summary([run(ood=300)]), groks_claim(min_gain=0.5))
    v = verdicts(summary([run(ood=300)]), groks_claim()).loc["g"]  # an old summary, without min_gain
    assert v["verdict"] == "supported" and "OOD gain" not in v["evidence"]


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"id": "x", "text": "t", "check": "groks", "where": {}, "min_gain": 1.5},
         r"config.claims\[0\].min_gain: 1.5 is greater than the maximum of 1"),
        ({"id": "x", "text": "t", "check": "groks", "where": {}, "min_gain": -0.1},
         r"config.claims\[0\].min_gain: -0.1 is less than the minimum of 0"),
        ({"id": "x", "text": "t", "check": "fails", "where": {}, "min_gain": 0.5},
         r"config.claims\[0\].min_gain: only check 'groks' uses it"),
    ],
)  # fmt: skip
def test_bad_min_gain_named(claim, message):
    cfg = grid_config()
    cfg["claims"] = [claim]
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    good = dict(claim, check="groks", min_gain=0.5)
    cfg["claims"] = [good]
    validate(cfg)


def test_diverged_runs_are_left_out_and_named():
    """A run whose loss became non-finite is a failure to train: no check counts it, the evidence names it."""
    rows = [run(seed=0, ood=300), run(seed=1, ood=400), run(seed=2, mem=None)]
    rows[2] |= {"status": "diverged", "diverged_step": 120}
    for r in rows[:2]:
        r |= {"status": "completed", "diverged_step": None}
    df = summary(rows)
    claims = [
        {"id": "g", "text": "t", "check": "groks", "where": {"model": "gpt"}},
        {"id": "f", "text": "t", "check": "fails", "where": {"model": "gpt"}},
    ]
    v = verdicts(df, *claims)
    assert v.loc["g", "verdict"] == "supported" and v.loc["g", "n"] == 2 and v.loc["g", "k"] == 2
    assert "left out, diverged: d/gpt/default/seed2 at step 120" in v.loc["g", "evidence"]
    assert v.loc["f", "verdict"] == "contradicted"
    assert "d/gpt/default/seed2" not in v.loc["g", "runs"]


def test_all_runs_diverged_is_inconclusive():
    rows = [run(seed=s, mem=None) | {"status": "diverged", "diverged_step": 10 + s} for s in range(2)]
    df = summary(rows)
    v = verdicts(df, {"id": "f", "text": "t", "check": "fails", "where": {"model": "gpt"}})
    assert v.loc["f", "verdict"] == "inconclusive"
    assert v.loc["f", "evidence"].startswith("no run completed its training; left out, diverged: ")


def incontext_run(seed, ood, context, mem=100, **kw):
    """A run of an in-context dataset: in-weights OOD step `ood`, in-context OOD step `context`."""
    return run(seed=seed, mem=mem, ood=ood, **kw) | {
        "generalization_step_test_incontext_ood": context,
        "final_acc_test_incontext_ood": 0.95 if context is not None else 0.4,
    }


def incontext_claim(id: str, check: str) -> dict:
    return {"id": id, "text": "t", "check": check, "where": {"model": "gpt"}, "split": "test_incontext_ood"}


def test_claim_split_reads_that_splits_steps():
    """`split`: the checks read that test split's steps (grokked: after memorization) in place of OOD's."""
    df = summary([incontext_run(s, None, c) for s, c in enumerate((300, 400, 50))])
    groks = {"id": "g", "text": "t", "check": "groks", "where": {"model": "gpt"}}
    v = verdicts(df, groks, incontext_claim("c", "groks"))
    assert v.loc["g", "verdict"] == "contradicted" and v.loc["g", "k"] == 0  # in weights: never
    assert v.loc["c", "verdict"] == "supported" and v.loc["c", "k"] == 2  # 50 is before memorizing (100)
    assert v.loc["c", "evidence"].startswith("on test_incontext_ood: 2/3 runs grokked")
    assert "OOD accuracy at memorization" not in v.loc["c", "evidence"]  # the analysis's OOD split's
    fails = incontext_claim("f", "fails")
    assert "best final OOD accuracy 0.950" in verdicts(df, fails).loc["f", "evidence"]
    sooner = sooner_claim(split="test_incontext_ood")
    gpt = [incontext_run(s, None, c) for s, c in enumerate((200, 250, 300))]
    both = summary(gpt + [incontext_run(s, 150, c, model="llama") for s, c in enumerate((700, 800, 900))])
    assert verdicts(both, sooner).loc["s", "verdict"] == "supported"  # in weights llama is sooner
    assert verdicts(both, sooner_claim()).loc["s", "verdict"] == "contradicted"


def test_claim_split_every_run_must_evaluate_it():
    df = summary([incontext_run(0, None, 300), run(seed=1)])
    claim = incontext_claim("c", "groks")
    with pytest.raises(
        ValueError,
        match=r"claim 'c': split='test_incontext_ood': not evaluated by run\(s\) d/gpt/default/seed1",
    ):
        verdicts(df, claim)


def test_bad_claim_split_named():
    cfg = grid_config()
    cfg["claims"] = [{"id": "x", "text": "t", "check": "groks", "where": {}, "split": "val_inferred_ood"}]
    with pytest.raises(
        ConfigError, match=r"config.claims\[0\].split='val_inferred_ood': expected a test split"
    ):
        validate(cfg)
    cfg["claims"][0]["split"] = "test_incontext_ood"
    validate(cfg)
