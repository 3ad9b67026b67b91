"""The study as a Workflow Run RO-Crate: `snakemake crate` on the tiny study (.test/config.yaml) in a
temporary copy of the workflow, read back with rocrate's reader and compared with the provenance records
and the files themselves; and what the export refuses (a changed file, an unfinished study, a crate root
that does not hold the results)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from rocrate.rocrate import ROCrate
from rocrate.utils import as_list

from grokbench import study as study_mod
from grokbench.io import sha256_file
from grokbench.provenance.crate import PROFILES, CrateError, export, find_records, study_outputs
from grokbench.report import figure_names

from ..helpers import copy_workflow

REPO = Path(__file__).resolve().parents[2]
TEST_STUDY = REPO / ".test" / "config.yaml"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "-s", "KILL", str(timeout), "snakemake", "--configfile", "study.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A copy of the workflow in which `snakemake crate` ran the tiny study and exported it."""
    workdir = tmp_path_factory.mktemp("crate")
    copy_workflow(workdir)
    shutil.copy(TEST_STUDY, workdir / "study.yaml")
    out = snakemake(workdir, "--cores", "2", "crate")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


@pytest.fixture
def copy(study, tmp_path) -> Path:
    """A copy of the finished study's results and study file, to spoil."""
    shutil.copytree(study / "results", tmp_path / "results")
    shutil.copy(study / "study.yaml", tmp_path / "study.yaml")
    return tmp_path


def entity_path(entity) -> str:
    return unquote(entity.id)


def in_results(names) -> set[str]:
    """Recorded paths (relative to the working directory) as crate paths (relative to results/)."""
    return {Path(n).relative_to("results").as_posix() for n in names}


def test_crate_lists_every_output_with_its_checksum(study):
    results = study / "results"
    crate = ROCrate(results)
    files = {entity_path(e): e for e in crate.data_entities}
    expected = study_outputs(study_mod.load(study / "study.yaml"), results)
    assert len(expected) > 30
    for path in expected:
        entity = files[path.relative_to(results).as_posix()]
        assert entity["sha256"] == sha256_file(path), path
        assert int(entity["contentSize"]) == path.stat().st_size
        assert entity.type == "File"
    for entity in crate.data_entities:  # the crate's own files too
        assert sha256_file(entity.source) == entity["sha256"], entity.id
    # the records' hashes are the crate's
    for record in find_records(results):
        info = json.loads(record.read_text())
        for name, sha in {**info.get("inputs", {}), **info.get("outputs", {})}.items():
            assert files[Path(name).relative_to("results").as_posix()]["sha256"] == sha


def test_each_record_is_an_action_linking_outputs_to_inputs(study):
    results = study / "results"
    crate = ROCrate(results)
    records = find_records(results)
    assert len(records) == 2 + 6 + 1 + 1 + 3  # datasets, runs, summary, claims, figures
    for record in records:
        rel = record.relative_to(results).as_posix()
        info = json.loads(record.read_text())
        action = crate.get(f"#make/{rel}")
        assert action.type == "CreateAction"
        assert {entity_path(e) for e in as_list(action["result"])} == in_results(info["outputs"]) | {rel}
        assert {entity_path(e) for e in as_list(action["object"])} == in_results(info["inputs"])
        assert (action["startTime"], action["endTime"]) == (info["started"], info["finished"])
        tool = action["instrument"]
        assert tool.type == "SoftwareApplication" and info["code_fingerprint"] in tool["description"]
        assert tool["isBasedOn"]["version"] == info["git"]["commit"]  # the code version
        requirements = {(p["name"], p["softwareVersion"]) for p in as_list(tool["softwareRequirements"])}
        assert requirements == {(k, v) for k, v in info["packages"].items() if v and k != "grokbench"}
        machine = action["location"]
        assert machine["name"] == info["host"]
        hardware = {p["name"]: p["value"] for p in as_list(machine["additionalProperty"])}
        assert hardware == {"host": info["host"], **info["hardware"]}
        control = crate.get(f"#control/{rel}")
        assert control["object"] is action and control["instrument"].type == "HowToStep"
    assert len(crate.get_by_type("CreateAction")) == len(records) + 1  # and the workflow run


