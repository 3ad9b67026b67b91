"""Study configs: one loading path for every entry point, and validation before any job runs.

A study is one YAML file, exactly as written plus the schema's defaults. `load(path)` is the only way in:
`python -m grokbench validate`, `snakemake --configfile` (through workflow/rules/common.smk, which
replaces the config Snakemake merged by what `load` returns) and the tests all call it, so they accept
and reject the same files with the same messages. It raises `ConfigError` naming the file, line or key:

1. reading: the file exists, is YAML (errors give file:line:column), is a mapping, has no key twice at any
   level, and holds no NaN or infinity anywhere;
2. structure and types against the JSON schema (grokbench/schemas/config.schema.yaml, package data), the
   first error reported by key path; then the schema's defaults are filled in by Snakemake's own
   `snakemake.utils.validate(..., set_default=True)`;
3. meaning, against the code that will use each part: task parameters (feasibility included), model
   families and their keys, training settings (grokbench.train.config.TrainConfig owns their names,
   types and bounds), analysis settings, hyperparameter grids, sweeps and claims, and every name the grid
   refers to.

Hyperparameter grids: a grid block's `hparams` (e.g. `{lr: [3e-4, 1e-3]}`) trains every combination of
the listed values on top of each of its training settings. Each combination becomes a training setting of
its own, named by `grid.setting_name` (e.g. `default+lr0.0003`) and added to `config.training`, so that
rules, run folders and the summary treat it like any other; a value equal to the base's keeps the base
name, so a combination that is the base setting itself is the same run. Changing one block's grid leaves
every other run's name and settings, hence its outputs, as they are.

Model and dataset axes: an `hparams` key `model.<key>` sweeps a key of each model of the block (a
variant key such as `model.share`, `model.loops`, `model.memory_tokens`, or any other key of its
family), `data.<key>` a parameter of each dataset of the block, nested ones dotted (`data.format.k_demos`,
the in-context format; `data.phi`). Each combination is a model (dataset) of its own, named after its
base the same way (`gpt+shareall`, `cmp+format.k_demos2`, grid.setting_name) and added to config.models
(config.datasets); the block's cells are then every dataset variant x model variant x training setting x
seed. Each variant is checked before any job as a model (dataset) of the config is, by the family's
(task's) own checker: a key the family (task) does not have is rejected naming it and the model, a value
it rejects naming the variant. A variant is a model (dataset) like any other: the hyperparameter setting
is selected per dataset x model x base training setting, so per variant.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import inspect
import itertools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .curves import TRANSITION_KEYS, Transitions
from .grid import SECTIONS, Cell, cells, grid_matches, packs, setting_name, split_hparams
from .models import FAMILIES, check_model_spec, family_keys
from .models.presets import expand_preset
from .params import dataclass_in
from .report.analysis import (
    EVAL_SPLITS,
    SPLIT_STEP,
    SUMMARY_COLUMNS,
    TEST_SPLITS,
    AnalysisConfig,
    flatten,
    not_a_column,
)
from .report.claims import check_claims
from .tasks import CHECKS, TASKS, check_params
from .tasks.incontext import FORMAT_KEY, FormatParams, parse_format
from .train.config import TrainConfig

SCHEMA = importlib.resources.files("grokbench") / "schemas" / "config.schema.yaml"

__all__ = ["SCHEMA", "Cell", "ConfigError", "cells", "load", "read_yaml", "validate"]


class ConfigError(ValueError):
    pass


# --- 1. reading -----------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last silently).
    A key merged in with `<<: *anchor` may still be set again: that is what merging is for."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.name}:{line}: duplicate key {key!r} (first given on line {seen[key]}); "
                    "each key may appear once per mapping"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds, or ConfigError naming the file (and line) of the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        config = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
    if config is None:
        raise ConfigError(f"{path}: the file is empty; a study needs datasets, models and grid")
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise ConfigError(f"{path}: expected a mapping (key: value) at the top level, got {kind}")
    return config


def configfiles_in(argv: list[str]) -> list[str]:
    """The files a Snakemake command line names with --configfile / --configfiles (FILE ... or =FILE)."""
    files, taking = [], False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in ("--configfile", "--configfiles"):
            taking = not eq
            files += [value] if eq else []
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


def precheck_argv(argv: list[str]) -> None:
    """Read every --configfile of a Snakemake command line before Snakemake does, and stop with this
    module's message (file and line) where one cannot be read. Snakemake loads config files before the
    Snakefile runs and names neither file nor line (a missing file even gives a traceback); the workflow
    profile (profiles/default/config.yaml) calls this first. Validation proper happens in the Snakefile."""
    import sys

    for path in configfiles_in(argv):
        try:
            read_yaml(path)
        except ConfigError as e:
            print(f"grokbench: invalid config: {e}", file=sys.stderr)
            sys.exit(1)


def _check_finite(value: Any, where: str) -> None:
    """No NaN or infinity anywhere: YAML reads `.nan` and `.inf` as floats, and schemas accept them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}={value!r}: expected a finite number")
    if isinstance(value, dict):
        for key, sub in value.items():
            _check_finite(sub, f"{where}.{key}")
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _check_finite(sub, f"{where}[{i}]")


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The validated study of a config file: exactly what it says plus the schema's defaults. `overrides`
    (Snakemake's --config KEY=VALUE) are merged in first. Errors start with the file's path."""
    config = read_yaml(path)
    if overrides:
        from snakemake.utils import update_config

        update_config(config, copy.deepcopy(overrides))
    try:
        return validate(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --- 2. structure ---------------------------------------------------------------------------------------


def _path(error: jsonschema.ValidationError) -> str:
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)


def _schema_error(error: jsonschema.ValidationError) -> ConfigError:
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = sorted(error.schema.get("properties", {}))
        return ConfigError(f"{_path(error)}: unknown key {extra[0]!r}; expected one of {known}")
    return ConfigError(f"{_path(error)}: {error.message}")


def _check_schema(config: dict[str, Any]) -> dict[str, Any]:
    """First schema error by key path, else `config` with the schema's defaults filled in."""
    from snakemake.utils import validate as fill_defaults  # Snakemake's own default filling

    with importlib.resources.as_file(SCHEMA) as schema_path:
        schema = yaml.safe_load(schema_path.read_text())
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(e.path)))
        if errors:
            raise _schema_error(errors[0])
        fill_defaults(config, str(schema_path), set_default=True)
    return config


