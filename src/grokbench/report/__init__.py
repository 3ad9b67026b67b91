"""Reports from the runs: the summary (analysis), hyperparameter selection, the claims' verdicts, tables
and figures (plots). Each reads run outputs; none trains."""

from __future__ import annotations

from typing import Any

# every study's figures (report.plots); its `sweeps` add sweep_<name>
FIGURES = ("curves", "grokking", "survival")
# a study's figures from its runs' checkpoints, where some run keeps them (workflow/rules/mech.smk): weight
# norms (report.plots), probe accuracy, logit lens and causal tracing (report.mech_plots)
MECH_FIGURES = ("weight_norms", "probes", "logit_lens", "tracing")


def checkpointed(config: dict[str, Any]) -> list:
    """The runs (grid.Cell) of a validated study whose training setting keeps checkpoints."""
    from ..grid import cells
    from ..train.config import TrainConfig

    keeps = {t: TrainConfig.from_dict(spec).checkpoints is not None for t, spec in config["training"].items()}
    return [c for c in cells(config) if keeps[c.training]]


def figure_names(config: dict[str, Any]) -> list[str]:
    """Every figure of a study: the fixed ones, one per sweep, then the mech ones if some run keeps
    checkpoints."""
    mech = MECH_FIGURES if checkpointed(config) else ()
    return [*FIGURES, *(f"sweep_{name}" for name in config.get("sweeps", {})), *mech]
