"""Grokking detection on synthetic curves with known answers."""

import json

import numpy as np
import pandas as pd
import pytest

from grokbench.report.analysis import (
    SUMMARY_COLUMNS,
    AnalysisConfig,
    accuracy_at,
    analyze_run,
    first_stable_step,
    summarize,
)

STEPS = np.arange(0, 1001, 100)


@pytest.mark.parametrize(
    ("acc", "threshold", "tolerance", "expected"),
    [
        ([0, 0.2, 0.5, 0.9, 0.95, 0.97, 0.99, 1, 1, 1, 1], 0.9, 0.0, 300),
        # crosses, dips below, crosses again: the step after the last dip counts
        ([0, 0.2, 0.91, 0.95, 0.85, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97], 0.9, 0.0, 500),
        # the same dip is forgiven by a tolerance of 0.06 but not of 0.04
        ([0, 0.2, 0.91, 0.95, 0.85, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97], 0.9, 0.06, 200),
        ([0, 0.2, 0.91, 0.95, 0.85, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97], 0.9, 0.04, 500),
        # never reached, or reached only at a point it falls from
        ([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.89], 0.9, 0.0, None),
        ([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95, 0.89], 0.9, 0.0, None),
        # the last evaluation alone counts as "stays"
        ([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9], 0.9, 0.0, 1000),
    ],
)
def test_first_stable_step(acc, threshold, tolerance, expected):
    assert first_stable_step(STEPS, np.array(acc), threshold, tolerance) == expected


def test_first_stable_step_empty():
    assert first_stable_step(np.array([]), np.array([]), 0.9) is None


def synthetic_metrics(mem_at: int, ood_at: int | None) -> pd.DataFrame:
    """Sigmoid-like curves: train saturates at `mem_at`, OOD at `ood_at` (None: plateaus at 0.7)."""
    rows = []
    for step in STEPS:
        train = 1.0 if step >= mem_at else step / mem_at * 0.9
        idacc = min(1.0, train + 0.05)
        ood = (1.0 if step >= ood_at else 0.5) if ood_at is not None else min(0.7, step / 1000)
        for split, acc in [
            ("train_inferred_id", train),
            ("test_inferred_id", idacc),
            ("test_inferred_ood", ood),
        ]:
            rows.append(dict(step=step, split=split, loss=1 - acc, accuracy=acc, elapsed=0.0))
    return pd.DataFrame(rows)


def test_analyze_run_grokking():
    out = analyze_run(synthetic_metrics(mem_at=300, ood_at=800), AnalysisConfig())
    assert out["memorization_step"] == 300
    assert out["id_generalization_step"] == 300
    assert out["ood_generalization_step"] == 800
    assert out["grokked"] is True
    assert out["grok_delay"] == 500
    assert out["final_acc_test_inferred_ood"] == 1.0
    # every test split's generalization step, the ID / OOD ones again
    assert out["generalization_step_test_inferred_ood"] == 800
    assert out["generalization_step_test_inferred_id"] == 300
    assert "generalization_step_train_inferred_id" not in out


def test_analyze_run_no_grokking():
    out = analyze_run(synthetic_metrics(mem_at=300, ood_at=None), AnalysisConfig())
    assert out["memorization_step"] == 300
    assert out["ood_generalization_step"] is None
    assert out["grokked"] is False
    assert out["grok_delay"] is None


def test_simultaneous_generalization_is_not_grokking():
    out = analyze_run(synthetic_metrics(mem_at=300, ood_at=300), AnalysisConfig())
    assert out["ood_generalization_step"] == out["memorization_step"] == 300
    assert out["grokked"] is False


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match="'test_inferred_odd'"):
        analyze_run(synthetic_metrics(300, 800), AnalysisConfig(ood_split="test_inferred_odd"))


def test_analysis_config_rejects_unknown_key():
    with pytest.raises(ValueError, match="analysis: unknown key 'treshold'"):
        AnalysisConfig.from_dict({"treshold": 0.9})


# --- after memorization: is it grokking, or slow generalization? ----------------------------------


def test_after_memorization_of_a_grokking_run():
    """OOD 0.5 until 800, then 1.0; memorized at 300: 0.5 at memorization, +0.5 by step 800."""
    out = analyze_run(synthetic_metrics(mem_at=300, ood_at=800), AnalysisConfig())
    assert out["ood_at_memorization"] == 0.5 and out["ood_gain_after_memorization"] == 0.5
    assert out["delay_ratio"] == pytest.approx(800 / 300)


