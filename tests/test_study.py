"""Config validation: malformed studies are rejected before any job, naming the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from grokbench import cli, study

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_valid():
    cfg = study.load(REPO / "config.yaml")
    cells = study.cells(cfg)
    assert len(cells) >= 2
    assert {c.seed for c in cells} >= {0, 1}


def test_paper_config_is_valid():
    cfg = study.load(REPO / "config" / "paper.yaml")
    cells = study.cells(cfg)
    assert {c.model for c in cells} == {"gpt", "llama", "rwkv", "mamba"}
    assert all(len({c.seed for c in cells if c.model == m}) >= 3 for m in ("gpt", "llama", "rwkv", "mamba"))
    assert cfg["datasets"]["cmp"]["n_entities"] == 1000 and cfg["datasets"]["cmp"]["phi"] == 12.6


def test_cpu_study_config_is_valid():
    cfg = study.load(REPO / "config" / "study-cpu.yaml")
    assert len(study.cells(cfg)) == 36
    assert set(cfg["sweeps"]) == {"entities", "value_range", "phi", "accelerators"}


def test_defaults_filled(tiny_config):
    cfg = study.validate(tiny_config)
    assert cfg["results"] == "results"
    assert cfg["grid"][0]["training"] == ["default"]
    assert cfg["analysis"] == {}


def test_cells_union_without_duplicates(tiny_config):
    tiny_config["datasets"]["b"] = dict(tiny_config["datasets"]["a"], seed=1)
    tiny_config["grid"] = [
        {"datasets": ["a", "b"], "models": ["gpt"], "seeds": [0, 1]},
        {"datasets": ["a"], "models": ["gpt"], "seeds": [1, 2]},
    ]
    cells = study.cells(study.validate(tiny_config))
    assert len(cells) == 5
    assert cells[0].run_id == "a/gpt/default/seed0"


def set_path(cfg: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for p in parents:
        cfg = cfg[int(p)] if isinstance(cfg, list) else cfg[p]
    if isinstance(cfg, list):
        cfg[int(last)] = value
    else:
        cfg[last] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("reslts", "x", "unknown key 'reslts'"),
        ("datasets.a.n_entites", 10, "n_entites"),
        ("datasets.a.task", "sorting", "config.datasets.a.task='sorting': unknown task"),
        ("datasets.a.phi", 1e6, "config.datasets.a.phi"),
        ("datasets.a.n_entities", "24", "config.datasets.a.n_entities"),
        ("datasets.a.id_ratio", 1.5, "config.datasets.a.id_ratio"),
        ("models.gpt.family", "transformer", "config.models.gpt: unknown model family 'transformer'"),
        ("models.gpt.n_layers", 2, "config.models.gpt: unknown key 'n_layers'"),
        ("models.gpt.d_model", 31, "config.models.gpt: invalid gpt model: d_model (31)"),
        ("training.default.stepz", 10, "config.training.default: unknown key 'stepz'"),
        ("training.default.steps", "10", "config.training.default.steps"),
        ("training.default.lr", -1.0, "config.training.default.lr"),
        ("training.default.eval", {"every": 0}, "config.training.default.eval.every"),
        ("grid.0.models", ["llama9"], "config.grid[0].models: 'llama9' is not defined"),
        ("grid.0.seeds", [], "config.grid[0].seeds"),
        ("grid.0.training", ["fast"], "config.grid[0].training: 'fast' is not defined"),
        ("analysis", {"treshold": 0.9}, "unknown key 'treshold'"),
        ("datasets", {"bad name!": {"task": "comparison"}}, "config.datasets"),
    ],
)
def test_rejects_naming_the_key(tiny_config, path, value, message):
    set_path(tiny_config, path, value)
    with pytest.raises(study.ConfigError) as err:
        study.validate(tiny_config)
    assert message in str(err.value)


def test_missing_section_named(tiny_config):
    del tiny_config["models"]
    with pytest.raises(study.ConfigError, match="'models' is a required property"):
        study.validate(tiny_config)


def test_cli_validate(tmp_path, tiny_config, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_config))
    assert cli.main(["validate", str(good)]) == 0
    tiny_config["models"]["gpt"]["n_layers"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config))
    assert cli.main(["validate", str(bad)]) == 2
    assert "n_layers" in capsys.readouterr().err
    assert cli.main(["validate", str(tmp_path / "missing.yaml")]) == 2
