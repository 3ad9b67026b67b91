"""Helpers every task generator shares: typed parameter dataclasses rejected by name, rows of the facts
table, the finished `Dataset`, and index sampling without materializing pools."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Dataset, Vocab, dataset_hash, facts_frame

SPECIALS = ("<mask>", "<sep>", "<a>", "</a>", "<q>", "</q>")  # as in the reference vocabularies


def as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{key}={value!r}: expected an int, got {type(value).__name__}")
    return int(value)


def as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key}={value!r}: expected a number, got {type(value).__name__}")
    return float(value)


@dataclass(frozen=True)
class TaskParams:
    """Base of the frozen parameter dataclasses: type checks by name, int/float normalization."""

    TASK: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            conv = as_int if f.type in (int, "int") else as_float
            object.__setattr__(self, f.name, conv(f.name, getattr(self, f.name)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Build from a config mapping; unknown keys and wrong types raise ValueError by name."""
        if not isinstance(d, Mapping):
            raise ValueError(f"params: expected a mapping, got {type(d).__name__}")
        known = sorted(f.name for f in dataclasses.fields(cls))
        for key in d:
            if key not in known:
                raise ValueError(f"{key}: unknown parameter for task {cls.TASK!r}; known: {known}")
        return cls(**d)

    def check_common(self, ratio_names: Sequence[str]) -> None:
        """Checks shared by all tasks: ratios strictly inside (0, 1), positive test_size, seed >= 0."""
        for name in ratio_names:
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name}={value}: must be strictly between 0 and 1")
        if self.test_size < 1:
            raise ValueError(f"test_size={self.test_size}: must be at least 1")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed}: must be non-negative")


def check_test_pools(test_size: int, val_size: int, pools: dict[str, int], unit: str, where: str) -> None:
    """`test_size` questions must fit each held-out pool (name -> size, in `unit`s), and the OOD validation
    split (`val_size` more, disjoint from the test ones) must fit beside them in the last, the OOD pool."""
    for name, size in pools.items():
        if test_size > size:
            raise ValueError(f"test_size={test_size}: larger than the {name} pool ({size} {unit}) {where}")
    ood = list(pools.values())[-1]
    if val_size < 0:
        raise ValueError(f"val_size={val_size}: must be non-negative")
    if test_size + val_size > ood:
        raise ValueError(
            f"val_size={val_size}: test_size + val_size = {test_size + val_size} is larger than the OOD "
            f"pool ({ood} {unit}) {where}"
        )


def fact_rows(
    vocab: Vocab, split: str, kind: str, group: np.ndarray | str, inputs: np.ndarray, answers: np.ndarray
) -> dict[str, list]:
    """Columns of the facts table for token-id matrices `inputs` (n, T_in) and `answers` (n, T_ans)."""
    toks = np.array(vocab.tokens, dtype=object)
    inputs = np.asarray(inputs, dtype=np.int64)
    answers = np.asarray(answers, dtype=np.int64)
    n = len(inputs)

    def join(ids: np.ndarray) -> list[str]:
        if n == 0:
            return []
        out = toks[ids[:, 0]]
        for c in range(1, ids.shape[1]):
            out = out + toks[ids[:, c]]
        return out.tolist()

    groups = [group] * n if isinstance(group, str) else np.asarray(group, dtype=object).tolist()
    return {
        "split": [split] * n,
        "kind": [kind] * n,
        "group": groups,
        "input_ids": inputs.tolist(),
        "answer_ids": answers.tolist(),
        "text": join(inputs),
        "answer": join(answers),
    }


def finish(task: str, version: str, params: TaskParams, vocab: Vocab, parts: list[dict], **extra) -> Dataset:
    """The `Dataset` of the concatenated row blocks, with meta (task, params, version, hash, extras)."""
    facts = facts_frame({c: [x for part in parts for x in part[c]] for c in parts[0]})
    meta = {"task": task, "params": dataclasses.asdict(params), "generator_version": version, **extra}
    meta["content_hash"] = dataset_hash(facts)
    return Dataset(facts, vocab, meta)


def sample(rng: np.random.Generator, pool_size: int, n: int) -> np.ndarray:
    """n distinct indices of range(pool_size), in random order."""
    return rng.choice(pool_size, size=n, replace=False).astype(np.int64)


def nth_not_in(r: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """The r-th (0-based) non-negative integer not in `excluded` (sorted, no duplicates)."""
    shifted = excluded - np.arange(len(excluded), dtype=np.int64)
    return np.asarray(r, dtype=np.int64) + np.searchsorted(shifted, r, side="right")


class EntitySplit:
    """For parameters with `n_entities` and `id_ratio`: round(id_ratio * N) ID entities, the rest OOD."""

    n_entities: int
    id_ratio: float

    @property
    def n_id(self) -> int:
        return round(self.id_ratio * self.n_entities)

    @property
    def n_ood(self) -> int:
        return self.n_entities - self.n_id
