"""Task registry: dataset generators by task name.

`generate(task, params)` builds a `Dataset`; `check_params(task, params)` validates parameters
without generating, so a config can be rejected before any job starts. Each task module provides
`generate`, `check_params` and `GENERATOR_VERSION`; the shared format lives in `base`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import comparison
from .base import Dataset

TASKS: dict[str, Callable[[Mapping[str, Any]], Dataset]] = {"comparison": comparison.generate}
CHECKS: dict[str, Callable[[Mapping[str, Any]], object]] = {"comparison": comparison.check_params}
GENERATOR_VERSIONS: dict[str, str] = {"comparison": comparison.GENERATOR_VERSION}


def _lookup(task: str, table: Mapping[str, Any]) -> Any:
    try:
        return table[task]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}") from None


def generate(task: str, params: Mapping[str, Any]) -> Dataset:
    """Generate the dataset of `task` for `params`; ValueError for an unknown task or bad params."""
    return _lookup(task, TASKS)(params)


def check_params(task: str, params: Mapping[str, Any]) -> None:
    """Validate `params` for `task` without generating; ValueError starts with the param's name."""
    _lookup(task, CHECKS)(params)


__all__ = ["TASKS", "CHECKS", "GENERATOR_VERSIONS", "Dataset", "generate", "check_params"]
