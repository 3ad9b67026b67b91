"""Reports from the runs: the summary (analysis), hyperparameter selection, the claims' verdicts, tables
and figures (plots). Each reads run outputs; none trains."""

from __future__ import annotations

from typing import Any

# every study's figures (report.plots); its `sweeps` add sweep_<name>
FIGURES = ("curves", "grokking", "survival")


def figure_names(config: dict[str, Any]) -> list[str]:
    """Every figure of a study: the fixed ones, then one per sweep."""
    return [*FIGURES, *(f"sweep_{name}" for name in config.get("sweeps", {}))]
