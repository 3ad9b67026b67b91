"""Survival statistics for "how soon": steps to the OOD threshold as right-censored times.

A run's time is its `ood_generalization_step`; a run that never reached the threshold is *censored* at its
`final_step`: all we know is that it would have taken longer than its budget, if it ever got there. The
estimates come from lifelines (https://lifelines.readthedocs.io), not from code of ours:

- Kaplan-Meier estimate S(t) of the fraction of runs still short of the threshold at step t
  (`kaplan_meier`); the figure `survival` draws 1 - S(t), the fraction generalized OOD by step t, with
  lifelines' 95% pointwise interval (exponential Greenwood, "log(-log)") and a tick per censored run;
- the KM median (`km_median`): the first step at which S(t) <= 0.5, i.e. half the runs are estimated to
  have generalized; `inf` when S stays above 0.5 over the observed steps ("not reached": the median is
  beyond the last step any run was followed to);
- the log-rank test (`logrank`, lifelines.statistics.logrank_test): two-sided, chi-square with one degree
  of freedom, of the null hypothesis that two groups of runs share one survival curve. Ties (runs reaching
  the threshold at the same evaluation) are handled as grouped events; a run censored at a step is still
  at risk at that step;
- the ratio of KM medians, than / where, with a 95% percentile-bootstrap interval (`median_ratio`): runs
  resampled with replacement within each side, the KM median of each resample, quantiles of the ratios by
  the inverted empirical CDF (order statistics, so that infinite ratios are ordered, not interpolated).
  A draw whose two medians are both not reached has no ratio: it counts as 0 for the lower bound and as
  infinity for the upper bound, i.e. against any conclusion.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from .analysis import steps_or_final

STEP_COLUMN = "ood_generalization_step"
ALPHA = 0.05  # two-sided level of the log-rank test and of the intervals (95%)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lifelines 0.30 calls pandas in ways pandas 3 warns about (positional arguments, fillna downcasting):
    silence those warnings around its calls only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def durations(rows: pd.DataFrame, column: str = STEP_COLUMN) -> tuple[np.ndarray, np.ndarray]:
    """(times, observed) per run: the step the run reached the threshold, or its final step if it never
    did (observed False: censored there)."""
    observed = rows[column].notna().to_numpy(bool)
    return steps_or_final(rows, column).to_numpy(float), observed


def kaplan_meier(times: np.ndarray, observed: np.ndarray, label: str | None = None) -> Any:
    """A fitted lifelines.KaplanMeierFitter (95% intervals)."""
    from lifelines import KaplanMeierFitter

    with _quiet():
        return KaplanMeierFitter(alpha=ALPHA).fit(
            np.asarray(times, float), np.asarray(observed, bool), label=label
        )


def km_median(times: np.ndarray, observed: np.ndarray) -> float:
    """The Kaplan-Meier median time; inf when the estimate never drops to 0.5 (not reached)."""
    return float(kaplan_meier(times, observed).median_survival_time_)


def logrank(
    times_a: np.ndarray, observed_a: np.ndarray, times_b: np.ndarray, observed_b: np.ndarray
) -> tuple[float, float]:
    """(chi-square statistic, two-sided p-value) of the log-rank test between two groups; (0, 1) when no
    run of either group reached the threshold (nothing to compare)."""
    from lifelines.statistics import logrank_test

    if not (np.any(observed_a) or np.any(observed_b)):
        return 0.0, 1.0
    with _quiet():
        result = logrank_test(
            np.asarray(times_a, float),
            np.asarray(times_b, float),
            event_observed_A=np.asarray(observed_a, bool),
            event_observed_B=np.asarray(observed_b, bool),
        )
    return float(result.test_statistic), float(result.p_value)


def _ratio(median_a: float, median_b: float) -> float:
    """median_b / median_a with not-reached medians (inf): inf / x = inf, x / inf = 0, inf / inf = NaN."""
    if math.isinf(median_a) and math.isinf(median_b):
        return math.nan
    if math.isinf(median_a):
        return 0.0
    if math.isinf(median_b):
        return math.inf
    if median_a == 0:
        return math.nan if median_b == 0 else math.inf
    return median_b / median_a


def median_ratio(
    times_a: np.ndarray,
    observed_a: np.ndarray,
    times_b: np.ndarray,
    observed_b: np.ndarray,
    n_boot: int,
    seed: int,
) -> tuple[float, float, float]:
    """KM median of b / KM median of a and its 95% percentile-bootstrap interval (each side resampled on
    its own, `n_boot` draws from numpy's default_rng(seed)); see the module docstring for medians that
    are not reached."""
    ta, ea = np.asarray(times_a, float), np.asarray(observed_a, bool)
    tb, eb = np.asarray(times_b, float), np.asarray(observed_b, bool)
    cache: dict[tuple, float] = {}  # a resample is a multiset of runs: few distinct ones for few seeds

    def median(t: np.ndarray, e: np.ndarray) -> float:
        key = tuple(sorted(zip(t.tolist(), e.tolist())))
        if key not in cache:
            cache[key] = km_median(t, e)
        return cache[key]

    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(ta), size=(n_boot, len(ta)))
    ib = rng.integers(0, len(tb), size=(n_boot, len(tb)))
    ratios = np.array([_ratio(median(ta[i], ea[i]), median(tb[j], eb[j])) for i, j in zip(ia, ib)])
    undefined = np.isnan(ratios)
    q = [ALPHA / 2, 1 - ALPHA / 2]
    low = np.quantile(np.where(undefined, 0.0, ratios), q[0], method="inverted_cdf")
    high = np.quantile(np.where(undefined, math.inf, ratios), q[1], method="inverted_cdf")
    return _ratio(median(ta, ea), median(tb, eb)), float(low), float(high)


def median_text(median: float, times: np.ndarray) -> str:
    """A KM median for the evidence: the step, or "> <last step followed>" when not reached."""
    return f"> {np.max(times):.0f} (not reached)" if math.isinf(median) else f"{median:.0f}"


def ratio_text(median_a: float, median_b: float, times_a: np.ndarray, times_b: np.ndarray) -> str:
    """median_b / median_a for the evidence; a bound where one median is not reached (it lies beyond its
    side's last step)."""
    ratio = _ratio(median_a, median_b)
    if math.isnan(ratio):
        return "undefined (neither median reached)"
    if math.isinf(median_b) and median_a > 0:
        return f"> {np.max(times_b) / median_a:.2f}"
    if math.isinf(median_a):
        return f"< {median_b / np.max(times_a):.2f}"
    return f"{ratio:.2f}"
