"""Survival statistics (grokbench.report.survival) against worked examples whose answers are computed here
by hand, in closed form, never by calling lifelines again; and censoring of never-reached runs."""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pandas as pd
import pytest

from grokbench.report import survival

# Freireich et al. (1963) leukaemia remission times in weeks, as in Gehan (1965) and Kleinbaum & Klein,
# "Survival Analysis: A Self-Learning Text": 6-MP group (0: censored) and placebo group (no censoring).
MP_TIMES = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
MP_EVENT = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
PLACEBO = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


def arrays(times, events) -> tuple[np.ndarray, np.ndarray]:
    return np.array(times, float), np.array(events, bool)


def test_kaplan_meier_freireich_6mp():
    """S(t) = product over event times t_j <= t of (1 - d_j / n_j): at risk n_j, events d_j. A censored
    time lowers the next n_j without a drop of its own; a time censored at an event time (6) is at risk
    at it."""
    expected = {
        6: F(18, 21),  # 21 at risk, 3 events (the 4th run at 6 is censored there)
        7: F(18, 21) * F(16, 17),  # 17 at risk
        10: F(18, 21) * F(16, 17) * F(14, 15),  # 9+ censored: 15 at risk
        13: F(18, 21) * F(16, 17) * F(14, 15) * F(11, 12),  # 10+, 11+ censored: 12
        16: F(18, 21) * F(16, 17) * F(14, 15) * F(11, 12) * F(10, 11),
        22: F(18, 21) * F(16, 17) * F(14, 15) * F(11, 12) * F(10, 11) * F(6, 7),  # 17+, 19+, 20+
        23: F(18, 21) * F(16, 17) * F(14, 15) * F(11, 12) * F(10, 11) * F(6, 7) * F(5, 6),
    }
    km = survival.kaplan_meier(*arrays(MP_TIMES, MP_EVENT))
    s = km.survival_function_.iloc[:, 0]
    for t, value in expected.items():
        assert s.loc[t] == pytest.approx(float(value), rel=1e-12)
    # the textbook's table (4 decimals)
    assert [round(float(v), 4) for v in expected.values()] == [
        0.8571, 0.8067, 0.7529, 0.6902, 0.6275, 0.5378, 0.4482
    ]  # fmt: skip
    assert s.loc[9] == s.loc[7] and s.loc[35] == s.loc[23]  # censored times: no drop
    # median: the first time S <= 0.5 (S(22) = 0.538, S(23) = 0.448); placebo: S(5) = 9/21, S(8) = 8/21
    assert survival.km_median(*arrays(MP_TIMES, MP_EVENT)) == 23
    assert survival.km_median(*arrays(PLACEBO, [1] * 21)) == 8
    assert km.cumulative_density_.iloc[:, 0].loc[23] == pytest.approx(1 - float(expected[23]))


def test_median_not_reached_is_infinite():
    assert survival.km_median(*arrays([100, 1000, 1000], [1, 0, 0])) == math.inf  # S stays at 2/3


def chi2_sf_1df(x: float) -> float:
    """P(chi-square with 1 degree of freedom > x) = erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(x / 2))


def test_logrank_small_example_with_ties_and_censoring():
    """A: 2, 3, 3+, 5; B: 3, 6, 6+, 8+. At each event time t_j with n_j at risk (n_Aj of A) and d_j
    events: E_A += d_j n_Aj / n_j, V += d_j (n_Aj / n_j) (1 - n_Aj / n_j) (n_j - d_j) / (n_j - 1)."""
    terms = [  # (d_j, n_Aj, n_j)
        (1, 4, 8),  # t = 2: one event, of A
        (2, 3, 7),  # t = 3: one of A and one of B (A's 3+ is still at risk)
        (1, 1, 4),  # t = 5: A's last run; B has 6, 6+, 8+
        (1, 0, 3),  # t = 6: no A at risk
    ]
    expected_a = sum(F(d * na, n) for d, na, n in terms)
    var = sum(F(d * na * (n - na) * (n - d), n * n * (n - 1)) for d, na, n in terms)
    assert (expected_a, var) == (F(45, 28), F(663, 784))
    chi2 = (3 - expected_a) ** 2 / var  # A had 3 events
    assert chi2 == F(39, 17)
    stat, p = survival.logrank(*arrays([2, 3, 3, 5], [1, 1, 0, 1]), *arrays([3, 6, 6, 8], [1, 1, 0, 0]))
    assert stat == pytest.approx(float(chi2), rel=1e-12)
    assert p == pytest.approx(chi2_sf_1df(float(chi2)), rel=1e-9)


def test_logrank_freireich_textbook_value():
    """Kleinbaum & Klein: log-rank chi-square 16.79 (p < 0.001) for 6-MP vs placebo."""
    stat, p = survival.logrank(*arrays(MP_TIMES, MP_EVENT), *arrays(PLACEBO, [1] * 21))
    assert round(stat, 2) == 16.79 and p == pytest.approx(chi2_sf_1df(stat), rel=1e-9) and p < 1e-3


def test_logrank_without_any_event_compares_nothing():
    assert survival.logrank(*arrays([10, 10], [0, 0]), *arrays([10], [0])) == (0.0, 1.0)


def test_durations_censor_never_reached_runs_at_their_final_step():
    rows = pd.DataFrame({"ood_generalization_step": [300, None, 500], "final_step": [1000, 800, 1000]})
    rows["ood_generalization_step"] = rows["ood_generalization_step"].astype("Int64")
    times, observed = survival.durations(rows)
    assert times.tolist() == [300, 800, 500] and observed.tolist() == [True, False, True]


def test_median_ratio_point_and_interval():
    # every resample of a side has the same median: the interval is the point
    same = survival.median_ratio(*arrays([100, 100], [1, 1]), *arrays([300, 300, 300], [1, 1, 1]), 200, 0)
    assert same == (3.0, 3.0, 3.0)
    # than never reached: ratio infinite, so is every draw's
    ratio, low, high = survival.median_ratio(*arrays([100, 200], [1, 1]), *arrays([1000] * 2, [0, 0]), 200, 0)
    assert ratio == low == high == math.inf
    # neither reached: no ratio; the undefined draws count against any conclusion
    ratio, low, high = survival.median_ratio(*arrays([1000], [0]), *arrays([1000], [0]), 200, 0)
    assert math.isnan(ratio) and (low, high) == (0.0, math.inf)
    # where [200, 400]: resampled medians 200 or 400 (S(200) = 1/2 <= 1/2); than [600, 900, 1000+]: >= 600
    a, b = arrays([200, 400], [1, 1]), arrays([600, 900, 1000], [1, 1, 0])
    ratio, low, high = survival.median_ratio(*a, *b, 2000, 0)
    assert ratio == 900 / 200 and low >= 600 / 400 and high == math.inf  # {1000+ x 3}: never reached
    assert survival.median_ratio(*a, *b, 2000, 0) == (ratio, low, high)  # reproducible


def test_median_texts():
    times = np.array([600.0, 1000.0])
    assert survival.median_text(math.inf, times) == "> 1000 (not reached)"
    assert survival.median_text(600.0, times) == "600"
    assert survival.ratio_text(200.0, math.inf, np.array([200.0]), times) == "> 5.00"
    assert survival.ratio_text(math.inf, 500.0, times, np.array([500.0])) == "< 0.50"
    assert survival.ratio_text(math.inf, math.inf, times, times) == "undefined (neither median reached)"
