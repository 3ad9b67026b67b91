"""The grid of a study: its cells, their run ids and the names of hyperparameter settings, spelled once.

Everything else (the Snakemake rules, the training record, the summary, selection and claims) reads these
names from here:
- a `Cell` is one run: a dataset x a model x a training setting x a seed, all by config name; its
  `run_id` is `<dataset>/<model>/<training>/seed<k>`, also its folder under `<results>/runs/`;
- a hyperparameter setting of a grid block is named `<base>+<key><value>...` (`default+lr0.003`):
  `setting_name` writes that name, `split_setting` reads it back;
- a grid block's `hparams` may also sweep model and dataset keys, prefixed `model.` and `data.`
  (`split_hparams`): each combination is a model (a dataset) of its own, named the same way after its
  base, `gpt+shareall+loops2`, `cmp+format.k_demos2` (`setting_name`, `base_name`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

SETTING_SEP = "+"  # joins a hyperparameter combination to the setting (model, dataset) it derives from
# prefix of a grid's hparams key -> the config section whose entries it varies; other keys: training
VARIANT_PREFIXES = {"model.": "models", "data.": "datasets"}

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


def base_name(name: str) -> str:
    """The config entry a swept variant derives from (`gpt+shareall` -> `gpt`, `cmp` -> `cmp`)."""
    return split_setting(name)[0]


def split_hparams(hparams: dict[str, list]) -> dict[str, dict[str, list]]:
    """A grid block's `hparams` by the section each key varies: {"training": {lr: [...], ...}, "models":
    {share: [...], ...}, "datasets": {format.k_demos: [...], ...}}, prefixes (VARIANT_PREFIXES) removed,
    key order kept (it is the order of the name's parts)."""
    out: dict[str, dict[str, list]] = {
        "training": {},
        **{section: {} for section in VARIANT_PREFIXES.values()},
    }
    for key, values in hparams.items():
        prefix = next((p for p in VARIANT_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            out["training"][key] = values
        else:
            out[VARIANT_PREFIXES[prefix]][key[len(prefix) :]] = values
    return out


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


# --- packs: runs that share one training job (config `pack.size`) ------------------------------------------


@dataclass(frozen=True)
class Pack:
    """Runs trained together in one job (grokbench.train.pack): the seeds of one dataset x model x training
    setting that fall in one block of `size` consecutive seeds, [index * size, (index + 1) * size)."""

    dataset: str
    model: str
    training: str
    size: int
    index: int
    seeds: tuple[int, ...]  # the grid's seeds in the block, ascending

    @property
    def pack_id(self) -> str:
        """`<dataset>/<model>/<training>/pack<first>-<last>`: the seed range of the block, not its members."""
        first = self.index * self.size
        return f"{self.dataset}/{self.model}/{self.training}/pack{first}-{first + self.size - 1}"

    @property
    def cells(self) -> list[Cell]:
        return [Cell(self.dataset, self.model, self.training, s) for s in self.seeds]


def packs(config: dict[str, Any]) -> list[Pack]:
    """The packs of a validated config's grid (`config["pack"]["size"]`, default 1), in grid order.

    A run's pack depends on its own identity only: dataset, model, training setting and seed // size. Its
    members are the grid's seeds in that block. So adding seeds in new blocks (or a grid block of other
    datasets, models or settings) adds packs and leaves every existing pack's members as they were;
    adding a seed to a block that already has runs changes that pack (its runs then train again, together).
    A pack of one run is trained as a single run (rule `train`)."""
    size = config.get("pack", {}).get("size", 1)
    groups: dict[tuple[str, str, str, int], list[int]] = {}
    for c in cells(config):
        groups.setdefault((c.dataset, c.model, c.training, c.seed // size), []).append(c.seed)
    return [Pack(d, m, t, size, k, tuple(sorted(seeds))) for (d, m, t, k), seeds in groups.items()]