# --- 3. meaning -----------------------------------------------------------------------------------------


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError otherwise."""
    config = copy.deepcopy(config)
    _check_finite(config, "config")
    _check_schema(config)
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
        for i, block in enumerate(config["grid"]):
            _check_names(config, block, i)
            if block.get("hparams"):
                axes = split_hparams(block.pop("hparams"))
                _check_hparam_keys(axes["training"], f"config.grid[{i}].hparams")
                for section, prefix in (("models", "model."), ("datasets", "data.")):
                    _check_swept_text(axes[section], f"config.grid[{i}].hparams.{prefix}")
                if axes["models"]:
                    block["models"] = _expand_models(config, block["models"], axes["models"], i)
                if axes["datasets"]:
                    block["datasets"] = _expand_datasets(config, block["datasets"], axes["datasets"], i)
                if axes["training"]:
                    _check_selection_data(config, block, i, analysis)
                    block["training"] = _expand_hparams(config, block["training"], axes["training"], i)
        for name, spec in config["training"].items():
            cfg = TrainConfig.from_dict(spec)
            early_keys = tuple(k for k in TRANSITION_KEYS if k != "id_split")
            _check_transitions(cfg.early_stop, analysis, f"config.training.{name}.early_stop", early_keys)
            _check_transitions(cfg.checkpoints, analysis, f"config.training.{name}.checkpoints")
        grid = cells(config)
        _check_packs(config)
        _check_sweeps(config, grid)
        check_claims(config, grid, summary_columns(config))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return config


def _check_names(config: dict, block: dict, i: int) -> None:
    for section in SECTIONS.values():  # a grid block names its axes as the config sections
        for name in block[section]:
            if name not in config[section]:
                raise ValueError(
                    f"config.grid[{i}].{section}: {name!r} is not defined in config.{section}; "
                    f"defined: {sorted(config[section])}"
                )


def _scalar(tp: Any) -> bool:
    """A number, string or bool, optionally with None (`float | None`): what a grid may sweep."""
    leaves = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return all(a in (int, float, str, bool, type(None)) for a in leaves)


def hparam_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Training settings a grid's `hparams` may sweep: TrainConfig's scalar fields, and those of its nested
    settings as dotted paths (`eval.every`, `accelerators.loss`, `accelerators.grokfast.alpha`, ...)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = dataclass_in(hints[f.name])
        if sub is not None:
            keys += hparam_keys(sub, f"{prefix}{f.name}.")
        elif _scalar(hints[f.name]):
            keys.append(prefix + f.name)
    return keys


def _check_hparam_keys(hparams: dict[str, list], where: str) -> None:
    known = hparam_keys()
    for key in hparams:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint}; expected one of {known}, or model.<key> "
                             "(a model key) or data.<key> (a dataset parameter)")  # fmt: skip
    _check_swept_text(hparams, f"{where}.")


def _check_swept_text(hparams: dict[str, list], where: str) -> None:
    """A swept text value is part of a name: `where` is the key's prefix (`config.grid[0].hparams.model.`)."""
    for key, values in hparams.items():
        for j, value in enumerate(values):
            if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
                raise ValueError(f"{where}{key}[{j}]={value!r}: a swept text value is part of a run's name: "
                                 "letters, digits, '_', '.' and '-' only")  # fmt: skip
            if isinstance(value, dict | list):
                raise ValueError(f"{where}{key}[{j}]={value!r}: a swept value is a number, text, a boolean "
                                 "or null; sweep nested keys by dotted path")  # fmt: skip


