"""`snakemake --report`: the landing text (workflow/report/workflow.rst) on the finished tiny study
(.test/config.yaml, run in a temporary copy of the workflow with --report-after-run), and the report of a
half-finished study through the `available` target, where the plain report stops at the first missing
output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import copy_workflow

REPO = Path(__file__).resolve().parents[2]
TEST_STUDY = REPO / ".test" / "config.yaml"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "-s", "KILL", str(timeout), "snakemake", "--configfile", "study.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


def shown(html: str) -> set[str]:
    """The files a report embeds (the keys of its `results` table)."""
    return set(re.findall(r'"(results/[^"]*)": \{"name"', html))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The tiny study run and reported in one command."""
    workdir = tmp_path_factory.mktemp("report")
    copy_workflow(workdir)
    shutil.copy(TEST_STUDY, workdir / "study.yaml")
    out = snakemake(workdir, "--cores", "2", "--report", "report.html", "--report-after-run")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_report_of_the_finished_study_has_the_landing_text(study):
    html = (study / "report.html").read_text()
    landing = ("What the study is", "How to read each output", "Where the numbers come from",
               "The study is complete", "6 training runs", "family <tt", "gpt_groks", "GPT sooner than LLaMA",
               "javascript:app.showCategory('Claims')")  # fmt: skip
    for text in landing:
        assert text in html, text
    assert "not there yet" not in html
    reports = {"results/summary/summary.csv", "results/claims/claims.csv", "results/figures/curves.png"}
    assert reports <= shown(html)


def test_report_again_on_the_finished_study(study):
    out = snakemake(study, "--report", "again.html")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "What the study is" in (study / "again.html").read_text()


@pytest.mark.parametrize(
    "remove, runs_left",
    [
        (["runs/b/gpt/default/seed1", "summary"], 5),  # one run and the summary gone
        (["summary", "claims", "figures"], 6),  # before the reports ran
    ],
)
def test_report_of_a_half_finished_study(study, tmp_path, remove, runs_left):
    workdir = tmp_path / "study"
    shutil.copytree(study, workdir, symlinks=True)
    for rel in remove:
        shutil.rmtree(workdir / "results" / rel)
    plain = snakemake(workdir, "--report", "plain.html")
    assert plain.returncode != 0 and "marked for report but does not exist" in plain.stderr
    out = snakemake(workdir, "--report", "partial.html", "available")
    assert out.returncode == 0, out.stderr[-3000:]
    html = (workdir / "partial.html").read_text()
    assert "What the study is" in html and "The study is not finished" in html
    assert f"{runs_left} of 6 training runs have finished" in html
    assert "Summary (not there yet)" in html
    files = shown(html)
    assert len({f for f in files if f.endswith("/run.json")}) == runs_left
    assert {"results/data/a.provenance.json", "results/data/b.provenance.json"} <= files
    assert not {f for f in files if f.startswith(("results/summary/", "results/claims/", "results/figures/"))}
