"""When a curve has reached a threshold and stayed there: the one definition the analysis (memorization and
generalization steps) and early stop (grokbench.train.early_stop) share."""

from __future__ import annotations

import numpy as np


def first_stable_step(
    steps: np.ndarray, acc: np.ndarray, threshold: float, tolerance: float = 0.0
) -> int | None:
    """First step whose accuracy is >= threshold and after which it never drops below
    threshold - tolerance; None if there is none. `steps` must be increasing."""
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    if len(acc) == 0:
        return None
    # suffix minimum: the lowest accuracy from each evaluation on
    suffix_min = np.minimum.accumulate(acc[::-1])[::-1]
    ok = (acc >= threshold) & (suffix_min >= threshold - tolerance)
    hits = np.flatnonzero(ok)
    return int(steps[hits[0]]) if len(hits) else None
