"""Paper-ready figures: one theme, a colorblind-safe palette, single-column width, log-scaled steps.

- `plot_curves`: accuracy and loss vs training step per split, one row per (dataset, model, training)
  cell, one line per seed, with each seed's memorization (dotted) and OOD generalization (dashed) steps.
- `plot_grokking`: steps to memorize and to generalize (ID and OOD) for every run, a marker per seed;
  runs that never reached a threshold are open markers right of the training budget's line.
- `plot_survival`: Kaplan-Meier estimate (lifelines, grokbench.report.survival) of the fraction of runs
  generalized OOD by each step, one panel per dataset, one curve per model (and training setting), with
  95% bands and a tick per censored run (never reached the threshold within its final step).
- `plot_weight_norms`: weight norm (total and per top-level module group, grokbench.mech.weights) vs step
  at a run's checkpoints, one panel per cell, one line per seed, memorization and OOD generalization
  steps marked; only for studies that keep checkpoints (training `checkpoints`).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..io import atomic_path  # noqa: E402
from . import survival  # noqa: E402

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
    """Per cell (one row): accuracy (left) and loss (right, log) vs step per split, one line per seed, each
    seed's memorization (dotted) and OOD generalization (dashed) steps marked on both panels."""
    set_theme()
    curves = load_curves(summary)
    curves = curves[curves["split"].isin(SPLIT_LABELS) & (curves["step"] > 0)].copy()
    curves["split"] = curves["split"].map(SPLIT_LABELS)
    order = [v for v in SPLIT_LABELS.values() if v in set(curves["split"])]
    palette = dict(zip(SPLIT_LABELS.values(), sns.color_palette("colorblind")))
    cells = list(dict.fromkeys(curves["cell"]))
    fig, axes = plt.subplots(
        len(cells), 2, figsize=(COLUMN_WIDTH * 2, 2.0 * len(cells)), squeeze=False, sharex=True
    )
    for (acc_ax, loss_ax), cell in zip(axes, cells):
        data = curves[curves["cell"] == cell]
        runs = summary[summary.apply(cell_label, axis=1) == cell]
        for ax, y in ((acc_ax, "accuracy"), (loss_ax, "loss")):
            sns.lineplot(data=data, x="step", y=y, hue="split", hue_order=order, palette=palette,
                         units="seed", estimator=None, lw=1, alpha=0.85, ax=ax, legend=False)  # fmt: skip
            for _, r in runs.iterrows():
                if pd.notna(r["memorization_step"]) and r["memorization_step"] > 0:
                    ax.axvline(r["memorization_step"], color=palette["train inferred"], ls=":", lw=0.8)
                if pd.notna(r["ood_generalization_step"]) and r["ood_generalization_step"] > 0:
                    ax.axvline(r["ood_generalization_step"], color=palette["test OOD"], ls="--", lw=0.8)
            ax.set(xscale="log", xlabel="training step")
        acc_ax.set(ylim=(-0.02, 1.02))
        loss_ax.set(yscale="log", ylabel="loss (log)")
        acc_ax.set_title(cell, fontsize=8, loc="left")
    handles = [Line2D([], [], color=palette[name], lw=1.2, label=name) for name in order]
    handles += [
        Line2D([], [], color="0.3", ls=":", lw=0.8, label="memorized"),
        Line2D([], [], color="0.3", ls="--", lw=0.8, label="OOD generalized"),
    ]
    fig.tight_layout()
    fig.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False, fontsize=7
    )
    save(fig, pdf, png)


SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_grokking(summary: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Steps to memorize and to generalize (ID, OOD) per run: one row per cell, colour = event, marker =
    seed (seeds of a cell side by side, so none hides another); the dashed line is the training budget
    (the longest run's final step), and open markers right of it are runs that never reached that event."""
    set_theme()
    cells = list(dict.fromkeys(summary.apply(cell_label, axis=1)))
    budget = max(float(summary["final_step"].max()), 1.0)
    right = budget * 2.0  # where "never" markers sit
    palette = dict(zip(EVENTS.values(), sns.color_palette("colorblind")[2:5]))
    offsets = dict(zip(EVENTS.values(), (-0.27, 0.0, 0.27)))
    seeds = sorted(summary["seed"].unique())
    marker = {s: SEED_MARKERS[i % len(SEED_MARKERS)] for i, s in enumerate(seeds)}
    spread = 0.16 / max(len(seeds) - 1, 1)  # seeds of one cell and event, spread within its band
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 0.9 + 0.5 * len(cells)))
    for _, r in summary.iterrows():
        y = cells.index(cell_label(r)) + (seeds.index(r["seed"]) - (len(seeds) - 1) / 2) * spread
        for column, event in EVENTS.items():
            step = r[column]
            never = pd.isna(step)
            ax.scatter(
                right if never else max(float(step), 1.0),
                y + offsets[event],
                s=18,
                marker=marker[r["seed"]],
                facecolors="none" if never else palette[event],
                edgecolors=palette[event],
                linewidths=0.8,
                alpha=0.9,
                zorder=3,
            )
    ax.axvline(budget, color="0.55", ls="--", lw=0.7)
    ax.annotate(f"budget\n{budget:,.0f}", (budget, 0), xycoords=("data", "axes fraction"),
                xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=6,
                color="0.4")  # fmt: skip
    ax.set_xscale("log")
    reached = [float(v) for v in summary[list(EVENTS)].to_numpy().ravel() if pd.notna(v) and float(v) > 0]
    left = min([*reached, budget / 10, right / 20])
    ax.set_xlim(left / 1.5, right * 1.5)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(range(len(cells)), cells)
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_xlabel("training step (log); open markers right of the budget: never reached")
    handles = [
        Line2D([], [], ls="", marker="s", color=palette[e], label=e, markersize=5) for e in EVENTS.values()
    ]
    handles += [
        Line2D([], [], ls="", marker=marker[s], markerfacecolor="none", color="0.3", label=f"seed {s}",
               markersize=5)
        for s in seeds
    ]  # fmt: skip
    ax.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.02), ncol=3, frameon=False, fontsize=7
    )
    fig.tight_layout()
    save(fig, pdf, png)


LINESTYLES = ("-", "--", ":", "-.")


def _survival_groups(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset, model, training) of every curve, in the summary's order."""
    return list(dict.fromkeys(zip(summary["dataset"], summary["model"], summary["training"])))


