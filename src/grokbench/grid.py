"""The grid of a study: its cells, their run ids and the names of hyperparameter settings, spelled once.

Everything else (the Snakemake rules, the training record, the summary, selection and claims) reads these
names from here:
- a `Cell` is one run: a dataset x a model x a training setting x a seed, all by config name; its
  `run_id` is `<dataset>/<model>/<training>/seed<k>`, also its folder under `<results>/runs/`;
- a hyperparameter setting of a grid block is named `<base>+<key><value>...` (`default+lr0.003`):
  `setting_name` writes that name, `split_setting` reads it back.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

SETTING_SEP = "+"  # joins a hyperparameter combination to the training setting it derives from

SECTIONS = {"dataset": "datasets", "model": "models", "training": "training"}  # Cell field -> section


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
        return {"dataset": self.dataset, "model": self.model, "training": self.training, "seed": self.seed}


def _value_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def setting_name(base: str, overrides: dict[str, Any]) -> str:
    """`default` + {lr: 0.003, accelerators.loss: stablemax} -> `default+lr0.003+accelerators.lossstablemax`
    (numbers as %g, booleans and null in lower case, text as it is)."""
    return "".join([base, *(f"{SETTING_SEP}{k}{_value_text(v)}" for k, v in overrides.items())])


def split_setting(training: str) -> tuple[str, list[str]]:
    """`default+lr0.003+weight_decay0.3` -> (`default`, [`lr0.003`, `weight_decay0.3`])."""
    base, *overrides = training.split(SETTING_SEP)
    return base, overrides


def training_base(training: str) -> str:
    """The training setting a hyperparameter combination derives from (`default+lr0.003` -> `default`)."""
    return split_setting(training)[0]


def cells(config: dict[str, Any]) -> list[Cell]:
    """Every cell of a validated config's grid, in config order, without duplicates."""
    out: dict[Cell, None] = {}
    for block in config["grid"]:
        for d, m, t, s in itertools.product(
            block["datasets"], block["models"], block["training"], block["seeds"]
        ):
            out[Cell(d, m, t, s)] = None
    return list(out)


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
