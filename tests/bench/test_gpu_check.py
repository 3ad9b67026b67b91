"""`grokbench gpu-check`: its CPU form end to end (so that the GPU session's one command never rots), a
failing and a timed-out step reported as such while later steps still run, and its parts."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from grokbench import cli, grid, study
from grokbench.bench import gpu_check
from grokbench.bench.gpu_check import REPO, STEPS, compare_metrics, junit_tables, short_study

CUDA = torch.cuda.is_available()


def sections(report: str) -> dict[str, str]:
    """Step name -> its section of the report."""
    parts = re.split(r"^## \d\. ", report, flags=re.M)[1:]
    return {part.split(":")[0]: part for part in parts}


def summary_status(report: str) -> dict[str, str]:
    """Step name -> status, from the report's summary table."""
    table = report.split("## Summary")[1].split("\n## ")[0]
    return dict(re.findall(r"^\| \d \| ([\w-]+) \| ([\w ]+) \|", table, flags=re.M))


@pytest.mark.slow
def test_cpu_form_end_to_end(tmp_path):
    """The GPU session's command, scripts/gpu-check.sh, in its CPU form (automatic without CUDA)."""
    only = [s for s in STEPS if not (CUDA and s == "gpu-tests")]  # on a GPU machine the suite runs them
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    cmd = ["bash", "scripts/gpu-check.sh", "--quick", "--work", str(tmp_path / "work"), "--only", *only]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = tmp_path / "gpu-check.md"
    assert done.returncode == 0, out.read_text() if out.exists() else done.stderr
    assert done.stdout.startswith(f"{out}: ")
    report = out.read_text()
    header = report.split("## Summary")[0]
    for key in ("date", "device", "torch", "packages", "git", "mode", "finished"):
        assert f"| {key} | " in header
    assert summary_status(report) == {s: "passed" if s in only else "not selected" for s in STEPS}
    steps = sections(report)
    assert list(steps) == list(STEPS)
    for name in only:
        assert "- exit status: 0 (passed); wall " in steps[name] and "- command: `" in steps[name]
    if not CUDA:  # every CUDA test skipped, none failed
        counts = re.search(r"^\| (\d+) \| 0 \| 0 \| (\d+) \|$", steps["gpu-tests"], flags=re.M)
        assert counts and counts[1] == counts[2] and int(counts[1]) > 0
        assert "x needs CUDA" in steps["gpu-tests"]
    assert re.search(r"^gpt +torch .* ms", steps["bench-backends"], flags=re.M)
    assert re.search(r"^mamba +torch .* ms", steps["bench-backends"], flags=re.M)
    assert "grokbench single run" in steps["bench-train"] and "grokbench packed x2" in steps["bench-train"]
    device = "cuda" if CUDA else "cpu"
    for run in ("a/gpt/default/seed0", "a/llama/default/seed0"):
        assert f"| {run} | {device} | completed |" in steps["pipeline"]
    rows = [r for r in steps["cpu-rerun"].splitlines() if r.startswith("| a/gpt/")]
    assert len(rows) >= 5 and all(r.endswith("| yes |") for r in rows)  # one per split, all within
    if not CUDA:  # CPU against CPU: identical
        assert all("| fp32 |" in r and "| 0 | 0 | 0 / 0 | yes |" in r for r in rows)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


