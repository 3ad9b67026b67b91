"""Figures from synthetic summaries: they render, and a sweep marks runs that never reach the threshold."""

from __future__ import annotations

import pandas as pd
import pytest

from grokbench.report import plots


def sweep_summary() -> pd.DataFrame:
    rows = []
    for n, steps in ((50, [None, None, None]), (100, [4000, None, 3500]), (200, [2000, 2500, 2250])):
        for seed, step in enumerate(steps):
            for model, slower in (("gpt", 1.0), ("llama", 1.5)):
                rows.append({"dataset": f"n{n}", "model": model, "training": "default", "seed": seed,
                             "data.n_entities": n, "final_step": 6000,
                             "ood_generalization_step": None if step is None else step * slower})  # fmt: skip
    return pd.DataFrame(rows).astype({"ood_generalization_step": "Int64"})


def test_sweep_figure(tmp_path):
    pdf, png = tmp_path / "s.pdf", tmp_path / "s.png"
    plots.plot_sweep(sweep_summary(), {"x": "data.n_entities", "logx": True}, pdf, png)
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")


def test_sweep_filters_and_names_unknown_columns(tmp_path):
    with pytest.raises(ValueError, match="no column 'data.value_range'"):
        plots.plot_sweep(sweep_summary(), {"x": "data.value_range"}, tmp_path / "a.pdf", tmp_path / "a.png")
    with pytest.raises(ValueError, match="no runs match"):
        plots.plot_sweep(sweep_summary(), {"x": "data.n_entities", "models": ["rwkv"]}, tmp_path / "b.pdf",
                         tmp_path / "b.png")  # fmt: skip


def test_survival_figure(tmp_path):
    """Censored runs (never reached), a group with no run reaching the threshold, two settings of one
    model and several datasets all render."""
    df = sweep_summary()
    second = (df["model"] == "llama") & (df["dataset"] == "n200") & (df["seed"] == 1)
    df.loc[second, "training"] = "default+lr0.01"
    pdf, png = tmp_path / "k.pdf", tmp_path / "k.png"
    plots.plot_survival(df, pdf, png)
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")


def test_survival_is_a_fixed_figure_with_a_caption():
    from pathlib import Path

    from grokbench.report import FIGURES

    assert "survival" in FIGURES
    assert (Path(__file__).parents[2] / "workflow" / "report" / "survival.rst").exists()


def test_grokking_figure_marks_the_budget_and_keeps_seeds_apart(tmp_path, monkeypatch):
    """The vertical line is the training budget (the longest final step), not a point between it and the
    "never" markers; the seeds of a cell never share a position, even with equal steps."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, pdf, png: figures.append(fig))
    rows = [{"dataset": "d", "model": m, "training": "default", "seed": seed, "final_step": 6000,
             "memorization_step": 1000, "id_generalization_step": 500,
             "ood_generalization_step": None if m == "rwkv" else 2000}
            for m in ("gpt", "rwkv") for seed in (0, 1, 2)]  # fmt: skip
    summary = pd.DataFrame(rows).astype({"ood_generalization_step": "Int64"})
    plots.plot_grokking(summary, tmp_path / "g.pdf", tmp_path / "g.png")
    ax = figures[0].axes[0]
    vertical = [line.get_xdata()[0] for line in ax.get_lines()]
    assert vertical == [6000]
    points = [tuple(p) for c in ax.collections for p in c.get_offsets()]
    assert len(points) == len(summary) * 3 == len(set(points))
    never = [x for x, _ in points if x > 6000]
    assert len(never) == 3  # rwkv's OOD, one per seed
