"""Weight norms at a run's checkpoints (grokbench.mech.weights): the norms of the loaded parameters, per
module, group and in total; the files checked against run.json; the command's table and provenance; the
figure."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from grokbench import cli
from grokbench.io import sha256_file
from grokbench.mech.weights import group_of, weight_norms
from grokbench.models import build_model
from grokbench.report import plots
from grokbench.report.analysis import AnalysisConfig, summarize
from grokbench.train.checkpoints import load_model
from grokbench.train.run import run

from ..conftest import TINY_MODEL, TINY_TRAINING

CHECKPOINTS = {"log_spaced": 3, "memorization_threshold": 0.5, "threshold": 0.2}
TRAINING = {**TINY_TRAINING, "device": "cpu", "precision": "fp32", "checkpoints": CHECKPOINTS}


@pytest.fixture(scope="module")
def run_dir(tiny_dataset_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cell = {"dataset": "a", "model": "gpt", "training": "default", "seed": 0}
    run(tiny_dataset_path, TINY_MODEL, TRAINING, 0, out, cell=cell, progress=False)
    return out


def norm_of(params: dict[str, torch.Tensor], names) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.cat([params[n].detach().double().flatten() for n in names]))


def test_norms_are_those_of_the_loaded_parameters(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    table = weight_norms(run_dir)
    assert sorted(table["step"].unique()) == sorted(c["step"] for c in info["checkpoints"])
    assert (table["run_id"] == info["run_id"]).all() and (table["family"] == TINY_MODEL["family"]).all()
    assert (table[["dataset", "model", "training", "seed"]] == ["a", "gpt", "default", 0]).all().all()
    for c in info["checkpoints"]:
        model = load_model(run_dir / c["file"], info["vocab_size"], info["block_size"])
        params = dict(model.named_parameters())
        at = table[table["step"] == c["step"]]
        assert (at["reason"] == c["reason"]).all()

        (total,) = at.loc[at["level"] == "total", "norm"]
        assert total == pytest.approx(float(norm_of(params, params)), rel=1e-12)
        assert at.loc[at["level"] == "total", "n_params"].item() == sum(p.numel() for p in params.values())
        for level in ("module", "group"):
            rows = at[at["level"] == level]
            assert rows["n_params"].sum() == len(torch.cat([p.flatten() for p in params.values()]))
            for _, r in rows.iterrows():
                if level == "module":
                    names = [n for n in params if n.rsplit(".", 1)[0] == r["module"]]
                else:
                    names = [n for n in params if group_of(model, n) == r["group"]]
                assert names and r["norm"] == pytest.approx(float(norm_of(params, names)), rel=1e-12)
                assert r["n_params"] == sum(params[n].numel() for n in names)
    # GPT's groups: the embeddings, the block stack, the final norm (the head is tied to the embedding)
    assert set(table.loc[table["level"] == "group", "group"]) == {
        "transformer.wte",
        "transformer.wpe",
        "transformer.h",
        "transformer.ln_f",
    }


def test_groups_look_through_the_module_that_holds_the_stack():
    model = build_model({**TINY_MODEL, "memory_tokens": 2, "share": "all"}, vocab_size=11, block_size=6)
    groups = {group_of(model, n) for n, _ in model.named_parameters()}
    assert groups == {"memory", "transformer.wte", "transformer.wpe", "transformer.h", "transformer.ln_f"}


def test_a_changed_checkpoint_is_refused(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    first = json.loads((copy / "run.json").read_text())["checkpoints"][0]["file"]
    (copy / first).write_bytes((copy / first).read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256 differs"):
        weight_norms(copy)


def test_command_writes_the_table_with_provenance_and_the_figure(run_dir, tmp_path):
    out, record = tmp_path / "weight_norms.parquet", tmp_path / "weight_norms.provenance.json"
    args = ["weight-norms", "--run-dir", str(run_dir), "--out", str(out), "--provenance", str(record)]
    assert cli.main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), weight_norms(run_dir))
    rec = json.loads(record.read_text())
    assert rec["stage"] == "weight_norms" and rec["outputs"] == {str(out): sha256_file(out)}
    listed = json.loads((run_dir / "run.json").read_text())["checkpoints"]
    assert rec["inputs"] == {
        str(run_dir / "run.json"): sha256_file(run_dir / "run.json"),
        **{str(run_dir / c["file"]): c["sha256"] for c in listed},
    }
    summary_path = tmp_path / "summary.parquet"
    summarize([run_dir], AnalysisConfig()).to_parquet(summary_path)
    pdf, png = tmp_path / "w.pdf", tmp_path / "w.png"
    plot = ["plot", "weight_norms", "--summary", str(summary_path), "--norms", str(out)]
    assert cli.main([*plot, "--pdf", str(pdf), "--png", str(png)]) == 0
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")
    assert cli.main(["plot", "weight_norms", "--summary", str(summary_path), "--pdf", str(pdf),
                     "--png", str(png)]) == 2  # fmt: skip


def test_figure_marks_the_transitions(run_dir, tmp_path, monkeypatch):
    """One vertical line per memorization / OOD generalization step of the summary, and one line per
    module group and the total."""
    summary = summarize([run_dir], AnalysisConfig(memorization_threshold=0.5, threshold=0.2))
    norms = weight_norms(run_dir)
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, pdf, png: figures.append(fig))
    plots.plot_weight_norms(summary, norms, tmp_path / "a.pdf", tmp_path / "a.png")
    (ax,) = [a for a in figures[0].axes if a.get_visible()]
    lines = ax.get_lines()

    def constant(values) -> bool:
        return len(set(values)) == 1

    vertical = sorted(line.get_xdata()[0] for line in lines if constant(line.get_xdata()))
    marked = [summary.loc[0, c] for c in ("memorization_step", "ood_generalization_step")]
    assert vertical == sorted(float(s) for s in marked if pd.notna(s) and s > 0)
    (initial,) = [line.get_ydata()[0] for line in lines if constant(line.get_ydata())]  # the total at init
    total = norms[norms["level"] == "total"].set_index("step")["norm"]
    assert initial == total[0]
    curves = [line for line in lines if not constant(line.get_xdata()) and not constant(line.get_ydata())]
    assert len(curves) == norms.loc[norms["level"] == "group", "group"].nunique() + 1
    for line in curves:  # every checkpoint after step 0
        assert list(line.get_xdata()) == [s for s in total.index if s > 0]
