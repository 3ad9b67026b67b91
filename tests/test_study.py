"""Config validation: malformed studies are rejected before any job, naming the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from grokbench import cli, study

from .conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_valid():
    cfg = study.load(REPO / "config.yaml")
    cells = study.cells(cfg)
    assert len(cells) >= 2
    assert {c.seed for c in cells} >= {0, 1}


def test_paper_config_is_valid():
    cfg = study.load(REPO / "config" / "paper.yaml")
    cells = study.cells(cfg)
    seed_study = {"gpt", "llama", "rwkv", "mamba"}
    linear = {"gla", "retnet", "deltanet", "hgrn2", "rwkv6", "mamba2"}  # issue #15, objective 4
    variants = {"share_all", "share_mlp", "loop2", "loop2_reinject", "mem_tokens", "kv_memory"}  # objective 3
    assert {c.model for c in cells} == seed_study | linear | variants
    assert all(len({c.seed for c in cells if c.model == m}) >= 3 for m in seed_study | linear | variants)
    assert cfg["datasets"]["cmp"]["n_entities"] == 1000 and cfg["datasets"]["cmp"]["phi"] == 12.6


# the issue #15 studies at CPU scale: runs, and every setting of the grid over 3 seeds
ISSUE15_CPU_CONFIGS = {"variants-cpu": 42, "linear-attention-cpu": 54, "incontext-cpu": 30}


@pytest.mark.parametrize(("name", "n_runs"), sorted(ISSUE15_CPU_CONFIGS.items()))
def test_issue15_cpu_configs_are_valid(name, n_runs):
    cfg = study.load(REPO / "config" / f"{name}.yaml")
    cells = study.cells(cfg)
    assert len(cells) == n_runs
    settings = {(c.dataset, c.model, c.training) for c in cells}
    assert all(len({c.seed for c in cells if (c.dataset, c.model, c.training) == s}) == 3 for s in settings)
    assert cfg["claims"] and cfg["results"] == f"results/{name}"


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


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("training.default.lr", float("inf"), "config.training.default.lr=inf: expected a finite number"),
        ("training.default.eps", float("nan"), "config.training.default.eps=nan: expected a finite number"),
        ("training.default.weight_decay", float("inf"), "config.training.default.weight_decay=inf"),
        ("training.default.grad_clip", float("-inf"), "config.training.default.grad_clip=-inf"),
        ("analysis.threshold", float("nan"), "config.analysis.threshold=nan"),
        ("datasets.a.phi", float("inf"), "config.datasets.a.phi=inf"),
        ("models.gpt.dropout", float("nan"), "config.models.gpt.dropout=nan"),
    ],
)
def test_non_finite_numbers_rejected_anywhere(tiny_config, path, value, message):
    tiny_config["analysis"] = {}
    set_path(tiny_config, path, value)
    with pytest.raises(study.ConfigError) as err:
        study.validate(tiny_config)
    assert message in str(err.value)


def test_non_finite_numbers_rejected_from_yaml_and_json(tmp_path, tiny_dataset_path):
    text = yaml.safe_dump(TINY_CONFIG).replace("lr: 0.003", "lr: .inf")
    assert ".inf" in text
    (tmp_path / "inf.yaml").write_text(text)
    with pytest.raises(study.ConfigError, match=r"inf.yaml: config.training.default.lr=inf"):
        study.load(tmp_path / "inf.yaml")
    # JSON on the command line (Python's json reads Infinity): the dataclass checker rejects it too
    out = tmp_path / "run"
    model = '{"family": "gpt", "n_layer": 1, "d_model": 32, "n_head": 2}'
    argv = ["train", "--data", str(tiny_dataset_path), "--model", model, "--training", '{"lr": Infinity}']
    argv += ["--out-dir", str(out)]
    assert cli.main(argv) == 2
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datasets:\n  a: {task: comparison}\n  a: {task: ordering}\n", r"x.yaml:3: duplicate key 'a'"),
        ("models: {g: {family: gpt, family: llama}}\n", r"x.yaml:1: duplicate key 'family'"),
        ("grid:\n  - {datasets: [a], seeds: [0], seeds: [1]}\n", r"x.yaml:2: duplicate key 'seeds'"),
        ("datasets:\n  a: {task: comparison\n", r"x.yaml:3:1: not valid YAML: expected ',' or '}'"),
        ("datasets:\n\ta: 1\n", r"x.yaml:2:1: not valid YAML: found character '\\t'"),
        ("", r"x.yaml: the file is empty"),
        ("- 1\n", r"x.yaml: expected a mapping \(key: value\) at the top level, got list"),
    ],
)  # fmt: skip
def test_read_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(study.ConfigError, match=message):
        study.load(tmp_path / "x.yaml")


def test_yaml_merge_keys_may_override(tmp_path):
    """`<<: *base` then a key of the base: that is merging, not a duplicate."""
    text = "training:\n  default: &base {steps: 40, lr: 0.003}\n  fast:\n    <<: *base\n    lr: 0.01\n"
    (tmp_path / "m.yaml").write_text(text)
    assert study.read_yaml(tmp_path / "m.yaml")["training"]["fast"] == {"steps": 40, "lr": 0.01}


def test_study_is_what_its_file_says_plus_schema_defaults(tmp_path):
    """A study without a training section trains with TrainConfig's defaults, not config.yaml's."""
    cfg = {k: v for k, v in TINY_CONFIG.items() if k != "training"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    loaded = study.load(tmp_path / "s.yaml")
    assert loaded["training"] == {"default": {}}  # the schema's default: TrainConfig() as it is
    assert loaded["claims"] == [] and loaded["sweeps"] == {} and loaded["results"] == "results"
    assert loaded["grid"][0]["training"] == ["default"]


def test_configfiles_in_argv():
    assert study.configfiles_in(["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2"]) == [
        "a.yaml",
        "b.yaml",
    ]
    assert study.configfiles_in(["--configfile=x.yaml", "-n"]) == ["x.yaml"]
    assert study.configfiles_in(["--configfiles", "q", "-n", "t"]) == ["q"]
    assert study.configfiles_in(["--cores", "2"]) == []
