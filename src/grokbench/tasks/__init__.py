"""Task registry: dataset generators by task name.

`generate(task, params)` builds a `Dataset`; `check_params(task, params)` validates parameters
without generating, so a config can be rejected before any job starts. Each task module provides
`generate`, `check_params` and `GENERATOR_VERSION`; the shared format lives in `base`, what the
generators share (parameter parsing through `grokbench.params`, held-out splits, rows) in `common`.

Tasks: `comparison` (Wang et al. 2024), `composition` (k-hop, Wang et al. 2024), `ordering`
(transitive order from near comparisons), `inverse` (inverse relations). Every task's params may
also carry `format: {k_demos: K, train_informative: P}`, the in-context format of `incontext`
(implemented for comparison, composition and inverse): the task generates without it, then
`incontext.apply` rewrites the dataset; k_demos = 0 (the default) leaves it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import comparison, composition, incontext, inverse, ordering
from .base import Dataset

_MODULES = {m.TASK: m for m in (comparison, composition, ordering, inverse)}
TASKS: dict[str, Callable[[Mapping[str, Any]], Dataset]] = {t: m.generate for t, m in _MODULES.items()}
CHECKS: dict[str, Callable[[Mapping[str, Any]], object]] = {t: m.check_params for t, m in _MODULES.items()}
GENERATOR_VERSIONS: dict[str, str] = {t: m.GENERATOR_VERSION for t, m in _MODULES.items()}


def _lookup(task: str, table: Mapping[str, Any]) -> Any:
    try:
        return table[task]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}") from None


def generate(task: str, params: Mapping[str, Any]) -> Dataset:
    """Generate the dataset of `task` for `params` (optionally with `format`); ValueError if bad."""
    generator = _lookup(task, TASKS)
    base, fmt = incontext.split_params(params)
    if fmt is not None:
        check_params(task, params)  # the format's errors before any generation
    ds = generator(base)
    return ds if fmt is None else incontext.apply(task, ds, fmt)


def check_params(task: str, params: Mapping[str, Any]) -> None:
    """Validate `params` for `task` without generating; ValueError starts with the param's name."""
    check = _lookup(task, CHECKS)
    base, fmt = incontext.split_params(params)
    parsed = check(base)
    if fmt is not None:
        incontext.check_format(task, fmt, parsed)


__all__ = ["TASKS", "CHECKS", "GENERATOR_VERSIONS", "Dataset", "generate", "check_params"]
