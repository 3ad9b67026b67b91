"""`grokbench mech` on a checkpoint and on a run folder, and the heatmaps of its tables."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from grokbench import cli
from grokbench.io import sha256_file
from grokbench.mech.analyze import TABLES, block_size_of, checkpoint_files
from grokbench.models import build_model
from grokbench.report import mech_plots
from grokbench.tasks.base import read_dataset

from .helpers import perturb, spec_of

SPEC = spec_of("gpt", n_layer=1)


def _save(path, ds, step, seed=0):
    torch.manual_seed(seed)
    model = perturb(build_model(SPEC, vocab_size=len(ds.vocab), block_size=block_size_of(ds)), seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_spec": SPEC, "step": step}, path)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset_path, tmp_path_factory):
    """A run folder with two checkpoints listed in run.json (their order there is not the steps')."""
    ds = read_dataset(tiny_dataset_path)
    d = tmp_path_factory.mktemp("run")
    listed = []
    for step in (40, 10):
        file = f"checkpoints/step{step:08d}.pt"
        _save(d / file, ds, step, seed=step)
        listed.append({"step": step, "file": file, "sha256": sha256_file(d / file), "reason": "log"})
    _save(d / "model.pt", ds, 40, seed=40)
    (d / "run.json").write_text(json.dumps({"checkpoints": listed}))
    return d


def test_one_checkpoint(run_dir, tiny_dataset_path, tmp_path):
    out = tmp_path / "mech"
    argv = ["mech", "--checkpoint", str(run_dir / "model.pt"), "--data", str(tiny_dataset_path)]
    argv += ["--out-dir", str(out), "--max-facts", "8", "--provenance", str(tmp_path / "mech.json")]
    assert cli.main(argv) == 0
    for name in TABLES:
        table = pd.read_parquet(out / f"{name}.parquet")
        assert not table.empty and (table["step"] == 40).all()
    assert (tmp_path / "mech.json").exists()


def test_run_folder_and_plots(run_dir, tiny_dataset_path, tmp_path):
    assert [p.name for p in checkpoint_files(run_dir)] == ["step00000010.pt", "step00000040.pt"]
    out = tmp_path / "mech"
    argv = ["mech", "--run-dir", str(run_dir), "--data", str(tiny_dataset_path), "--out-dir", str(out)]
    assert cli.main([*argv, "--max-facts", "8", "--seed", "1"]) == 0
    tables = {name: pd.read_parquet(out / f"{name}.parquet") for name in TABLES}
    for table in tables.values():
        assert sorted(table["step"].unique()) == [10, 40]
        assert set(table["checkpoint"]) == {"checkpoints/step00000010.pt", "checkpoints/step00000040.pt"}

    lens, tracing = tables["logit_lens"], tables["tracing"]
    one = lens[(lens["step"] == 40) & (lens["group"] == "test_inferred_ood")]
    grid = mech_plots.heatmap_frame(one, "prob")
    assert grid.shape == (2, 5) and list(grid.index) == [1, 0]  # the last layer on top
    assert list(grid.columns) == ["0:<attr_#>", "1:<q>", "2:<e_#>", "3:<mask>", "4:<e_#>"]
    at = (tracing["step"] == 10) & (tracing["group"] == "train") & (tracing["corrupted"] == 4)
    grid = mech_plots.heatmap_frame(tracing[at], "recovery")
    assert list(grid.columns)[-1] == "all" and (grid["all"] == 1.0).all()
    with pytest.raises(ValueError, match="several rows"):
        mech_plots.heatmap_frame(lens, "prob")

    mech_plots.plot_logit_lens(lens, tmp_path / "lens.pdf", tmp_path / "lens.png")
    mech_plots.plot_tracing(tracing, tmp_path / "trace.pdf", tmp_path / "trace.png", step=10, corrupted=4)
    for name in ("lens.pdf", "lens.png", "trace.pdf", "trace.png"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(ValueError, match="step 7"):
        mech_plots.plot_tracing(tracing, tmp_path / "x.pdf", tmp_path / "x.png", step=7)
    with pytest.raises(ValueError, match="position 3 corrupted"):
        mech_plots.plot_tracing(tracing, tmp_path / "x.pdf", tmp_path / "x.png", corrupted=3)


def test_listed_hash_is_checked(run_dir, tmp_path):
    info = json.loads((run_dir / "run.json").read_text())
    info["checkpoints"][0]["sha256"] = "0" * 64
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="sha256"):
        checkpoint_files(bad)


def test_needs_one_source(tiny_dataset_path, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["mech", "--data", str(tiny_dataset_path), "--out-dir", str(tmp_path)])