def _variants(base: str, spec: dict, axis: dict[str, list], current) -> list[tuple[str, dict]]:
    """(name, spec) of each combination of `axis` on top of the config entry `base`: the keys whose value
    differs from `current(key)` (the base's own or default value) set by dotted path, named by
    grid.setting_name; a combination equal to the base keeps its name and spec."""
    keys = list(axis)
    out = []
    for values in itertools.product(*(axis[k] for k in keys)):
        changed = {k: v for k, v in zip(keys, values) if v != current(k)}
        variant = spec
        for k, v in changed.items():
            variant = _set(variant, k, v)
        out.append((setting_name(base, changed), variant))
    return out


def _expand_models(config: dict, bases: list[str], axis: dict[str, list], i: int) -> list[str]:
    """Add each combination of the block's `model.*` keys on top of each of its models to config.models;
    return the names. A key the family does not take is rejected by name (its checker: family_keys)."""
    where = f"config.grid[{i}].hparams"
    names: dict[str, None] = {}
    for base in bases:
        spec = config["models"][base]
        full = expand_preset(spec, where=f"config.models.{base}")
        family = full["family"]
        allowed = family_keys(family)
        defaults = {k: p.default for k, p in inspect.signature(FAMILIES[family]).parameters.items()}
        for key in axis:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f" (did you mean 'model.{close[0]}'?)" if close else ""
                raise ValueError(f"{where}.model.{key}: family {family} (config.models.{base}) has no key "
                                 f"{key!r}{hint}; its keys: {', '.join(allowed)}")  # fmt: skip

        def current(key: str, full=full, defaults=defaults) -> Any:
            return full.get(key, defaults.get(key))

        for name, variant in _variants(base, spec, axis, current):
            check_model_spec(variant, where=f"{where}: model {name}")
            config["models"][name] = variant
            names[name] = None
    return list(names)


def _expand_datasets(config: dict, bases: list[str], axis: dict[str, list], i: int) -> list[str]:
    """Add each combination of the block's `data.*` keys on top of each of its datasets to
    config.datasets; return the names. Keys: the task's parameters and `format.<key>` (the in-context
    format, tasks/incontext.py); a key the task does not take is rejected by name."""
    where = f"config.grid[{i}].hparams"
    names: dict[str, None] = {}
    for base in bases:
        spec = config["datasets"][base]
        task = spec["task"]
        params = {k: v for k, v in spec.items() if k not in ("task", FORMAT_KEY)}
        parsed = CHECKS[task](params)
        fmt = parse_format(spec.get(FORMAT_KEY) or {})
        known = [f.name for f in dataclasses.fields(parsed)]
        known += [f"{FORMAT_KEY}.{f.name}" for f in dataclasses.fields(FormatParams)]
        for key in axis:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean 'data.{close[0]}'?)" if close else ""
                raise ValueError(f"{where}.data.{key}: task {task} (config.datasets.{base}) has no "
                                 f"parameter {key!r}{hint}; its parameters: {', '.join(known)}")  # fmt: skip

        def current(key: str, parsed=parsed, fmt=fmt) -> Any:
            head, _, rest = key.partition(".")
            return getattr(fmt, rest) if head == FORMAT_KEY else getattr(parsed, key)

        for name, variant in _variants(base, spec, axis, current):
            try:
                check_params(task, {k: v for k, v in variant.items() if k != "task"})
            except ValueError as e:  # the message starts with the parameter's name
                raise ValueError(f"{where}: dataset {name}: {e}") from None
            config["datasets"][name] = variant
            names[name] = None
    return list(names)


def _get(spec: dict, dotted: str) -> Any:
    """The value at a dotted path of a training spec, with TrainConfig's defaults where it sets none."""
    value: Any = TrainConfig.from_dict(spec)
    for part in dotted.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    return value


def _set(spec: dict, dotted: str, value: Any) -> dict:
    """A copy of a training spec with the dotted path set (missing or null parents become mappings)."""
    spec = copy.deepcopy(spec)
    *parents, last = dotted.split(".")
    node = spec
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return spec


