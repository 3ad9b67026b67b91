"""Model and dataset keys as grid axes: a grid block's `hparams` keys `model.<key>` and `data.<key>`
(grokbench.grid.split_hparams, grokbench.study). Each combination is a model (a dataset) of its own, named
after its base (`gpt+shareall`, `a+format.k_demos2`), checked by the family's (task's) checker before any
job; training keys keep their meaning and their selection on the validation split."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grokbench import grid
from grokbench.study import ConfigError, validate

from .conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[1]


def axes_config(hparams: dict, **model) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["a"]["val_size"] = 10
    cfg["models"]["gpt"].update(model)
    cfg["grid"][0]["hparams"] = hparams
    return cfg


def test_split_hparams_by_prefix():
    hp = {"lr": [1], "model.share": [2], "data.format.k_demos": [3], "accelerators.loss": [4]}
    assert grid.split_hparams(hp) == {
        "training": {"lr": [1], "accelerators.loss": [4]},
        "models": {"share": [2]},
        "datasets": {"format.k_demos": [3]},
    }
    assert grid.base_name("gpt+shareall+loops2") == "gpt" and grid.base_name("a") == "a"


def test_model_and_format_axes_plan_every_cell():
    cfg = validate(axes_config({"model.share": ["none", "all"], "model.loops": [1, 2],
                                "data.format.k_demos": [0, 2]}))  # fmt: skip
    models = ["gpt", "gpt+loops2", "gpt+shareall", "gpt+shareall+loops2"]
    datasets = ["a", "a+format.k_demos2"]
    assert grid.cells(cfg) == [grid.Cell(d, m, "default", 0) for d in datasets for m in models]
    # a value equal to the base's (share none, loops 1, k_demos 0: the defaults) keeps the base's name
    # and spec; the variants are the base's spec with the swept keys set
    assert cfg["models"]["gpt"] == TINY_CONFIG["models"]["gpt"]
    assert cfg["models"]["gpt+shareall+loops2"] == {
        **TINY_CONFIG["models"]["gpt"],
        "share": "all",
        "loops": 2,
    }
    assert cfg["datasets"]["a+format.k_demos2"] == {**cfg["datasets"]["a"], "format": {"k_demos": 2}}
    assert "format" not in cfg["datasets"]["a"]
    assert "hparams" not in cfg["grid"][0]


def test_model_data_and_training_axes_together():
    cfg = validate(axes_config({"lr": [3e-3, 1e-2], "model.memory_tokens": [0, 2]}))
    assert grid.cells(cfg) == [
        grid.Cell("a", m, t, 0) for m in ("gpt", "gpt+memory_tokens2") for t in ("default", "default+lr0.01")
    ]


def test_names_are_stable():
    """The same config gives the same names; adding a training axis or another block leaves the model and
    dataset names (so their runs' folders) as they were."""
    hp = {"model.share": ["all"], "data.format.k_demos": [2]}
    a = validate(axes_config(hp))
    b = validate(axes_config(hp))
    assert grid.cells(a) == grid.cells(b) == [grid.Cell("a+format.k_demos2", "gpt+shareall", "default", 0)]
    more = axes_config({**hp, "lr": [3e-3, 1e-2]})
    more["grid"].append({"datasets": ["a"], "models": ["gpt"], "seeds": [1]})
    c = validate(more)
    assert {(x.dataset, x.model) for x in grid.cells(c) if x.seed == 0} == {
        ("a+format.k_demos2", "gpt+shareall")
    }
    assert c["models"]["gpt+shareall"] == a["models"]["gpt+shareall"]


def test_a_preset_base_compares_with_its_preset_values():
    cfg = axes_config({"model.n_layer": [2, 3]})
    cfg["models"]["gpt"] = {"family": "gpt", "preset": "tiny"}  # tiny: n_layer 2
    out = validate(cfg)
    assert [c.model for c in grid.cells(out)] == ["gpt", "gpt+n_layer3"]
    assert out["models"]["gpt+n_layer3"] == {"family": "gpt", "preset": "tiny", "n_layer": 3}


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        # a key the family does not take, named with the model
        (
            {"model.d_state": [4]},
            r"hparams\.model\.d_state: family gpt \(config\.models\.gpt\) has no key 'd_state'",
        ),
        ({"model.backend": ["torch"]}, r"hparams\.model\.backend: family gpt .* has no key 'backend'"),
        ({"model.shares": ["all"]}, r"has no key 'shares' \(did you mean 'model\.share'\?\)"),
        # a value the family's checker rejects, named with the variant
        ({"model.loops": [0]}, r"hparams: model gpt\+loops0: invalid gpt model: loops must be >= 1"),
        ({"model.share": ["every"]}, r"model gpt\+shareevery: invalid gpt model: share must be one of"),
        ({"model.reinject": [True]}, r"model gpt\+reinjecttrue: invalid gpt model: reinject needs loops > 1"),
        # datasets: the task's parameters and format.<key>
        (
            {"data.format.kdemos": [2]},
            r"hparams\.data\.format\.kdemos: task comparison .* has no parameter "
            r"'format\.kdemos' \(did you mean 'data\.format\.k_demos'\?\)",
        ),
        ({"data.format.k_demos": [1]}, r"dataset a\+format\.k_demos1: format\.k_demos=1: must be at least 2"),
        ({"data.task": ["inverse"]}, r"hparams\.data\.task: task comparison .* has no parameter 'task'"),
        ({"data.format": [{"k_demos": 2}]}, r"hparams\.data\.format\[0\]=.*sweep nested keys by dotted path"),
        ({"model.share": ["a b"]}, r"hparams\.model\.share\[0\]='a b': a swept text value is part of"),
        # training keys as before, the message naming the prefixed forms too
        ({"modle.share": ["all"]}, r"unknown key 'modle\.share'.*or model\.<key>"),
    ],
)
def test_invalid_axes_rejected_by_name(hparams, message):
    with pytest.raises(ConfigError, match=message):
        validate(axes_config(hparams))


