"""Heatmaps (layer x position) of the mechanistic tables of grokbench.mech: the logit lens and causal tracing.

- `plot_logit_lens`: the mean probability (or rank, top-1 rate) of the target token read off every layer
  (rows, the embedding at the bottom) and input position (columns, named by their role), one panel per
  group (split);
- `plot_tracing`: the recovery of the clean answer when one (layer, position) is restored from the clean
  run, for one corrupted position, one panel per group, with a last column for restoring every position
  of the layer.

Both take the tables `grokbench mech` writes (logit_lens.parquet, tracing.parquet), at one training step
(default: the last in the table), and write a PDF and a PNG like the figures of report/plots.py.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .plots import COLUMN_WIDTH, SPLIT_LABELS, save, set_theme  # noqa: E402

ALL = -1  # grokbench.mech.tracing.ALL: the rows restoring every position
GROUP_ORDER = ("train", "test_inferred_id", "test_inferred_ood")  # the splits of grokbench.mech.facts
GROUP_LABELS = {**SPLIT_LABELS, "train": "train inferred"}


def _at_step(table: pd.DataFrame, step: int | None) -> pd.DataFrame:
    if "step" not in table or table.empty:
        return table
    step = int(table["step"].max()) if step is None else step
    out = table[table["step"] == step]
    if out.empty:
        raise ValueError(f"no rows at step {step}; steps: {sorted(table['step'].unique())}")
    return out


def heatmap_frame(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """`value` as a (layer x position) frame: rows layers, the last layer first (the top of the plot),
    columns positions named by `role` where the table has one ("all" for position -1, put last)."""
    if value not in table:
        raise ValueError(f"no column {value!r}; columns: {list(table.columns)}")
    if table.duplicated(["layer", "position"]).any():
        raise ValueError("several rows per (layer, position): select one step, group and target first")
    grid = table.pivot(index="layer", columns="position", values=value).sort_index(ascending=False)
    order = sorted(grid.columns, key=lambda p: (p == ALL, p))
    grid = grid[order]
    if "role" in table:
        roles = dict(zip(table["position"], table["role"]))
        grid.columns = [roles.get(p) or str(p) for p in order]
    else:
        grid.columns = ["all" if p == ALL else str(p) for p in order]
    return grid


def _panels(
    table: pd.DataFrame, value: str, title: str, pdf, png, vmin: float | None, vmax: float | None, cmap: str
) -> None:
    set_theme()
    known = {g: i for i, g in enumerate(GROUP_ORDER)}
    groups = sorted(table["group"].unique(), key=lambda g: (known.get(g, len(known)), str(g)))
    if not groups:
        raise ValueError("empty table: nothing to plot")
    grids = [heatmap_frame(table[table["group"] == g], value) for g in groups]
    width = max(COLUMN_WIDTH, 0.45 * grids[0].shape[1] * len(groups) + 1.2)
    height = max(1.8, 0.28 * grids[0].shape[0] + 1.0)
    fig, axes = plt.subplots(1, len(groups), figsize=(width, height), sharey=True, squeeze=False)
    small = grids[0].size <= 80
    for ax, group, grid in zip(axes[0], groups, grids, strict=True):
        sns.heatmap(grid, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, annot=small, fmt=".2f",
                    annot_kws={"fontsize": 5}, cbar=ax is axes[0][-1], square=False)  # fmt: skip
        ax.set_title(GROUP_LABELS.get(group, str(group)), fontsize=8)
        ax.set_xlabel("position")
        ax.set_ylabel("layer" if ax is axes[0][0] else "")
        ax.tick_params(axis="x", labelrotation=45, labelsize=6)
        ax.tick_params(axis="y", labelrotation=0, labelsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save(fig, pdf, png)


def plot_logit_lens(
    table: pd.DataFrame,
    pdf: str | Path,
    png: str | Path,
    *,
    target: str = "answer",
    value: str = "prob",
    step: int | None = None,
) -> None:
    """Heatmap of the logit lens table's `value` (prob, log_prob, rank or top1) for `target` ("answer",
    or "bridge" for composition) at training `step` (default: the last), one panel per group."""
    t = _at_step(table, step)
    if "target" in t:
        t = t[t["target"] == target]
    bounded = value in ("prob", "top1")
    where = f" at step {int(t['step'].iloc[0])}" if "step" in t and len(t) else ""
    _panels(t, value, f"logit lens: {value} of the {target}{where}", pdf, png,
            0.0 if bounded else None, 1.0 if bounded else None, "viridis")  # fmt: skip


def plot_tracing(
    table: pd.DataFrame,
    pdf: str | Path,
    png: str | Path,
    *,
    value: str = "recovery",
    step: int | None = None,
    corrupted: int | None = None,
) -> None:
    """Heatmap of the tracing table's `value` (recovery, ld_recovery, p_patched, ...) at training `step`
    (default: the last) for the corruption of position `corrupted` (default: the first in the table), one
    panel per group; the last column restores every position of the layer."""
    t = _at_step(table, step)
    if "corrupted" in t and len(t):
        corrupted = int(t["corrupted"].min()) if corrupted is None else corrupted
        t = t[t["corrupted"] == corrupted]
        if t.empty:
            known = sorted(table["corrupted"].unique())
            raise ValueError(f"no rows with position {corrupted} corrupted; corrupted: {known}")
    recovery = value.endswith("recovery")
    where = f" at step {int(t['step'].iloc[0])}" if "step" in t and len(t) else ""
    corrupted = f", position {int(t['corrupted'].iloc[0])} corrupted" if "corrupted" in t and len(t) else ""
    _panels(t, value, f"causal tracing: {value}{where}{corrupted}", pdf, png,
            0.0 if recovery else None, 1.0 if recovery else None, "magma")  # fmt: skip