def _expand_hparams(config: dict, bases: list[str], hparams: dict[str, list], i: int) -> list[str]:
    """Add each combination of `hparams` on top of each base setting to config.training; return the names."""
    where = f"config.grid[{i}].hparams"
    names: dict[str, None] = {}
    keys = list(hparams)
    for base in bases:
        base_spec = config["training"][base]
        for values in itertools.product(*(hparams[k] for k in keys)):
            changed = {k: v for k, v in zip(keys, values) if v != _get(base_spec, k)}
            name = setting_name(base, changed)
            spec = base_spec
            for k, v in changed.items():
                spec = _set(spec, k, v)
            TrainConfig.from_dict(spec, where=where)
            config["training"][name] = spec
            names[name] = None
    return list(names)


def summary_columns(config: dict) -> set[str]:
    """The summary's columns a sweep or claim may name: the fixed ones, each dataset parameter as
    `data.<key>`, each model key as written as `model.<key>` and each training setting as `train.<key>`
    (nested keys dotted), final accuracies and each test split's generalization step."""
    columns = set(SUMMARY_COLUMNS)
    for spec in config["datasets"].values():
        columns |= set(flatten({k: v for k, v in spec.items() if k != "task"}, "data"))
    for spec in config["models"].values():
        columns |= set(flatten(spec, "model"))
    for spec in config["training"].values():
        columns |= set(flatten(TrainConfig.from_dict(spec).to_dict(), "train"))
    columns |= {f"final_acc_{split}" for split in EVAL_SPLITS}
    columns |= {f"{SPLIT_STEP}{split}" for split in TEST_SPLITS}
    return columns


def _check_transitions(
    option: Transitions | None, analysis: AnalysisConfig, where: str, keys: tuple[str, ...] = TRANSITION_KEYS
) -> None:
    """A training option that acts on the transitions (early stop: grokbench.train.early_stop, which does
    not use id_split; transition checkpoints: grokbench.train.checkpoints) detects them with the analysis's
    own splits, thresholds and tolerance, so that its steps mean what the summary says."""
    if option is None:
        return
    for key in keys:
        mine, theirs = getattr(option, key), getattr(analysis, key)
        if mine != theirs:
            raise ValueError(
                f"{where}.{key}={mine!r}: must equal config.analysis.{key} ({theirs!r}); set it to {theirs!r}"
            )


def _check_packs(config: dict) -> None:
    """Runs trained in a pack (config.pack.size > 1, a block with more than one seed; grokbench.grid.packs)
    must use only what packed training reproduces (grokbench.train.packed): no accelerators, no dropout,
    no kernel backend. Rejected by name here, rather than trained otherwise."""
    size = config.get("pack", {}).get("size", 1)
    for pack in packs(config):
        if len(pack.seeds) < 2:
            continue  # trained as a single run
        fix = f"set config.pack.size: 1, or train {pack.pack_id}'s seeds {list(pack.seeds)} in other blocks"
        where = f"config.pack.size={size}: pack {pack.pack_id} (seeds {list(pack.seeds)})"
        cfg = TrainConfig.from_dict(config["training"][pack.training])
        if cfg.accelerators.active:
            raise ValueError(f"{where}: config.training.{pack.training}.accelerators (Grokfast, perp_grad, "
                             f"StableMax, wd_schedule) is not supported in a pack; {fix}")  # fmt: skip
        spec = config["models"][pack.model]
        if spec.get("dropout", 0) > 0:
            raise ValueError(f"{where}: config.models.{pack.model}.dropout={spec['dropout']} is not "
                             f"supported in a pack (random masks under vmap); {fix}")  # fmt: skip
        if spec.get("backend") == "kernels":
            raise ValueError(f"{where}: config.models.{pack.model}.backend='kernels' is not supported in "
                             f"a pack (kernel libraries under vmap are untested); {fix}")  # fmt: skip


def _check_sweeps(config: dict, grid: list[Cell]) -> None:
    """Every name a sweep figure filters on is defined, some run of the grid matches the filters, and
    its x and hue are columns of the summary."""
    columns = summary_columns(config)
    for name, spec in config["sweeps"].items():
        for key in ("x", "hue"):
            if key in spec and spec[key] not in columns:
                raise not_a_column(f"config.sweeps.{name}.{key}", spec[key], columns)
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
            raise ValueError(
                f"config.grid[{i}].hparams: selecting among settings uses the split {split!r} "
                f"(config.analysis.selection_split), but config.datasets.{name} has none; "
                f"set config.datasets.{name}.val_size > 0"
            )