def test_after_memorization_without_ood_generalization_uses_the_final_evaluation():
    """OOD = min(0.7, step / 1000): 0.3 at memorization (300), 0.7 at the end (1000)."""
    out = analyze_run(synthetic_metrics(mem_at=300, ood_at=None), AnalysisConfig())
    assert out["ood_at_memorization"] == pytest.approx(0.3)
    assert out["ood_gain_after_memorization"] == pytest.approx(0.4)
    assert out["delay_ratio"] is None


def test_after_memorization_of_simultaneous_generalization():
    out = analyze_run(synthetic_metrics(mem_at=300, ood_at=300), AnalysisConfig())
    assert out["ood_at_memorization"] == 1.0 and out["ood_gain_after_memorization"] == 0.0
    assert out["delay_ratio"] == 1.0


def test_after_memorization_never_memorized_is_na():
    out = analyze_run(synthetic_metrics(mem_at=2000, ood_at=500), AnalysisConfig())  # train stays < 0.9
    assert out["memorization_step"] is None and out["ood_generalization_step"] == 500
    assert out["ood_at_memorization"] is None and out["ood_gain_after_memorization"] is None
    assert out["delay_ratio"] is None


def test_slow_generalization_grokks_by_the_definition_but_gains_little():
    """OOD already 0.87 when the training set is memorized (300); it creeps over 0.9 at 600."""
    m = synthetic_metrics(mem_at=300, ood_at=None)
    ood = m["split"] == "test_inferred_ood"
    m.loc[ood, "accuracy"] = np.interp(
        m.loc[ood, "step"], [0, 300, 500, 600, 1000], [0.5, 0.87, 0.89, 0.92, 0.95]
    )
    out = analyze_run(m, AnalysisConfig())
    assert out["grokked"] is True and out["ood_generalization_step"] == 600
    assert out["ood_at_memorization"] == pytest.approx(0.87)
    assert out["ood_gain_after_memorization"] == pytest.approx(0.05)  # at the crossing, not at the end
    assert out["delay_ratio"] == 2.0


def test_accuracy_at_takes_the_last_evaluation_at_or_before():
    steps, acc = np.array([0, 100, 300]), np.array([0.1, 0.2, 0.3])
    assert [accuracy_at(steps, acc, s) for s in (0, 100, 250, 300, 5000)] == [0.1, 0.2, 0.2, 0.3, 0.3]
    assert accuracy_at(steps[1:], acc[1:], 50) is None


def write_run(d, seed: int, mem_at: int, ood_at: int | None) -> None:
    d.mkdir(parents=True)
    synthetic_metrics(mem_at, ood_at).to_parquet(d / "metrics.parquet")
    cell = {"dataset": "a", "model": "gpt", "training": "default", "seed": seed}
    info = {"run_id": f"a/gpt/default/seed{seed}", "cell": cell, "n_params": 10, "inputs": [str(d / "none")],
            "config": {"model": {"family": "gpt"}, "training": {"lr": 0.001}}, "wall_seconds": 1.0,
            "device": "cpu"}  # fmt: skip
    (d / "run.json").write_text(json.dumps(info))


def test_summary_columns_after_memorization(tmp_path):
    write_run(tmp_path / "r0", 0, mem_at=300, ood_at=800)
    write_run(tmp_path / "r1", 1, mem_at=2000, ood_at=None)  # never memorized: NA
    df = summarize([tmp_path / "r0", tmp_path / "r1"], AnalysisConfig())
    new = ["ood_at_memorization", "ood_gain_after_memorization", "delay_ratio"]
    cols = list(df.columns)
    assert cols[cols.index("final_step") + 1 : cols.index("final_step") + 4] == new
    assert cols.index("selection_step") < cols.index("final_step") < cols.index("final_acc_test_inferred_ood")
    assert all(str(df[c].dtype) == "Float64" for c in new)
    assert df["ood_gain_after_memorization"].tolist()[0] == 0.5 and df[new].iloc[1].isna().all()
    assert set(new) <= set(SUMMARY_COLUMNS)
    assert list(SUMMARY_COLUMNS).index("final_step") + 1 == list(SUMMARY_COLUMNS).index(new[0])
    assert df["model.family"].tolist() == ["gpt", "gpt"] and df["train.lr"].tolist() == [0.001, 0.001]