def test_workflow_run_crate_structure(study):
    results = study / "results"
    crate = ROCrate(results)
    conforms = {e.id for e in as_list(crate.root_dataset["conformsTo"])}
    assert set(PROFILES) | {"https://w3id.org/workflowhub/workflow-ro-crate/1.1"} <= conforms
    workflow = crate.mainEntity
    assert workflow.id == "crate/workflow/Snakefile"
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= set(workflow.type)
    assert workflow["programmingLanguage"]["name"] == "Snakemake"
    assert Path(workflow.source).read_bytes() == (study / "Snakefile").read_bytes()
    steps = {s.id.split("#")[1] for s in as_list(workflow["step"])}
    figures = {f"figure_{f}" for f in figure_names(study_mod.load(study / "study.yaml"))}
    assert steps == {"dataset", "train", "summary", "claims", *figures}
    run = crate.get("#study-run")
    assert run["instrument"] is workflow
    assert [e.id for e in as_list(run["object"])] == ["crate/study.yaml"]
    engine = crate.get("#snakemake-run")
    assert engine.type == "OrganizeAction" and engine["result"] is run
    assert len(as_list(engine["object"])) == len(find_records(results))
    # the study as validated: the config the workflow ran
    validated = yaml.safe_load((results / "crate" / "study.yaml").read_text())
    assert validated == study_mod.load(study / "study.yaml")
    assert "6 training runs" in crate.root_dataset["description"]


def test_second_run_has_nothing_to_do(study):
    out = snakemake(study, "-n", "crate")
    assert out.returncode == 0 and "Nothing to be done" in out.stdout + out.stderr


def test_refuses_a_file_that_changed(copy):
    metrics = copy / "results" / "runs" / "a" / "gpt" / "default" / "seed1" / "metrics.parquet"
    metrics.write_bytes(metrics.read_bytes() + b"\0")
    before = (copy / "results" / "ro-crate-metadata.json").read_bytes()
    with pytest.raises(CrateError, match="CHANGED .*seed1/metrics.parquet"):
        export(copy / "results", config=copy / "study.yaml", workflow_dir=REPO)
    assert (copy / "results" / "ro-crate-metadata.json").read_bytes() == before  # nothing written


def test_refuses_an_unfinished_study(copy):
    (copy / "results" / "runs" / "b" / "gpt" / "default" / "seed0" / "model.pt").unlink()
    with pytest.raises(CrateError, match="(?s)not finished: 1 of its .* outputs are missing.*seed0/model.pt"):
        export(copy / "results", config=copy / "study.yaml", workflow_dir=REPO)


def test_the_crate_root_must_hold_the_results(copy):
    with pytest.raises(CrateError, match="crate root must be the results folder or a folder above it"):
        export(copy / "results", out=copy / "elsewhere", workflow_dir=REPO)


def test_cli_with_the_root_above_the_results(copy):
    """From the working directory the study ran in, with the crate root there: paths gain `results/`."""
    (copy / "results" / "ro-crate-metadata.json").unlink()
    cmd = [sys.executable, "-m", "grokbench", "crate", "results", "--config", "study.yaml", "--out", ".",
           "--workflow", str(REPO), "--license", "https://spdx.org/licenses/CC-BY-4.0"]  # fmt: skip
    out = subprocess.run(cmd, cwd=copy, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ro-crate-metadata.json:" in out.stdout
    crate = ROCrate(copy)
    files = {entity_path(e): e for e in crate.data_entities}
    for path in study_outputs(study_mod.load(copy / "study.yaml"), Path("results")):
        assert files[path.as_posix()]["sha256"] == sha256_file(copy / path)
    assert crate.root_dataset["license"].id == "https://spdx.org/licenses/CC-BY-4.0"
    assert crate.mainEntity.id == "results/crate/workflow/Snakefile"


def test_cli_reports_a_changed_file(copy):
    summary = copy / "results" / "summary" / "summary.csv"
    summary.write_text(summary.read_text() + "\n")
    cmd = [sys.executable, "-m", "grokbench", "crate", str(copy / "results"), "--workflow", str(REPO)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "do not match their provenance records" in out.stderr and "summary.csv" in out.stderr