def plot_survival(summary: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Kaplan-Meier fraction of runs generalized OOD (1 - S(t)) against the step (log), per dataset panel
    and per model x training setting curve; bands: lifelines' 95% pointwise intervals; ticks: censored
    runs, at their final step; the dotted line at 0.5: where a curve crosses it is its KM median."""
    set_theme()
    groups = _survival_groups(summary)
    datasets = list(dict.fromkeys(d for d, _, _ in groups))
    models = list(dict.fromkeys(m for _, m, _ in groups))
    palette = dict(zip(models, sns.color_palette("colorblind", max(len(models), 1))))
    settings = {m: list(dict.fromkeys(t for _, mm, t in groups if mm == m)) for m in models}
    style = {(m, t): LINESTYLES[i % len(LINESTYLES)] for m in models for i, t in enumerate(settings[m])}
    times = survival.durations(summary)[0]
    left = max(float(times[times > 0].min()) / 1.5 if (times > 0).any() else 1.0, 1.0)
    right = float(times.max()) * 1.3
    ncol = min(2, len(datasets))
    nrow = math.ceil(len(datasets) / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(COLUMN_WIDTH * ncol, 2.3 * nrow), squeeze=False, sharey=True
    )
    labels: dict[tuple[str, str], str] = {}
    for ax, dataset in zip(axes.flat, datasets):
        for d, model, training in groups:
            if d != dataset:
                continue
            rows = summary[
                (summary["dataset"] == d) & (summary["model"] == model) & (summary["training"] == training)
            ]
            t, observed = survival.durations(rows)
            km = survival.kaplan_meier(t, observed)
            x = km.timeline.clip(min=left)
            y = km.cumulative_density_.iloc[:, 0].to_numpy()
            band = km.confidence_interval_cumulative_density_
            color, ls = palette[model], style[(model, training)]
            ax.step(x, y, where="post", color=color, ls=ls, lw=1.2)
            ax.fill_between(x, band.iloc[:, 0], band.iloc[:, 1], step="post", color=color, alpha=0.12, lw=0)
            censored = t[~observed]
            ax.plot(censored, km.cumulative_density_at_times(censored).to_numpy(), ls="", marker="|",
                    markersize=7, markeredgewidth=1.2, color=color, zorder=3)  # fmt: skip
            name = model if len(settings[model]) == 1 and training == "default" else f"{model} · {training}"
            labels[(model, training)] = name
        ax.axhline(0.5, color="0.6", ls=":", lw=0.7)
        ax.set(xscale="log", xlim=(left, right), ylim=(-0.02, 1.02), xlabel="training step (log)")
        ax.set_title(dataset, fontsize=8)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction generalized OOD")
    for ax in list(axes.flat)[len(datasets) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=palette[m], ls=style[(m, t)], lw=1.2, label=labels[(m, t)]) for m, t in labels
    ]
    handles.append(Line2D([], [], color="0.3", ls="", marker="|", markersize=7, label="censored (never)"))
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(2 * ncol, len(handles)), frameon=False, fontsize=7)  # fmt: skip
    save(fig, pdf, png)


SWEEP_Y_LABELS = {
    "ood_generalization_step": "steps to OOD generalization",
    "id_generalization_step": "steps to ID generalization",
    "memorization_step": "steps to memorize",
    "selection_step": "steps to OOD validation accuracy",
}


def plot_sweep(summary: pd.DataFrame, spec: dict, pdf: str | Path, png: str | Path) -> None:
    """Steps to a threshold (y) against a swept setting (x), one line per `hue`, over seeds.

    The line is the mean over the seeds that reached the threshold with a 95% bootstrap confidence band;
    dots are single seeds; open markers on the "never" line are seeds that never reached it within their
    budget, and "k/n" above each point counts the seeds that did.
    """
    set_theme()
    x, y, hue = spec["x"], spec.get("y", "ood_generalization_step"), spec.get("hue", "model")
    data = summary
    for column, key in (("dataset", "datasets"), ("model", "models"), ("training", "training")):
        if spec.get(key):
            data = data[data[column].isin(spec[key])]
    for column in (x, y, hue):
        if column not in data.columns:
            raise ValueError(f"sweep: no column {column!r} in the summary; known: {sorted(data.columns)}")
    if data.empty:
        raise ValueError(f"sweep: no runs match {spec}")
    data = data.assign(_y=data[y].astype(float), _x=data[x].astype(float))
    never_y = float(data["final_step"].max()) * 1.6
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.4))
    hues = list(dict.fromkeys(data[hue]))
    palette = dict(zip(hues, sns.color_palette("colorblind")))
    reached = data[data["_y"].notna()]
    if not reached.empty:
        sns.lineplot(data=reached, x="_x", y="_y", hue=hue, hue_order=hues, palette=palette,
                     errorbar=("ci", 95), marker="o", ax=ax, legend=False)  # fmt: skip
        ax.scatter(reached["_x"], reached["_y"], s=8, color=[palette[h] for h in reached[hue]], alpha=0.5)
    missed = data[data["_y"].isna()]
    ax.scatter(missed["_x"], [never_y] * len(missed), s=22, facecolors="none",
               edgecolors=[palette[h] for h in missed[hue]], zorder=3)  # fmt: skip
    ax.axhline(never_y / 1.25, color="0.75", lw=0.6)
    for (h, xv), group in data.groupby([hue, "_x"]):
        n_ok = int(group["_y"].notna().sum())
        ax.annotate(f"{n_ok}/{len(group)}", (xv, never_y), textcoords="offset points",
                    xytext=(0, 6 + 7 * hues.index(h)), ha="center", fontsize=6, color=palette[h])  # fmt: skip
    ax.set_yscale("log")
    if spec.get("logx"):
        ax.set_xscale("log")
    ticks = sorted(data["_x"].unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(spec.get("xlabel", x))
    ax.set_ylabel(SWEEP_Y_LABELS.get(y, y) + " (log)")
    ax.set_title(spec.get("title", f"{y} vs {x}"), fontsize=8, pad=8 + 7 * len(hues))
    handles = [Line2D([], [], color=palette[h], marker="o", lw=1.2, label=str(h)) for h in hues]
    handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", color="0.3", label="never"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(4, len(handles)),
               frameon=False, fontsize=7)  # fmt: skip
    fig.tight_layout()
    save(fig, pdf, png)


def plot_weight_norms(summary: pd.DataFrame, norms: pd.DataFrame, pdf: str | Path, png: str | Path) -> None:
    """Weight norm against the step (both log), one panel per (dataset, model, training) cell, from the
    runs' weight-norm tables (grokbench.mech.weights): the total (black) and each top-level module group
    (colors), one line per seed; each seed's memorization (dotted) and OOD generalization (dashed) steps
    from the summary, in grey; the thin grey line: the total norm at initialization (step 0, off the log
    axis)."""
    set_theme()
    norms = norms[norms["level"].isin(["group", "total"]) & norms["run_id"].isin(summary["run_id"])]
    if norms.empty:
        raise ValueError("weight_norms: no weight norms of the summary's runs")
    labels = summary.apply(cell_label, axis=1)
    cell_of = dict(zip(summary["run_id"], labels))
    norms = norms.assign(cell=norms["run_id"].map(cell_of), label=norms["group"].str.rsplit(".", n=1).str[-1])
    cells = [c for c in dict.fromkeys(labels) if c in set(norms["cell"])]
    groups = list(dict.fromkeys(norms.loc[norms["level"] == "group", "label"]))
    palette = {"total": "black", **dict(zip(groups, sns.color_palette("colorblind", max(len(groups), 1))))}
    ncol = min(2, len(cells))
    nrow = math.ceil(len(cells) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(COLUMN_WIDTH * ncol, 2.3 * nrow), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        data = norms[norms["cell"] == cell]
        for (_, label), line in data.groupby(["run_id", "label"], sort=False):
            line = line.sort_values("step")
            shown = line[line["step"] > 0]
            total = label == "total"
            ax.plot(shown["step"], shown["norm"], color=palette[label], lw=1.4 if total else 0.9,
                    marker="o", markersize=2, alpha=0.9, zorder=3 if total else 2)  # fmt: skip
            start = line[line["step"] == 0]
            if total and not start.empty:
                ax.axhline(float(start["norm"].iloc[0]), color="0.6", lw=0.6, zorder=1)
        for _, r in summary[labels == cell].iterrows():
            for column, ls in (("memorization_step", ":"), ("ood_generalization_step", "--")):
                if pd.notna(r[column]) and r[column] > 0:
                    ax.axvline(r[column], color="0.35", ls=ls, lw=0.8)  # grey: the colors are groups
        ax.set(xscale="log", yscale="log", title=cell, xlabel="training step (log)")
        ax.title.set_fontsize(8)
    for ax in axes[:, 0]:
        ax.set_ylabel("weight norm (L2, log)")
    for ax in list(axes.flat)[len(cells) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=palette[g], lw=1.2, label=g) for g in ["total", *groups]]
    handles += [
        Line2D([], [], color="0.35", ls=":", lw=0.8, label="memorized"),
        Line2D([], [], color="0.35", ls="--", lw=0.8, label="OOD generalized"),
        Line2D([], [], color="0.6", lw=0.6, label="total at init"),
    ]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(4, len(handles)),
               frameon=False, fontsize=7)  # fmt: skip
    save(fig, pdf, png)