@pytest.mark.slow
def test_failing_and_timed_out_steps_are_reported_and_later_steps_run(tmp_path, monkeypatch):
    out = tmp_path / "report.md"
    seen = []  # (step, the report as it stood when the step started)
    execute = gpu_check.Check.execute

    def spy(self, step):
        seen.append((step.name, out.read_text()))
        execute(self, step)

    monkeypatch.setattr(gpu_check.Check, "execute", spy)
    argv = ["gpu-check", "--quick", "--out", str(out), "--limit", "gpu-tests=1", "--step-args"]
    argv += ["bench-backends=--preset huge", "pipeline=--config threads=0"]  # impossible arguments
    assert cli.main(argv) == 1
    report = out.read_text()
    assert summary_status(report) == {"gpu-tests": "timed out", "bench-backends": "failed",
                                      "bench-train": "passed", "pipeline": "failed",
                                      "cpu-rerun": "skipped"}  # fmt: skip
    steps = sections(report)
    assert re.search(r"- exit status: -9 \(timed out\); wall 1\.\d of 1\.0 s", steps["gpu-tests"])
    assert (
        "- exit status: 1 (failed)" in steps["bench-backends"]
        and "KeyError: 'huge'" in steps["bench-backends"]
    )
    assert "--families gpt mamba --preset huge` in `" in steps["bench-backends"]
    assert (
        "- exit status: 0 (passed)" in steps["bench-train"] and "grokbench packed x2" in steps["bench-train"]
    )
    assert (
        "- exit status: 1 (failed)" in steps["pipeline"]
        and "config.threads: 0 is less than" in steps["pipeline"]
    )
    assert "| a/gpt/default/seed0 | - | not trained |" in steps["pipeline"]
    assert "- command: none" in steps["cpu-rerun"]
    assert "- note: the pipeline step trained no a/gpt/default/seed0" in steps["cpu-rerun"]
    # the report existed before each step, naming it as running and the earlier ones as they ended
    assert [name for name, _ in seen] == ["gpu-tests", "bench-backends", "bench-train", "pipeline"]
    for name, text in seen:
        assert summary_status(text)[name] == "running"
    assert summary_status(seen[2][1])["bench-backends"] == "failed"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown step 'gpu-test'"):
        gpu_check.Check("r.md", only=["gpu-test"])
    assert cli.main(["gpu-check", "--limit", "pipeline"]) == 2  # not STEP=SECONDS


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_short_default_study_is_a_valid_study(tmp_path, device):
    """The CUDA form's study, checked here without CUDA: config.yaml, 300 steps, one seed per family, and
    its first cell once more in fp32."""
    cfg = short_study(yaml.safe_load((REPO / "config.yaml").read_text()), 300, device)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = study.load(path)
    runs = [c.run_id for c in grid.cells(loaded)]
    models = ["gpt", "llama", "rwkv", "mamba"]
    assert runs == [f"comparison/{m}/default/seed0" for m in models] + ["comparison/gpt/default-fp32/seed0"]
    for name, precision in (("default", "bf16"), ("default-fp32", "fp32")):
        training = loaded["training"][name]
        assert (
            training["steps"] == 300 and training["device"] == device and training["precision"] == precision
        )
        assert training["eval"]["dense_every"] == 50 and training["eval"]["dense_until"] == 300
        assert "checkpoints" not in training  # the default study's analyses are not the check's
    tiny = short_study(yaml.safe_load((REPO / ".test/config.yaml").read_text()), None, "cpu")
    assert tiny["training"]["default"]["steps"] == 40 and "default-fp32" not in tiny["training"]
    assert all("hparams" not in b and len(b["seeds"]) == len(b["datasets"]) == 1 for b in tiny["grid"])


def test_compare_metrics(tmp_path):
    a = pd.DataFrame({"step": [0, 10, 0, 10], "split": ["x", "x", "y", "y"], "loss": [2.0, 1.0, 2.0, 1.0],
                      "accuracy": [0.0, 0.5, 0.0, 0.5]})  # fmt: skip
    b = a.copy()
    b.loc[1, "accuracy"], b.loc[3, "loss"] = 0.52, float("nan")
    a.to_parquet(tmp_path / "a.parquet")
    b.sample(frac=1, random_state=0).to_parquet(tmp_path / "b.parquet")  # row order does not matter
    got = compare_metrics(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert got["x"]["acc"] == pytest.approx(0.02) and got["x"]["acc_step"] == 10 and got["x"]["loss"] == 0
    assert got["y"]["acc"] == 0 and got["y"]["loss"] == float("inf") and got["y"]["loss_step"] == 10
    b.iloc[:3].to_parquet(tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="different steps or splits"):
        compare_metrics(tmp_path / "a.parquet", tmp_path / "b.parquet")


def test_junit_tables(tmp_path):
    (tmp_path / "j.xml").write_text(
        '<testsuites><testsuite tests="4"><testcase classname="tests.t" name="ok"/>'
        '<testcase classname="tests.t" name="bad"><failure message="assert 1 == 2&#10;more"/></testcase>'
        '<testcase classname="tests.t" name="s1"><skipped message="needs CUDA"/></testcase>'
        '<testcase classname="tests.t" name="s2"><skipped message="needs CUDA"/></testcase>'
        "</testsuite></testsuites>"
    )
    text = junit_tables(tmp_path / "j.xml")
    assert "| 4 | 1 | 1 | 2 |" in text
    assert "- `tests.t::bad`: assert 1 == 2\n" in text + "\n" and "- 2 x needs CUDA" in text


def test_job_errors_shows_the_logs_of_failed_jobs(tmp_path):
    logs = tmp_path / "results" / "logs"
    (logs / "train").mkdir(parents=True)
    (logs / "train" / "ok.log").write_text("100%|##########| 40/40\n")
    (logs / "train" / "bad.log").write_text(
        "step 1\nTraceback (most recent call last):\nRuntimeError: CUDA oops\n"
    )
    text = gpu_check.job_errors(logs)
    assert "Job log `results/logs/train/bad.log`" in text and "RuntimeError: CUDA oops" in text
    assert "ok.log" not in text and gpu_check.job_errors(tmp_path / "missing") == ""
