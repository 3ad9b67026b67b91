"""Paper-ready figures: one theme, a colorblind-safe palette, single-column width, log-scaled steps.

- `plot_curves`: accuracy vs training step per split, one panel per (dataset, model, training) cell,
  one line per seed, with each seed's memorization (dotted) and OOD generalization (dashed) steps marked.
- `plot_grokking`: steps to memorize vs steps to generalize (ID and OOD) for every run; runs that never
  reached a threshold are drawn as open markers at the right edge, labelled "never".
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402

COLUMN_WIDTH = 3.35  # inches: one column of a two-column paper
SPLIT_LABELS = {
    "train_inferred_id": "train inferred",
    "train_atomic_id": "train atomic (ID)",
    "train_atomic_ood": "train atomic (OOD)",
    "test_inferred_id": "test ID",
    "test_inferred_ood": "test OOD",
}
EVENTS = {
    "memorization_step": "memorized",
    "id_generalization_step": "ID generalized",
    "ood_generalization_step": "OOD generalized",
}


def set_theme() -> None:
    sns.set_theme(
        context="paper",
        style="ticks",
        palette="colorblind",
        font_scale=0.9,
        rc={"axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 300},
    )


def save(fig: plt.Figure, pdf: str | Path, png: str | Path) -> None:
    """Write the figure as PDF and PNG, each atomically."""
    for path, fmt in ((pdf, "pdf"), (png, "png")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
    plt.close(fig)


def cell_label(row: pd.Series) -> str:
    return f"{row['model']} · {row['dataset']}" + (
        f" · {row['training']}" if row.get("training") not in (None, "default") else ""
    )


def load_curves(summary: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for _, row in summary.iterrows():
        m = pd.read_parquet(Path(row["run_dir"]) / "metrics.parquet")
        m["cell"], m["seed"] = cell_label(row), row["seed"]
        frames.append(m)
    return pd.concat(frames, ignore_index=True)


def plot_curves(summary: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    set_theme()
    curves = load_curves(summary)
    curves = curves[curves["split"].isin(SPLIT_LABELS) & (curves["step"] > 0)].copy()
    curves["split"] = curves["split"].map(SPLIT_LABELS)
    order = [v for v in SPLIT_LABELS.values() if v in set(curves["split"])]
    palette = dict(zip(SPLIT_LABELS.values(), sns.color_palette("colorblind")))
    cells = list(dict.fromkeys(curves["cell"]))
    ncol = min(2, len(cells))
    nrow = math.ceil(len(cells) / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(COLUMN_WIDTH * ncol, 2.2 * nrow), squeeze=False, sharey=True
    )
    for ax, cell in zip(axes.flat, cells):
        data = curves[curves["cell"] == cell]
        sns.lineplot(
            data=data,
            x="step",
            y="accuracy",
            hue="split",
            hue_order=order,
            palette=palette,
            units="seed",
            estimator=None,
            lw=1,
            alpha=0.85,
            ax=ax,
            legend=ax is axes.flat[0],
        )
        runs = summary[summary.apply(cell_label, axis=1) == cell]
        for _, r in runs.iterrows():
            if pd.notna(r["memorization_step"]) and r["memorization_step"] > 0:
                ax.axvline(r["memorization_step"], color=palette["train inferred"], ls=":", lw=0.8)
            if pd.notna(r["ood_generalization_step"]) and r["ood_generalization_step"] > 0:
                ax.axvline(r["ood_generalization_step"], color=palette["test OOD"], ls="--", lw=0.8)
        ax.set(xscale="log", ylim=(-0.02, 1.02), title=cell, xlabel="training step")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(cells) :]:
        ax.set_visible(False)
    first = axes.flat[0]
    if first.get_legend() is not None:
        sns.move_legend(
            fig if len(cells) > 1 else first,
            "lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=3,
            title=None,
            frameon=False,
        ) if len(cells) > 1 else sns.move_legend(first, "lower right", title=None, frameon=False)
    fig.tight_layout()
    save(fig, pdf, png)


def plot_grokking(summary: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    set_theme()
    events = [e for e in EVENTS if e in summary.columns]
    long = summary.assign(cell=summary.apply(cell_label, axis=1)).melt(
        id_vars=["cell", "seed"], value_vars=events, var_name="event", value_name="step"
    )
    long["event"] = long["event"].map(EVENTS)
    reached = long[long["step"].notna()].astype({"step": float})
    never = long[long["step"].isna()]
    cells = list(dict.fromkeys(long["cell"]))
    right = max(float(summary["final_step"].max()), 1.0) * 1.6
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 0.5 + 0.45 * len(cells) + 0.6))
    palette = dict(zip(EVENTS.values(), sns.color_palette("colorblind")[2:5]))
    sns.stripplot(
        data=reached,
        x="step",
        y="cell",
        hue="event",
        order=cells,
        hue_order=list(EVENTS.values()),
        palette=palette,
        dodge=True,
        jitter=False,
        size=5,
        ax=ax,
        log_scale=True,
    )
    if not never.empty:
        y = {c: i for i, c in enumerate(cells)}
        offsets = dict(zip(EVENTS.values(), (-0.27, 0.0, 0.27)))
        for _, r in never.iterrows():
            ax.scatter(
                right,
                y[r["cell"]] + offsets[r["event"]],
                marker="o",
                s=25,
                facecolors="none",
                edgecolors=palette[r["event"]],
                zorder=3,
            )
        ax.axvline(right / 1.25, color="0.7", lw=0.6)
        ax.text(right, -0.6, "never", ha="center", va="bottom", fontsize=7, color="0.3")
    ax.set(xlabel="training step (log)", ylabel=None)
    ax.set_xlim(right=right * 1.3)
    sns.move_legend(
        ax,
        "lower center",
        bbox_to_anchor=(0.5, 1.02),
        ncol=3,
        title=None,
        frameon=False,
        fontsize=7,
    )
    fig.tight_layout()
    save(fig, pdf, png)
