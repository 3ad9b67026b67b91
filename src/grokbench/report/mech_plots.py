"""Heatmaps (layer x position) of the mechanistic tables of grokbench.mech: the logit lens and causal tracing.

- `plot_logit_lens`: the mean probability (or rank, top-1 rate) of the target token read off every layer
  (rows, the embedding at the bottom) and input position (columns, named by their role), one panel per
  group (split);
- `plot_tracing`: the recovery of the clean answer when one (layer, position) is restored from the clean
  run, for one corrupted position, one panel per group, with a last column for restoring every position
  of the layer.

Both take the tables `grokbench mech` writes (logit_lens.parquet, tracing.parquet), at one training step
(default: the last in the table), and write a PDF and a PNG like the figures of report/plots.py.

The study's figures over every checkpointed run's tables and the summary (workflow/rules/mech.smk):
- `plot_probes` (probes): probe accuracy on held-out ID and on OOD entities vs the checkpoint step, one
  line per run colored by model, memorization and OOD generalization steps marked;
- `plot_lens_transition` (logit_lens), `plot_tracing_transition` (tracing): the heatmaps above on the OOD
  test facts for one run per cell, at its checkpoint before and after the OOD transition (`before_after`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .plots import COLUMN_WIDTH, SPLIT_LABELS, cell_label, save, set_theme  # noqa: E402

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


# The study's figures over every checkpointed run's tables (workflow/rules/mech.smk; `grokbench plot
# probes|logit_lens|tracing`), with the transitions from the summary (grokbench.report.analysis).
OOD_GROUP = "test_inferred_ood"
PROBE_SPLITS = {"test_id": "held-out ID entities", "test_ood": "OOD entities"}


def _placeholder(message: str, pdf: str | Path, png: str | Path) -> None:
    """A figure that says why there is nothing to draw (a study whose tasks give no such rows)."""
    set_theme()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=7, wrap=True)
    save(fig, pdf, png)


def _palette(summary: pd.DataFrame) -> dict[str, tuple]:
    models = list(dict.fromkeys(summary["model"]))
    return dict(zip(models, sns.color_palette("colorblind", max(len(models), 1))))


def representative_runs(summary: pd.DataFrame, run_ids) -> pd.DataFrame:
    """One run per (dataset, model, training) cell among `run_ids`: the lowest seed that generalized OOD
    (the summary's ood_generalization_step), else the lowest seed; in the summary's order."""
    s = summary[summary["run_id"].isin(set(run_ids))].copy()
    s["_never"] = s["ood_generalization_step"].isna()
    s["_order"] = range(len(s))
    first = s.sort_values(["_never", "seed"]).groupby(["dataset", "model", "training"], sort=False).head(1)
    return first.sort_values("_order").drop(columns=["_never", "_order"])


def _known(value) -> bool:
    return value is not None and pd.notna(value)


def before_after(steps, memorization_step=None, ood_step=None) -> list[tuple[str, int, str]]:
    """The two checkpoints of a run its transition figures compare, as (which, step, label), from the
    run's checkpoint `steps` and its summary's memorization and OOD generalization steps:
    - before: the checkpoint at the memorization step, else the last one before it; the first checkpoint
      where the run never memorized (or has none at or before it);
    - after: the checkpoint at the OOD generalization step, else the first one after it; the final
      checkpoint where the run never generalized OOD (or has none at or after it)."""
    steps = sorted(int(s) for s in set(steps))
    if not steps:
        raise ValueError("no checkpoints")
    at_or_before = [s for s in steps if _known(memorization_step) and s <= memorization_step]
    if at_or_before:
        b = at_or_before[-1]
        before = (b, "memorized" if b == memorization_step else "before memorization")
    else:
        before = (steps[0], "first" + ("" if _known(memorization_step) else ", never memorized"))
    at_or_after = [s for s in steps if _known(ood_step) and s >= ood_step]
    if at_or_after:
        a = at_or_after[0]
        after = (a, "OOD generalized" if a == ood_step else "after OOD generalization")
    else:
        after = (steps[-1], "final" + ("" if _known(ood_step) else ", never OOD-generalized"))
    return [("before", before[0], before[1]), ("after", after[0], after[1])]


def probe_curves(probes: pd.DataFrame) -> pd.DataFrame:
    """Per run, step and probe target: the held-out ID and OOD accuracy (splits test_id, test_ood) at one
    layer, the one whose probe decodes the held-out ID entities best (the lowest such layer on ties),
    with its majority-class baseline; columns run_id, step, target, position, layer, split, accuracy,
    majority_accuracy."""
    keys = ["run_id", "step", "target", "position"]
    p = probes[probes["split"].isin(list(PROBE_SPLITS))]
    held = p[p["split"] == "test_id"].sort_values([*keys, "layer"])
    if held.empty:
        return p.iloc[:0][[*keys, "layer", "split", "accuracy", "majority_accuracy"]]
    best = held.loc[held.groupby(keys, sort=False)["accuracy"].idxmax(), [*keys, "layer"]]
    out = p.merge(best, on=[*keys, "layer"])
    return out[[*keys, "layer", "split", "accuracy", "majority_accuracy"]].sort_values([*keys, "split"])


def plot_probes(summary: pd.DataFrame, probes: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Probe accuracy against the checkpoint step (log; step 0 left out), one row of panels per dataset
    and probe target (and training setting other than the default), one column per split (held-out ID
    entities, OOD entities), one line per run colored by model, at the layer `probe_curves` picks; each
    run's memorization (dotted) and OOD generalization (dashed) steps in its color; grey: the
    majority-class baseline."""
    probes = probes[probes["run_id"].isin(summary["run_id"])]
    curves = probe_curves(probes)
    curves = curves[curves["step"] > 0]
    if curves.empty:
        _placeholder("no probe rows: the tasks of these runs have no probe target (grokbench.mech.facts)",
                     pdf, png)  # fmt: skip
        return
    set_theme()
    info = summary.set_index("run_id")
    curves = curves.join(info[["dataset", "model", "training"]], on="run_id")
    panels = list(dict.fromkeys(zip(curves["dataset"], curves["target"], curves["training"])))
    palette = _palette(summary)
    fig, axes = plt.subplots(len(panels), len(PROBE_SPLITS), figsize=(COLUMN_WIDTH * 2, 2.1 * len(panels)),
                             squeeze=False, sharex=True, sharey=True)  # fmt: skip
    for row, (dataset, target, training) in zip(axes, panels):
        panel = curves[(curves["dataset"] == dataset) & (curves["target"] == target)
                       & (curves["training"] == training)]  # fmt: skip
        for ax, (split, label) in zip(row, PROBE_SPLITS.items()):
            data = panel[panel["split"] == split]
            for run_id, line in data.groupby("run_id", sort=False):
                r = info.loc[run_id]
                color = palette[r["model"]]
                ax.plot(line["step"], line["accuracy"], color=color, lw=1.1, marker="o", markersize=2.5)
                for column, ls in (("memorization_step", ":"), ("ood_generalization_step", "--")):
                    if _known(r[column]) and r[column] > 0:
                        ax.axvline(r[column], color=color, ls=ls, lw=0.8, alpha=0.8)
            if not data.empty:
                ax.axhline(float(data["majority_accuracy"].mean()), color="0.6", lw=0.7, zorder=1)
            where = f"{dataset} · {target}" + (f" · {training}" if training != "default" else "")
            ax.set(xscale="log", ylim=(-0.02, 1.02), title=f"{where}: {label}")
            ax.title.set_fontsize(7)
        row[0].set_ylabel("probe accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("training step (log)")
    shown = set(curves["model"])
    handles = [
        Line2D([], [], color=c, lw=1.1, marker="o", markersize=2.5, label=m)
        for m, c in palette.items()
        if m in shown
    ]
    handles += [
        Line2D([], [], color="0.3", ls=":", lw=0.8, label="memorized"),
        Line2D([], [], color="0.3", ls="--", lw=0.8, label="OOD generalized"),
        Line2D([], [], color="0.6", lw=0.7, label="majority class"),
    ]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(7, len(handles)),
               frameon=False, fontsize=7)  # fmt: skip
    save(fig, pdf, png)


def _transition_figure(summary: pd.DataFrame, table: pd.DataFrame, name: str, value: str, cmap: str,
                       pdf: str | Path, png: str | Path, select) -> None:  # fmt: skip
    """Rows: one run per cell (`representative_runs`); columns: its checkpoints before and after the OOD
    transition (`before_after`); each a (layer x position) heatmap of `value` on the OOD test facts
    (the last group there is where a table has none) of the rows `select(run_table)` keeps."""
    table = table[table["run_id"].isin(summary["run_id"])]
    runs = representative_runs(summary, table["run_id"].unique())
    frames = []
    for _, r in runs.iterrows():
        t = select(table[table["run_id"] == r["run_id"]])
        if t.empty:
            continue
        groups = [g for g in GROUP_ORDER if g in set(t["group"])] or sorted(t["group"].unique())
        group = OOD_GROUP if OOD_GROUP in groups else groups[-1]
        t = t[t["group"] == group]
        pair = before_after(t["step"], r["memorization_step"], r["ood_generalization_step"])
        frames.append((r, group, [(f"{w}, step {s}\n({label})", heatmap_frame(t[t["step"] == s], value))
                                  for w, s, label in pair]))  # fmt: skip
    if not frames:
        _placeholder(f"no {name} rows for these runs (grokbench.mech)", pdf, png)
        return
    set_theme()
    n_pos = max(g.shape[1] for _, _, grids in frames for _, g in grids)
    heights = [max(g.shape[0] for _, g in grids) for _, _, grids in frames]
    width = max(COLUMN_WIDTH, 2 * (0.42 * n_pos + 0.9))
    height = sum(0.3 * h + 0.85 for h in heights)
    ratios = {"height_ratios": [h + 2 for h in heights]}
    fig, axes = plt.subplots(len(frames), 2, figsize=(width, height), squeeze=False, gridspec_kw=ratios)
    for row, (r, _, grids) in zip(axes, frames):
        for ax, (title, grid) in zip(row, grids):
            sns.heatmap(grid, ax=ax, vmin=0.0, vmax=1.0, cmap=cmap, annot=grid.size <= 80, fmt=".2f",
                        annot_kws={"fontsize": 5}, cbar=ax is row[-1])  # fmt: skip
            ax.set_title(f"{cell_label(r)}, seed {r['seed']}\n{title}", fontsize=7)
            ax.set_xlabel("position")
            ax.set_ylabel("layer" if ax is row[0] else "")
            ax.tick_params(axis="x", labelrotation=45, labelsize=6)
            ax.tick_params(axis="y", labelrotation=0, labelsize=6)
    group = frames[0][1]
    fig.tight_layout()
    fig.suptitle(f"{name}: {value} on {GROUP_LABELS.get(group, group)} facts", fontsize=8, y=1.0, va="bottom")
    save(fig, pdf, png)


def plot_lens_transition(summary: pd.DataFrame, lens: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Logit lens (probability of the correct answer; layer x position) on the OOD test facts, one row
    per cell (its `representative_runs` seed), before and after the OOD transition (`before_after`)."""
    _transition_figure(summary, lens, "logit lens", "prob", "viridis", pdf, png,
                       lambda t: t[t["target"] == "answer"] if "target" in t else t)  # fmt: skip


def plot_tracing_transition(summary: pd.DataFrame, tracing: pd.DataFrame, pdf: str | Path,
                            png: str | Path) -> None:  # fmt: skip
    """Causal tracing (recovery of the clean answer when one layer x position is restored; last column:
    every position) on the OOD test facts with the first corrupted position of each run (comparison: the
    first entity), one row per cell, before and after the OOD transition (`before_after`)."""

    def first_corrupted(t: pd.DataFrame) -> pd.DataFrame:
        return t[t["corrupted"] == t["corrupted"].min()] if len(t) else t

    _transition_figure(summary, tracing, "causal tracing", "recovery", "magma", pdf, png, first_corrupted)
