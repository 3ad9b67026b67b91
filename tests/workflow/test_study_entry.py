"""One study, one meaning: `snakemake --configfile X` and `grokbench validate X` accept and reject the
same files with the same message, before any job, and run exactly the file (no merge with config.yaml)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grokbench import study

from ..conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow (with its workflow profile, which reads config files first)."""
    wd = tmp_path_factory.mktemp("entry")
    shutil.copy(REPO / "Snakefile", wd)
    shutil.copy(REPO / "config.yaml", wd)
    for folder in ("workflow", "profiles"):
        shutil.copytree(REPO / folder, wd / folder)
    (wd / "src").symlink_to(REPO / "src")
    return wd


def snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["snakemake", "-n", "--cores", "1", *args]
    return subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=120)


def validate(wd: Path, name: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "grokbench", "validate", name]
    return subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=60)


def bad(change) -> str:
    cfg = copy.deepcopy(TINY_CONFIG)
    change(cfg)
    return yaml.safe_dump(cfg)


CASES = {
    "yaml_error": "datasets:\n  a: {task: comparison\n",
    "empty": "",
    "duplicate_key": yaml.safe_dump(TINY_CONFIG) + "grid: []\n",
    "lr_inf": bad(lambda c: c["training"]["default"].update(lr=float("inf"))),
    "unknown_task_key": bad(lambda c: c["datasets"]["a"].update(n_entites=30)),
    "unknown_model_key": bad(lambda c: c["models"]["gpt"].update(n_layers=3)),
    "undefined_grid_name": bad(lambda c: c["grid"][0].update(models=["llama9"])),
    "bad_split": bad(lambda c: c.update(analysis={"ood_split": "test_ood"})),
    "bad_claim_key": bad(lambda c: c.update(claims=[{"id": "x", "text": "t", "check": "groks", "where": {"m": 1}}])),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_error_before_any_job(workdir, case):
    name = f"{case}.yaml"
    (workdir / name).write_text(CASES[case])
    by_snakemake, by_validate = snakemake(workdir, "--configfile", name), validate(workdir, name)
    assert by_snakemake.returncode != 0 and by_validate.returncode == 2
    message = by_validate.stderr.strip().removeprefix("grokbench validate: error: ")
    assert name in message
    assert f"grokbench: invalid config: {message}" in by_snakemake.stderr, by_snakemake.stderr
    assert "Traceback" not in by_snakemake.stderr
    assert not (workdir / "results").exists()


def test_missing_configfile_named_without_traceback(workdir):
    out = snakemake(workdir, "--configfile", "nope.yaml")
    assert out.returncode != 0
    assert "grokbench: invalid config: nope.yaml: no such config file" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_study_is_not_merged_with_config_yaml(workdir):
    """A minimal study: its own claims (none), TrainConfig's defaults, the runs of its grid only."""
    cfg = {k: v for k, v in TINY_CONFIG.items() if k != "training"}
    (workdir / "minimal.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(workdir, "--configfile", "minimal.yaml", "-p")
    assert out.returncode == 0, out.stderr[-2000:]
    assert validate(workdir, "minimal.yaml").stdout.strip() == "minimal.yaml: valid; 1 runs"
    text = out.stdout + out.stderr
    assert "--training '{}'" in text  # TrainConfig's defaults, not config.yaml's 6000 steps
    assert "results/runs/a/gpt/default/seed0" in text and "/comparison/" not in text
    assert "rule claims" in text and "gpt_groks" not in text  # config.yaml's claims are not merged in


def test_default_config_without_configfile(workdir):
    out = snakemake(workdir)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = len(study.cells(study.load(REPO / "config.yaml")))
    assert re.search(rf"^train +{expected}$", out.stdout + out.stderr, re.M)


def test_costlier_training_jobs_first(workdir):
    """The default study's dry run: each training job's priority is its plan.cpu_seconds (Mamba-1's
    first, GPT's last); the other jobs have none (0, which Snakemake does not print), so local cores
    take the long runs first and the per-run analyses after."""
    out = snakemake(workdir, "--verbose")
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = re.split(r"^\s*(?:local)?rule (\w+):$", out.stdout + out.stderr, flags=re.M)[1:]
    train, others = {}, []
    for rule, body in zip(blocks[::2], blocks[1::2], strict=True):
        priority = re.search(r"^\s+priority: (\S+)$", body, re.M)
        if rule == "train":
            model = re.search(r"model=(\w+)", body).group(1)
            train.setdefault(model, set()).add(float(priority.group(1)))
        elif priority:
            others.append((rule, priority.group(1)))
    assert set(train) == {"gpt", "llama", "rwkv", "mamba"} and all(len(p) == 1 for p in train.values())
    cost = {model: p.pop() for model, p in train.items()}
    assert cost["mamba"] > cost["rwkv"] > max(cost["llama"], cost["gpt"]) > 0, cost
    assert not others, others
