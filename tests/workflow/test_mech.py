"""The weight-norm rules (workflow/rules/mech.smk) on a one-run study that keeps checkpoints: the run's
table and the figure are made and audited; a study without checkpoints plans no such job."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import TINY_CONFIG
from .test_pipeline import REPO, planned, snakemake, write_config

pytestmark = pytest.mark.slow
RUN = "a/gpt/default/seed0"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("mech")
    shutil.copy(REPO / "Snakefile", workdir)
    shutil.copytree(REPO / "workflow", workdir / "workflow")
    shutil.copytree(REPO / "src" / "grokbench", workdir / "src" / "grokbench",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return workdir


def test_weight_norms_only_when_checkpoints_are_kept(workdir):
    cfg = copy.deepcopy(TINY_CONFIG)
    write_config(workdir, cfg)
    jobs = planned(workdir)
    assert jobs["train"] == 1 and not {"weight_norms", "figure_weight_norms"} & set(jobs)

    cfg["training"]["default"]["checkpoints"] = {"log_spaced": 3}
    write_config(workdir, cfg)
    jobs = planned(workdir)
    assert jobs["weight_norms"] == 1 and jobs["figure_weight_norms"] == 1

    out = snakemake(workdir, "--cores", "2", "results/figures/weight_norms.png")
    assert out.returncode == 0, out.stderr[-3000:]
    results = workdir / "results"
    info = json.loads((results / "runs" / RUN / "run.json").read_text())
    table = pd.read_parquet(results / "mech" / RUN / "weight_norms.parquet")
    assert sorted(table["step"].unique()) == [c["step"] for c in info["checkpoints"]]
    assert (results / "figures" / "weight_norms.png").read_bytes().startswith(b"\x89PNG")
    assert "weight_norms" not in planned(workdir)  # done: only the other reports are left

    # every file from the figure back to the dataset matches its record, the checkpoints included (CODE
    # lines are left out: other work on the sources may change them while the test runs)
    audit = subprocess.run(
        [sys.executable, "-m", "grokbench", "audit", "results/figures/weight_norms.png"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = audit.stdout.splitlines()
    assert not [line for line in lines if line.strip().startswith(("MISSING", "CHANGED"))], audit.stdout
    checked = [line for line in lines if "checkpoints/step" in line]
    assert len(checked) == 2 * len(info["checkpoints"])  # outputs of run.json, inputs of the table
    assert all(line.strip().startswith("ok") for line in checked)
