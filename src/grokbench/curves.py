"""When a curve has reached a threshold and stayed there: the one definition the analysis (memorization and
generalization steps), early stop (grokbench.train.early_stop) and the transition checkpoints
(grokbench.train.checkpoints) share, with the splits and thresholds that name the transitions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Transitions:
    """The splits and thresholds that define memorization and ID / OOD generalization: the analysis's
    section, and the same keys in the training options that act on them (early stop, checkpoints), which a
    study must set to the analysis's values (grokbench.study)."""

    memorization_split: str = "train_inferred_id"
    memorization_threshold: float = 0.99
    id_split: str = "test_inferred_id"
    ood_split: str = "test_inferred_ood"
    threshold: float = 0.9
    tolerance: float = 0.0


TRANSITION_KEYS = tuple(Transitions.__dataclass_fields__)


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