def test_a_family_without_the_key_is_rejected_even_beside_one_with_it():
    cfg = axes_config({"model.d_state": [4, 8]})
    cfg["models"] = {"mamba": {"family": "mamba", "n_layer": 1, "d_model": 16}, **cfg["models"]}
    cfg["grid"][0]["models"] = ["mamba", "gpt"]
    with pytest.raises(ConfigError, match=r"family gpt \(config\.models\.gpt\) has no key 'd_state'"):
        validate(cfg)
    cfg["grid"][0]["models"] = ["mamba"]
    assert [c.model for c in grid.cells(validate(cfg))] == ["mamba+d_state4", "mamba+d_state8"]


def test_model_or_data_axes_alone_need_no_validation_split():
    """Each variant is a model (dataset) of its own: with no training axis there is nothing to select."""
    cfg = axes_config({"model.share": ["none", "all"]})
    del cfg["datasets"]["a"]["val_size"]
    assert len(grid.cells(validate(cfg))) == 2
    cfg["grid"][0]["hparams"]["lr"] = [1e-3, 3e-3]
    with pytest.raises(ConfigError, match="val_size"):
        validate(cfg)


def test_summary_columns_and_sweeps_see_the_format_axis():
    cfg = axes_config({"data.format.k_demos": [0, 2, 4]})
    cfg["sweeps"] = {"demos": {"x": "data.format.k_demos", "models": ["gpt"]}}
    out = validate(cfg)
    assert [c.dataset for c in grid.cells(out)] == ["a", "a+format.k_demos2", "a+format.k_demos4"]


def test_sweeps_over_a_model_key():
    """`model.<key>` is a summary column (the spec as written, flattened as data.* and train.* are), so a
    sweep can plot against a model axis; an unknown one is rejected naming the columns."""
    cfg = axes_config({"model.loops": [1, 2]})
    cfg["sweeps"] = {"loops": {"x": "model.loops", "hue": "model.family"}}
    assert [c.model for c in grid.cells(validate(cfg))] == ["gpt", "gpt+loops2"]
    cfg["sweeps"] = {"loops": {"x": "model.loop"}}
    with pytest.raises(ConfigError, match=r"model.loop.*did you mean 'model.loops'.*model.<model key>"):
        validate(cfg)


@pytest.mark.slow
def test_snakemake_dry_run_plans_the_variants(tmp_path):
    """`snakemake -n` on a tiny study with a model axis and a format axis: one dataset job per format, one
    training job per cell (the names with '+' pass the wildcard constraints)."""
    shutil.copy(REPO / "Snakefile", tmp_path)
    shutil.copytree(REPO / "workflow", tmp_path / "workflow")
    shutil.copytree(REPO / "src" / "grokbench", tmp_path / "src" / "grokbench",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    cfg = axes_config({"model.share": ["none", "all"], "data.format.k_demos": [0, 2]})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "-s", "KILL", "300", "snakemake", "--configfile", "study.yaml", "-n"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout + out.stderr
    stats = dict(line.split() for line in text.split("Job stats:")[1].split("\n\n")[0].splitlines()[2:])
    assert stats["dataset"] == "2" and stats["train"] == "4"
    runs = ["a/gpt", "a/gpt+shareall", "a+format.k_demos2/gpt", "a+format.k_demos2/gpt+shareall"]
    for run in runs:
        run_id = f"{run}/default/seed0"
        assert f"results/runs/{run_id}/run.json" in text
    assert "results/data/a+format.k_demos2.parquet" in text
