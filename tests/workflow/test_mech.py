"""The rules of workflow/rules/mech.smk on a one-run study that keeps checkpoints: the run's weight-norm
and mech tables and the four figures are made and audited, and nothing is left to do after; a study
without checkpoints plans no such job."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import TINY_CONFIG
from ..helpers import copy_workflow
from .test_pipeline import planned, snakemake, write_config

pytestmark = pytest.mark.slow
RUN = "a/gpt/default/seed0"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("mech")
    copy_workflow(workdir)
    return workdir


MECH_JOBS = {"weight_norms", "figure_weight_norms", "mech", "figure_probes", "figure_logit_lens",
             "figure_tracing"}  # fmt: skip


def audit_lines(workdir: Path, path: str) -> list[str]:
    """`grokbench audit` of `path`, asserting no MISSING or CHANGED line (CODE lines are left out: other
    work on the sources may change them while the test runs)."""
    audit = subprocess.run(
        [sys.executable, "-m", "grokbench", "audit", path],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = audit.stdout.splitlines()
    assert not [line for line in lines if line.strip().startswith(("MISSING", "CHANGED"))], audit.stdout
    return lines


def test_weight_norms_only_when_checkpoints_are_kept(workdir):
    cfg = copy.deepcopy(TINY_CONFIG)
    write_config(workdir, cfg)
    jobs = planned(workdir)
    assert jobs["train"] == 1 and not MECH_JOBS & set(jobs)

    cfg["training"]["default"]["checkpoints"] = {"log_spaced": 3}
    write_config(workdir, cfg)
    jobs = planned(workdir)
    assert {name: jobs.get(name) for name in MECH_JOBS} == dict.fromkeys(MECH_JOBS, 1)

    out = snakemake(workdir, "--cores", "2", "results/figures/weight_norms.png")
    assert out.returncode == 0, out.stderr[-3000:]
    results = workdir / "results"
    info = json.loads((results / "runs" / RUN / "run.json").read_text())
    table = pd.read_parquet(results / "mech" / RUN / "weight_norms.parquet")
    assert sorted(table["step"].unique()) == [c["step"] for c in info["checkpoints"]]
    assert (results / "figures" / "weight_norms.png").read_bytes().startswith(b"\x89PNG")
    assert "weight_norms" not in planned(workdir)  # done: only the other reports are left

    # every file from the figure back to the dataset matches its record, the checkpoints included
    lines = audit_lines(workdir, "results/figures/weight_norms.png")
    checked = [line for line in lines if "checkpoints/step" in line]
    assert len(checked) == 2 * len(info["checkpoints"])  # outputs of run.json, inputs of the table
    assert all(line.strip().startswith("ok") for line in checked)


def test_mech_tables_and_figures(workdir):
    """After the test above (same study, checkpoints kept): the whole study, the mech tables and figures
    included; each table has every checkpoint, the run's identity, one provenance record; each figure's
    record leads back through the tables to the checkpoints and the dataset."""
    out = snakemake(workdir, "--cores", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert planned(workdir) == {}  # nothing left to do

    results = workdir / "results"
    info = json.loads((results / "runs" / RUN / "run.json").read_text())
    steps = [c["step"] for c in info["checkpoints"]]
    mech = results / "mech" / RUN
    for name in ("logit_lens", "probes", "tracing"):
        table = pd.read_parquet(mech / f"{name}.parquet")
        assert sorted(table["step"].unique()) == steps, name
        assert (table["run_id"] == RUN).all() and (table["family"] == "gpt").all()
        assert set(table["reason"]) == {c["reason"] for c in info["checkpoints"]}
    record = json.loads((mech / "mech.provenance.json").read_text())
    assert record["stage"] == "mech"
    assert sorted(Path(p).name for p in record["outputs"]) == ["logit_lens.parquet", "probes.parquet",
                                                               "tracing.parquet"]  # fmt: skip
    assert f"results/runs/{RUN}/run.json" in record["inputs"] and "results/data/a.parquet" in record["inputs"]

    for figure in ("probes", "logit_lens", "tracing"):
        for ext in ("pdf", "png"):
            assert (results / "figures" / f"{figure}.{ext}").stat().st_size > 0
        figure_record = json.loads((results / "figures" / f"{figure}.provenance.json").read_text())
        assert figure_record["stage"] == "mech_plots"
        assert f"results/mech/{RUN}/{figure}.parquet" in figure_record["inputs"]
        lines = audit_lines(workdir, f"results/figures/{figure}.png")
        assert any(line.strip().startswith("mech ") and "mech.provenance.json" in line for line in lines)
        checkpoints = [line for line in lines if "checkpoints/step" in line]
        assert len(checkpoints) >= len(steps) and all(line.strip().startswith("ok") for line in checkpoints)
    # a table on its own is found by its record beside it
    lines = audit_lines(workdir, f"results/mech/{RUN}/probes.parquet")
    assert lines[0].startswith("mech ") and "mech.provenance.json" in lines[0]
