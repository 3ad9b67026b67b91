"""Study configs: validation before any job runs, and the grid of cells to train.

`validate` checks a config dict in two passes and raises `ConfigError` naming the offending key:
1. structure and types against the JSON schema (workflow/schemas/config.schema.yaml), defaults filled in;
2. meaning, against the code that will use each part: task parameters (feasibility included), model
   families and their keys, training settings, analysis settings, and every name the grid refers to.

Hyperparameter grids: a grid block's `hparams` (e.g. `{lr: [3e-4, 1e-3]}`) trains every combination of
the listed values on top of each of its training settings. Each combination becomes a training setting of
its own, named `<base>+<key><value>...` (e.g. `default+lr0.0003`) and added to `config.training`, so that
rules, run folders and the summary treat it like any other; a value equal to the base's keeps the base
name, so a combination that is the base setting itself is the same run. Changing one block's grid leaves
every other run's name and settings, hence its outputs, as they are.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .analysis import AnalysisConfig
from .models import check_model_spec
from .tasks import TASKS, check_params
from .train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Cell:
    """One run of the study: a dataset x a model x training settings x a seed (all by name)."""

    dataset: str
    model: str
    training: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.model}/{self.training}/seed{self.seed}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "training": self.training,
            "seed": self.seed,
        }


def _path(error: jsonschema.ValidationError) -> str:
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)


def _fill_defaults(schema: dict, instance: Any) -> None:
    """Fill `default`s of object properties (recursively, where the instance has the parent)."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(sub, instance[key])
            if sub.get("type") == "array" and isinstance(instance[key], list):
                for item in instance[key]:
                    _fill_defaults(sub.get("items", {}), item)


def _schema_error(error: jsonschema.ValidationError) -> ConfigError:
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = sorted(error.schema.get("properties", {}))
        return ConfigError(f"{_path(error)}: unknown key {extra[0]!r}; expected one of {known}")
    return ConfigError(f"{_path(error)}: {error.message}")


def validate(config: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError otherwise."""
    config = copy.deepcopy(config)
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        raise _schema_error(errors[0])
    _fill_defaults(schema, config)
    try:
        for name, spec in config["datasets"].items():
            where = f"config.datasets.{name}"
            if spec["task"] not in TASKS:
                raise ValueError(f"{where}.task={spec['task']!r}: unknown task; known: {sorted(TASKS)}")
            try:
                check_params(spec["task"], {k: v for k, v in spec.items() if k != "task"})
            except ValueError as e:  # the message starts with the parameter's name
                raise ValueError(f"{where}.{e}") from None
        for name, spec in config["models"].items():
            check_model_spec(spec, where=f"config.models.{name}")
        for name, spec in config["training"].items():
            TrainConfig.from_dict(spec, where=f"config.training.{name}")
        analysis = AnalysisConfig.from_dict(config["analysis"], where="config.analysis")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for i, block in enumerate(config["grid"]):
        for axis, section in (
            ("datasets", "datasets"),
            ("models", "models"),
            ("training", "training"),
        ):
            for name in block[axis]:
                if name not in config[section]:
                    raise ConfigError(
                        f"config.grid[{i}].{axis}: {name!r} is not defined in config.{section}; "
                        f"defined: {sorted(config[section])}"
                    )
        if block.get("hparams"):
            _check_selection_data(config, block, i, analysis)
            block["training"] = _expand_hparams(config, block["training"], block.pop("hparams"), i)
    from .claims import check_claims  # late: claims imports analysis only

    grid = cells(config)
    try:
        _check_sweeps(config, grid)
        check_claims(config, grid)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return config


def hparam_name(base: str, overrides: dict[str, Any]) -> str:
    """`default` + {lr: 0.003} -> `default+lr0.003`."""
    return "".join([base, *(f"+{k}{v:g}" for k, v in overrides.items())])


def _expand_hparams(config: dict, bases: list[str], hparams: dict[str, list], i: int) -> list[str]:
    """Add each combination of `hparams` on top of each base setting to config.training; return the names."""
    names: dict[str, None] = {}
    keys = list(hparams)
    for base in bases:
        base_cfg = TrainConfig.from_dict(config["training"][base], where=f"config.training.{base}")
        for values in itertools.product(*(hparams[k] for k in keys)):
            changed = {k: v for k, v in zip(keys, values) if v != getattr(base_cfg, k)}
            name = hparam_name(base, changed)
            spec = {**config["training"][base], **changed}
            try:
                TrainConfig.from_dict(spec, where=f"config.grid[{i}].hparams")
            except ValueError as e:
                raise ConfigError(str(e)) from None
            config["training"][name] = spec
            names[name] = None
    return list(names)


SECTIONS = {"dataset": "datasets", "model": "models", "training": "training"}  # Cell field -> section


def grid_matches(config: dict, grid: list[Cell], filters: dict[str, list], where: dict[str, str]) -> bool:
    """Whether some run of `grid` matches every filter (Cell field -> names). A name its config section
    does not define raises ValueError at `where[field]`, the filter's key in the config."""
    for field, names in filters.items():
        section = SECTIONS[field]
        for name in names:
            if name not in config[section]:
                raise ValueError(
                    f"{where[field]}: {name!r} is not defined in config.{section}; "
                    f"defined: {sorted(config[section])}"
                )
    return any(all(getattr(c, f) in names for f, names in filters.items()) for c in grid)


def _check_sweeps(config: dict, grid: list[Cell]) -> None:
    """Every name a sweep figure filters on is defined, and some run of the grid matches the filters."""
    for name, spec in config["sweeps"].items():
        keys = {field: section for field, section in SECTIONS.items() if spec.get(section)}
        filters = {field: spec[section] for field, section in keys.items()}
        where = {field: f"config.sweeps.{name}.{section}" for field, section in keys.items()}
        if not grid_matches(config, grid, filters, where):
            raise ValueError(f"config.sweeps.{name}: no run of the grid matches its filters")


def _check_selection_data(config: dict, block: dict, i: int, analysis: AnalysisConfig) -> None:
    """Choosing among hyperparameter settings needs the selection split in every dataset of the block."""
    split = analysis.selection_split
    for name in block["datasets"]:
        spec = config["datasets"][name]
        if split == "val_inferred_ood" and not spec.get("val_size"):
            raise ConfigError(
                f"config.grid[{i}].hparams: selecting among settings uses the split {split!r} "
                f"(config.analysis.selection_split), but config.datasets.{name} has none; "
                f"set config.datasets.{name}.val_size > 0"
            )


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate(config)


def cells(config: dict[str, Any]) -> list[Cell]:
    """Every cell of the grid, in config order, without duplicates."""
    out: dict[Cell, None] = {}
    for block in config["grid"]:
        for d, m, t, s in itertools.product(
            block["datasets"], block["models"], block["training"], block["seeds"]
        ):
            out[Cell(d, m, t, s)] = None
    return list(out)
