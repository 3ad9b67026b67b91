"""The study's mech figures (grokbench.report.mech_plots) from synthetic tables: which checkpoints the
heatmaps compare, which run of a cell and which probe layer they show, and that every figure renders."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from grokbench.report import mech_plots as M

STEPS = [0, 10, 100, 300, 1000, 3000]
# (model, seed) -> (memorization step, OOD generalization step); None: never
RUNS = {("gpt", 0): (100, None), ("gpt", 1): (100, 1000), ("mamba", 0): (None, None)}


def summary() -> pd.DataFrame:
    rows = [{"run_id": f"a/{m}/default/seed{s}", "dataset": "a", "model": m, "training": "default", "seed": s,
             "memorization_step": mem, "ood_generalization_step": ood}
            for (m, s), (mem, ood) in RUNS.items()]  # fmt: skip
    return pd.DataFrame(rows).astype({"memorization_step": "Int64", "ood_generalization_step": "Int64"})


def lens_table() -> pd.DataFrame:
    rows = []
    for (m, s), step, group, layer, pos in itertools.product(
        RUNS, STEPS, ["train", "test_inferred_ood"], range(3), range(3)
    ):
        rows.append({"run_id": f"a/{m}/default/seed{s}", "step": step, "target": "answer", "group": group,
                     "layer": layer, "position": pos, "role": f"{pos}:<t>", "prob": step / 3000})  # fmt: skip
    return pd.DataFrame(rows)


def tracing_table() -> pd.DataFrame:
    t = lens_table().rename(columns={"prob": "recovery"}).drop(columns="target")
    return pd.concat([t.assign(corrupted=2), t.assign(corrupted=4, recovery=0.5)], ignore_index=True)


def probes_table() -> pd.DataFrame:
    rows = []
    for (m, s), step, layer, split in itertools.product(
        RUNS, STEPS, range(3), ["train", "test_id", "test_ood"]
    ):
        acc = {"train": 1.0, "test_id": 0.5 + 0.1 * layer, "test_ood": 0.9 - 0.3 * layer}[split]
        rows.append({"run_id": f"a/{m}/default/seed{s}", "step": step, "target": "value", "position": 2,
                     "layer": layer, "split": split, "n": 10, "accuracy": acc, "control_accuracy": 0.3,
                     "majority_accuracy": 0.25})  # fmt: skip
    return pd.DataFrame(rows)


def test_before_after():
    assert M.before_after(STEPS, 100, 1000) == [
        ("before", 100, "memorized"),
        ("after", 1000, "OOD generalized"),
    ]
    # transitions between checkpoints: the last one at or before memorization, the first at or after OOD
    assert M.before_after(STEPS, 150, 2000) == [
        ("before", 100, "before memorization"), ("after", 3000, "after OOD generalization")
    ]  # fmt: skip
    # never generalized OOD: the final checkpoint; never memorized either: the first one
    assert M.before_after(STEPS, 100, None)[1] == ("after", 3000, "final, never OOD-generalized")
    assert M.before_after(STEPS, pd.NA, pd.NA) == [
        ("before", 0, "first, never memorized"), ("after", 3000, "final, never OOD-generalized")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no checkpoints"):
        M.before_after([], 1, 2)


def test_representative_run_is_a_seed_that_generalized():
    runs = M.representative_runs(summary(), lens_table()["run_id"].unique())
    assert list(runs["run_id"]) == ["a/gpt/default/seed1", "a/mamba/default/seed0"]


def test_probe_layer_is_chosen_on_held_out_id_entities():
    curves = M.probe_curves(probes_table())
    assert set(curves["layer"]) == {2}  # best held-out ID accuracy, not the best OOD one (layer 0)
    assert set(curves["split"]) == {"test_id", "test_ood"}
    assert len(curves) == len(RUNS) * len(STEPS) * 2


def test_figures_render(tmp_path):
    s = summary()
    for name, draw, table in (("probes", M.plot_probes, probes_table()),
                              ("lens", M.plot_lens_transition, lens_table()),
                              ("tracing", M.plot_tracing_transition, tracing_table())):  # fmt: skip
        pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
        draw(s, table, pdf, png)
        assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")
    # a study whose tasks give no rows (no probe target, no common positions) still gets its figures
    M.plot_probes(s, probes_table().iloc[:0], tmp_path / "e.pdf", tmp_path / "e.png")
    M.plot_tracing_transition(s, tracing_table().iloc[:0], tmp_path / "f.pdf", tmp_path / "f.png")
    assert (tmp_path / "e.png").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0
