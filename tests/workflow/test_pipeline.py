"""End to end: the Snakemake pipeline on a tiny study in a temporary folder.

Runs the real workflow (a copy of Snakefile, workflow/ and src/ so that source edits can be simulated)
and checks its outputs, that a second run has nothing to do, and that each kind of change reruns exactly
the stages it should: one dataset's parameter -> that dataset's chain; training code -> training and
what follows, not data; plotting code -> the figures only; one family's learning-rate grid -> that
family's new runs and the reports. Every snakemake call runs under a hard
timeout (SIGKILL), as a hung scheduler must fail the test, not the CI run.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..conftest import TINY_CONFIG
from ..helpers import copy_workflow

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
FIGURES = {"figure_curves": 1, "figure_grokking": 1, "figure_survival": 1}  # jobs that render figures
REPORTS = {"summary": 1, "claims": 1, **FIGURES}  # jobs downstream of the runs
TEST_STUDY = REPO / ".test" / "config.yaml"  # the tiny study CI runs end to end


def snakemake(workdir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "-s", "KILL", str(timeout), "snakemake", "--configfile", "study.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


def planned(workdir: Path) -> dict[str, int]:
    """Jobs a dry run would execute, per rule (empty when there is nothing to do)."""
    out = snakemake(workdir, "-n")
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("\n\n")[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M))
    return {rule: int(n) for rule, n in jobs.items() if rule not in ("total", "all")}


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "study.yaml").write_text(yaml.safe_dump(cfg))


def touch_source(workdir: Path, rel: str) -> None:
    with open(workdir / "src" / "grokbench" / rel, "a") as f:
        f.write("\n# an edit\n")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished run of the tiny study .test/config.yaml (GPT on two datasets x 2 seeds, LLaMA on one at
    two learning rates, three claims)."""
    workdir = tmp_path_factory.mktemp("study")
    copy_workflow(workdir)
    cfg = yaml.safe_load(TEST_STUDY.read_text())
    write_config(workdir, cfg)
    out = snakemake(workdir, "--cores", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, cfg


def test_outputs(study):
    workdir, cfg = study
    results = workdir / "results"
    for name in ("a", "b"):
        assert (results / "data" / f"{name}.parquet").stat().st_size > 0
        assert (results / "data" / f"{name}.provenance.json").exists()
    runs = sorted(p.parent.relative_to(results / "runs") for p in results.glob("runs/**/run.json"))
    assert [str(r) for r in runs] == [
        "a/gpt/default/seed0", "a/gpt/default/seed1", "a/llama/default/seed0", "a/llama/default+lr0.01/seed0",
        "b/gpt/default/seed0", "b/gpt/default/seed1",
    ]  # fmt: skip
    summary = pd.read_parquet(results / "summary" / "summary.parquet")
    assert len(summary) == 6
    assert {"memorization_step", "ood_generalization_step", "grokked", "n_params"} <= set(summary)
    assert pd.read_csv(results / "summary" / "summary.csv").shape == summary.shape
    for fig in ("curves", "grokking", "survival"):
        assert (results / "figures" / f"{fig}.pdf").read_bytes().startswith(b"%PDF")
        assert (results / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")
    claims = pd.read_csv(results / "claims" / "claims.csv")
    assert list(claims["id"]) == [c["id"] for c in cfg["claims"]]
    assert set(claims["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    assert (results / "claims" / "claims.md").read_text().count("\n| ") == len(cfg["claims"])  # a row each
    selection = pd.read_csv(results / "claims" / "selection.csv")
    llama = selection[selection["model"] == "llama"]
    assert sorted(llama["training"]) == ["default", "default+lr0.01"] and llama["selected"].sum() == 1
    assert selection.groupby(["dataset", "model"])["selected"].sum().eq(1).all()
    leftovers = [p for p in results.rglob(".*.tmp")]
    assert not leftovers


def test_second_run_has_nothing_to_do(study):
    workdir, _ = study
    assert planned(workdir) == {}


def test_dataset_parameter_reruns_only_its_chain(study):
    workdir, cfg = study
    changed = copy.deepcopy(cfg)
    changed["datasets"]["b"]["value_range"] = 4
    write_config(workdir, changed)
    try:
        assert planned(workdir) == {"dataset": 1, "train": 2, **REPORTS}
        out = snakemake(workdir, "-n")
        text = out.stdout + out.stderr
        assert "results/data/b.parquet" in text and "results/data/a.parquet" not in text
        assert "output: results/runs/b/gpt/default/seed1" in text
        assert "output: results/runs/a/" not in text
    finally:
        write_config(workdir, cfg)
    assert planned(workdir) == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("report/plots.py", FIGURES),
        ("report/claims.py", {"claims": 1}),
        ("report/survival.py", {"claims": 1, **FIGURES}),
        ("report/analysis.py", REPORTS),
        ("grid.py", REPORTS),
        ("train/trainer.py", {"train": 6, **REPORTS}),
        ("models/gpt.py", {"train": 6, **REPORTS}),
        ("tasks/comparison.py", {"dataset": 2, "train": 6, **REPORTS}),
    ],
)
def test_code_change_reruns_its_stage_and_after(study, source, expected):
    workdir, _ = study
    path = workdir / "src" / "grokbench" / source
    original = path.read_text()
    touch_source(workdir, source)
    try:
        assert planned(workdir) == expected
    finally:
        path.write_text(original)
    assert planned(workdir) == {}


def test_one_family_learning_rate_grid_reruns_only_its_runs(study):
    workdir, cfg = study
    changed = copy.deepcopy(cfg)
    changed["grid"][1]["hparams"]["lr"] = [3e-3, 3e-2]  # LLaMA: 1e-2 -> 3e-2
    write_config(workdir, changed)
    try:
        assert planned(workdir) == {"train": 1, **REPORTS}
        text = "".join(snakemake(workdir, "-n").stdout)
        assert "output: results/runs/a/llama/default+lr0.03/seed0" in text
        assert "output: results/runs/a/gpt" not in text and "output: results/runs/b/" not in text
    finally:
        write_config(workdir, cfg)
    assert planned(workdir) == {}


def test_claims_recomputed_by_hand_from_the_metrics(study):
    """The claims table's numbers follow from the per-run metrics files with the documented rules."""
    workdir, _ = study
    results = workdir / "results"
    claims = pd.read_csv(results / "claims" / "claims.csv").set_index("id")

    def first_stable(run: str, split: str, threshold: float) -> int | None:
        m = pd.read_parquet(results / "runs" / run / "metrics.parquet")
        acc = m[m["split"] == split].sort_values("step")
        steps, values = list(acc["step"]), list(acc["accuracy"])
        for i, step in enumerate(steps):
            if all(v >= threshold for v in values[i:]):  # the tiny study's tolerance is 0
                return int(step)
        return None

    gpt = [f"{d}/gpt/default/seed{s}" for d in "ab" for s in (0, 1)]
    grokked = 0
    for run in gpt:
        mem, ood = first_stable(run, "train_inferred_id", 0.99), first_stable(run, "test_inferred_ood", 0.9)
        grokked += mem is not None and ood is not None and ood > mem
    assert claims.loc["gpt_groks", "k"] == grokked and claims.loc["gpt_groks", "n"] == 4
    selection = pd.read_csv(results / "claims" / "selection.csv")
    chosen = selection[(selection["model"] == "llama") & selection["selected"]]["training"].item()
    final = int(pd.read_parquet(results / "runs/a/gpt/default/seed0/metrics.parquet")["step"].max())

    def steps(run: str) -> int:
        reached = first_stable(run, "test_inferred_ood", 0.9)
        return final if reached is None else reached

    a = sum(steps(f"a/gpt/default/seed{s}") for s in (0, 1)) / 2
    b = steps(f"a/llama/{chosen}/seed0")
    assert claims.loc["gpt_sooner", "ratio"] == pytest.approx(b / a)
    assert f"a/llama/{chosen}/seed0" in claims.loc["gpt_sooner", "runs"].split("; ")  # run ids


def test_report(study):
    workdir, _ = study
    out = snakemake(workdir, "--report", "report.html")
    assert out.returncode == 0, out.stderr[-3000:]
    html = (workdir / "report.html").read_text(errors="replace")
    assert "curves.png" in html and "grokking.png" in html
    assert "claims.csv" in html and "selection.csv" in html


def test_bad_config_rejected_before_any_job(tmp_path):
    copy_workflow(tmp_path)
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["a"]["n_entites"] = 30
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "--cores", "1")
    assert out.returncode != 0
    assert "config.datasets.a.n_entites: unknown key" in out.stderr + out.stdout
    assert not (tmp_path / "results").exists()


def audit(workdir: Path, target: str) -> subprocess.CompletedProcess:
    """`grokbench audit` with the study's own copy of the package (so that editing it is a code change)."""
    cmd = [sys.executable, "-m", "grokbench", "audit", target]
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"))
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


def test_audit_walks_back_and_names_changed_files(study):
    """Runs last in this module: it alters files (and puts them back)."""
    workdir, _ = study
    for target in ("results/figures/curves.png", "results/summary/summary.csv"):
        out = audit(workdir, target)
        assert out.returncode == 0, out.stdout + out.stderr
        # the walk reaches every run and every dataset behind the output
        assert "results/data/a.parquet" in out.stdout and "results/data/b.parquet" in out.stdout
        assert out.stdout.count("run.json  [") == 6
    for victim in ("results/data/b.parquet", "results/runs/a/gpt/default/seed1/metrics.parquet"):
        path = workdir / victim
        original, stat = path.read_bytes(), path.stat()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0xFF  # one byte
        path.write_bytes(bytes(changed))
        try:
            out = audit(workdir, "results/figures/grokking.png")
            assert out.returncode == 1
            assert f"CHANGED  input  {victim}" in out.stdout or f"CHANGED  output {victim}" in out.stdout
        finally:
            path.write_bytes(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert audit(workdir, "results/figures/grokking.png").returncode == 0
    missing = workdir / "results/runs/b/gpt/default/seed0/run.json"
    saved = missing.read_bytes()
    missing.unlink()
    try:
        out = audit(workdir, "results/summary/summary.parquet")
        assert (
            out.returncode == 1 and "MISSING  input  results/runs/b/gpt/default/seed0/run.json" in out.stdout
        )
    finally:
        missing.write_bytes(saved)


@pytest.mark.parametrize(
    ("source", "target", "stage"),
    [
        ("report/claims.py", "results/claims/claims.csv", "claims"),
        ("report/selection.py", "results/claims/claims.md", "claims"),
        ("report/analysis.py", "results/summary/summary.csv", "analysis"),
        ("report/plots.py", "results/figures/curves.png", "plots"),
        ("tasks/common.py", "results/data/a.parquet", "data"),
    ],
)
def test_audit_names_a_code_change_of_the_stage(study, source, target, stage):
    """Each output's record carries its own stage's code fingerprint: an edit of that code is reported."""
    workdir, _ = study
    assert audit(workdir, target).returncode == 0
    path = workdir / "src" / "grokbench" / source
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    try:
        out = audit(workdir, target)
        assert out.returncode == 1, out.stdout
        assert f"CODE     {stage} code changed since" in out.stdout
    finally:
        path.write_bytes(original)


def test_paper_config_plans_every_run_on_a_gpu_with_the_slurm_profile():
    """Every run of the paper config (4 families x 3 learning rates x 3 seeds, GPT's entity, value-range,
    phi and composition runs x 3 seeds; issue #15: 6 GPT variants on cmp and plain / all-shared GPT on
    comp_val, 6 linear-attention families, each x 3 learning rates x 3 seeds, Grokfast 4 settings, weight
    decay 2, StableMax 1 and the 2 in-context formats x 3 seeds) is planned as a GPU job."""
    from grokbench.study import cells, load

    n_runs = len(cells(load(REPO / "config" / "paper.yaml")))
    issue15 = (6 + 2 + 6) * 3 * 3 + 3 * (4 + 2 + 1 + 2)
    assert n_runs == 4 * 3 * 3 + 3 * (4 + 3 + 3 + 1) + issue15
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "-s", "KILL", "300", "snakemake", "--profile", "slurm", "-n",
           "--configfile", "config/paper.yaml"]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    jobs = re.split(r"\n\s*rule ", text)[1:]  # one chunk per planned job (train jobs sit in a group)
    train = [j for j in jobs if j.startswith("train:")]
    assert len(train) == n_runs
    assert all("gpu=1" in j and "runtime=" in j and "mem_mb=" in j for j in train)
    assert not [j for j in jobs if not j.startswith("train:") and "gpu=" in j.split("resources:")[-1]]
