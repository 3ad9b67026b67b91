"""Packs in the workflow (config `pack.size`; workflow/rules/train.smk): which jobs a study plans, and that
adding seeds plans only the new packs. One real pack job (tiny GPT, 20 steps) checks its outputs."""

from __future__ import annotations

import copy
import json

import pytest

from ..conftest import TINY_CONFIG
from ..helpers import copy_workflow
from .test_pipeline import planned, snakemake, write_config

pytestmark = pytest.mark.slow


def _study(seeds: list[int], size: int | None) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["training"]["default"] = {**cfg["training"]["default"], "steps": 20}
    cfg["grid"][0]["seeds"] = seeds
    if size is not None:
        cfg["pack"] = {"size": size}
    return cfg


def _training_jobs(jobs: dict[str, int]) -> dict[str, int]:
    """Planned training jobs: `train` (single runs) and `packs` (all train_pack_* rules together)."""
    packs = sum(n for rule, n in jobs.items() if rule.startswith("train_pack_"))
    out = {"train": jobs.get("train", 0), "packs": packs}
    return {k: v for k, v in out.items() if v}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("packs")
    copy_workflow(workdir)
    return workdir


def test_pack_size_plans_pack_jobs(workdir):
    write_config(workdir, _study([0, 1, 2], None))
    assert _training_jobs(planned(workdir)) == {"train": 3}  # unset: one job per run, as before
    write_config(workdir, _study([0, 1, 2], 2))
    jobs = planned(workdir)
    assert _training_jobs(jobs) == {"packs": 1, "train": 1}  # seeds 0-1 together, seed 2 alone
    assert "train_pack_a_gpt_default_pack0_1_" in " ".join(jobs)


def test_pack_outputs_and_adding_seeds(workdir):
    write_config(workdir, _study([0, 1], 2))
    runs = [f"results/runs/a/gpt/default/seed{s}/run.json" for s in (0, 1)]
    out = snakemake(workdir, "--cores", "2", *runs)
    assert out.returncode == 0, out.stderr[-3000:]
    for s, path in zip((0, 1), runs):
        info = json.loads((workdir / path).read_text())
        assert info["run_id"] == f"a/gpt/default/seed{s}" and info["status"] == "completed"
        assert info["pack"] == {"id": "a/gpt/default/pack0-1", "size": 2, "seeds": [0, 1],
                                "members": ["a/gpt/default/seed0", "a/gpt/default/seed1"]}  # fmt: skip
    assert (workdir / "results/logs/train/a/gpt/default/pack0-1.log").exists()
    # seeds 2 and 3 are a new block: only their pack is planned, the complete one is not trained again
    write_config(workdir, _study([0, 1, 2, 3], 2))
    jobs = planned(workdir)
    assert _training_jobs(jobs) == {"packs": 1}
    assert "train_pack_a_gpt_default_pack2_3_" in " ".join(jobs)
