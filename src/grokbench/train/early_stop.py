"""Early stop, opt-in: end a run once it has memorized and generalized OOD and stayed there.

`training.<name>.early_stop: {evals: k}` stops a run after the evaluation at which (a) the memorization
split has reached its threshold and stayed there, and (b) the OOD split has reached its threshold and
stayed there for k further evaluations, "stayed" meaning no evaluation since fell below the threshold
minus the tolerance: the analysis's definitions (grokbench.curves.first_stable_step), applied
to the curve so far. The splits, thresholds and tolerance default to the analysis's defaults; a study's
validation requires them to equal its `analysis` section, so that a stopped run's steps mean what the
summary says.

What a truncated curve means: the memorization and OOD generalization steps of a stopped run are those
an uninterrupted run would report unless its accuracy later fell below threshold - tolerance again after
the stop (a dip after k stable evaluations); "stays" then means "stays until the run stopped". Runs that
never generalize OOD never stop early, so every censored run (never reached the threshold) trained its
whole budget, and the claims' censoring at the final step is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..curves import Transitions, first_stable_step


@dataclass(frozen=True)
class EarlyStop(Transitions):
    """The splits and thresholds (Transitions: id_split is not used here) must equal the analysis's."""

    evals: int = 4  # evaluations after the OOD generalization step that must stay above

    def check(self, where: str) -> None:
        if self.evals < 1:
            raise ValueError(f"{where}.evals={self.evals}: expected an integer >= 1")
        for key in ("memorization_threshold", "threshold", "tolerance"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{where}.{key}={getattr(self, key)}: expected a number in [0, 1]")

    def reached(self, rows: list[dict]) -> bool:
        """Whether the evaluations so far (rows of step, split, accuracy) meet the stop criterion."""

        def curve(split: str) -> tuple[np.ndarray, np.ndarray]:
            pairs = [(r["step"], r["accuracy"]) for r in rows if r["split"] == split]
            return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=float)

        mem_steps, mem_acc = curve(self.memorization_split)
        if first_stable_step(mem_steps, mem_acc, self.memorization_threshold, self.tolerance) is None:
            return False
        steps, acc = curve(self.ood_split)
        ood = first_stable_step(steps, acc, self.threshold, self.tolerance)
        return ood is not None and int((steps > ood).sum()) >= self.evals
