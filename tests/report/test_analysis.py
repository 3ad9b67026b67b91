"""Grokking detection on synthetic curves with known answers."""

import numpy as np
import pandas as pd
import pytest

from grokbench.report.analysis import AnalysisConfig, analyze_run, first_stable_step

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
