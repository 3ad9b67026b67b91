"""Helpers every task generator shares: parameter dataclasses parsed by `grokbench.params` with errors by
name, the checks and draws of the held-out splits, the vocabulary's first blocks, rows of the facts table,
the finished `Dataset`, and index sampling without materializing pools."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np

from ..params import from_dict
from .base import Dataset, Vocab, dataset_hash, facts_frame

SPECIALS = ("<mask>", "<sep>", "<a>", "</a>", "<q>", "</q>")  # as in the reference vocabularies
ENTITY0 = 1 + len(SPECIALS)  # id of `<e_0>`: every vocabulary starts `<pad>`, the specials, the entities

P = TypeVar("P")
_TOP = "params"  # the `where` given to `from_dict` for top-level parameters, taken off its messages again


# --- parameters ----------------------------------------------------------------------------------


def parse(cls: type[P], d: Any, where: str = "") -> P:
    """Dataclass `cls` from the config mapping `d`, checked and converted by `grokbench.params.from_dict`
    (ints accepted as floats; bools, NaN and infinities rejected as numbers). Errors start with the
    parameter's name: `where.key`, or the bare key for top-level parameters (where = ""), which
    `study.validate` prefixes with the dataset's path."""
    if isinstance(d, Mapping):
        known = sorted(f.name for f in dataclasses.fields(cls))
        for key in d:
            if key not in known:
                name = f"{where}.{key}" if where else key
                raise ValueError(f"{name}: unknown key; expected one of {known}")
        d = dict(d)
    try:
        return from_dict(cls, d, where or _TOP)
    except ValueError as e:
        if where:
            raise
        raise ValueError(str(e).removeprefix(f"{_TOP}.")) from None


@dataclass(frozen=True)
class TaskParams:
    """Base of the frozen parameter dataclasses. Every task also has a `test_size` (questions per test
    split, declared by the task for its own default); `from_dict` parses and runs the static `check`."""

    if TYPE_CHECKING:
        test_size: int

    val_size: int = 0  # OOD questions of the validation split `val_inferred_ood`, disjoint from the test ones
    seed: int = 0  # of the one generator every draw of the dataset comes from

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        """Build from a config mapping and check; unknown keys, wrong types, bad values raise ValueError."""
        p = parse(cls, d)
        p.check()
        return p

    def check(self) -> None:
        """The checks that need no draw; ValueError, starting with the parameter's name, if one fails."""

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

    def check_pools(self, pools: dict[str, int], unit: str, where: str) -> None:
        """`test_size` questions must fit each held-out pool (name -> size, in `unit`s), and the
        validation split (`val_size` more, disjoint from the test ones) must fit beside them in the last
        pool, the OOD one."""
        for name, size in pools.items():
            if self.test_size > size:
                raise ValueError(
                    f"test_size={self.test_size}: larger than the {name} pool ({size} {unit}) {where}"
                )
        ood = list(pools.values())[-1]
        if self.val_size < 0:
            raise ValueError(f"val_size={self.val_size}: must be non-negative")
        total = self.test_size + self.val_size
        if total > ood:
            raise ValueError(
                f"val_size={self.val_size}: test_size + val_size = {total} is larger than the OOD pool "
                f"({ood} {unit}) {where}"
            )

    def test_and_val(self, rng: np.random.Generator, ood_pool_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the OOD pool: `test_size` test questions, then `val_size` validation ones (one draw,
        so the two are disjoint; the validation ones are empty for val_size = 0)."""
        g = sample(rng, ood_pool_size, self.test_size + self.val_size)
        return g[: self.test_size], g[self.test_size :]


@dataclass
class WorldPlan:
    """Base of the tasks' plans, for the tasks whose pools depend on the drawn world: the parsed and
    checked parameters, the generator after the world's draws (the sampling goes on from here), and the
    task's world and pool sizes in its own fields."""

    params: Any
    rng: np.random.Generator


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

    def check_entity_split(self, min_id: int, min_ood: int, each: str = "") -> None:
        """id_ratio must leave at least `min_id` ID and `min_ood` OOD entities (`each`: per what)."""
        if self.n_id < min_id or self.n_ood < min_ood:
            need = f"{min_id} of each" if min_id == min_ood else f"{min_id} ID and {min_ood} OOD"
            raise ValueError(
                f"id_ratio={self.id_ratio}: gives {self.n_id} ID and {self.n_ood} OOD entities{each} out of "
                f"n_entities={self.n_entities}; need at least {need}"
            )


class RelationGraph:
    """For parameters with `n_relations` and `n_relations_per_entity`: every entity has that many distinct
    outgoing relations, drawn uniformly; the atomic facts `<e_h><r_j>` -> `<e_t>` are ordered by head entity,
    then relation."""

    n_entities: int
    n_relations: int
    n_relations_per_entity: int

    def check_relations(self) -> None:
        if self.n_relations < 1:
            raise ValueError(f"n_relations={self.n_relations}: must be at least 1")
        if not 1 <= self.n_relations_per_entity <= self.n_relations:
            raise ValueError(
                f"n_relations_per_entity={self.n_relations_per_entity}: must be between 1 and "
                f"n_relations={self.n_relations}"
            )

    def draw_relations(self, rng: np.random.Generator) -> np.ndarray:
        """(N, n_relations_per_entity): each entity's relations, distinct and sorted."""
        k = self.n_relations_per_entity
        return np.sort(np.argsort(rng.random((self.n_entities, self.n_relations)), axis=1)[:, :k], axis=1)

    def heads(self) -> np.ndarray:
        """The head entity of each atomic fact."""
        return np.repeat(np.arange(self.n_entities), self.n_relations_per_entity)

    @property
    def relation0(self) -> int:
        """Token id of `<r_0>`: the relation tokens `<r_0>`..`<r_{R-1}>` follow the entities."""
        return ENTITY0 + self.n_entities

    def relation_tokens(self, suffix: str = "") -> list[str]:
        return [f"<r_{j}{suffix}>" for j in range(self.n_relations)]


class InferredPerAtomic:
    """For parameters with `phi`: round(phi * n_id_atomic) training inferred facts, as in Wang et al."""

    phi: float
    n_id_atomic: int

    @property
    def n_train_inferred(self) -> int:
        return round(self.phi * self.n_id_atomic)

    def check_phi(self) -> None:
        if self.phi <= 0:  # NaN and infinities are rejected by `parse`, as every non-finite number
            raise ValueError(f"phi={self.phi}: must be positive")
        if self.n_train_inferred < 1:
            raise ValueError(
                f"phi={self.phi}: gives {self.n_train_inferred} training inferred facts "
                f"({self.n_id_atomic} ID atomic facts); need at least 1"
            )

    def check_train_pool(self, size: int, unit: str, where: str) -> None:
        if self.n_train_inferred > size:
            raise ValueError(
                f"phi={self.phi}: asks for {self.n_train_inferred} training inferred facts but the training "
                f"pool has {size} {unit} {where}"
            )


# --- vocabulary and rows -------------------------------------------------------------------------


def entity_vocab(n_entities: int, more: Iterable[str]) -> Vocab:
    """`<pad>`, the specials, `<e_0>`..`<e_{N-1}>` (ids from ENTITY0), then the task's own tokens `more`."""
    return Vocab(["<pad>", *SPECIALS, *(f"<e_{i}>" for i in range(n_entities)), *more])


def group_of(split: str) -> str:
    """The group of a split's questions: "ood" for the OOD splits (named `*_ood`), else "id"."""
    return "ood" if split.endswith("_ood") else "id"


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


def entity_rows(
    vocab: Vocab, split: str, kind: str, group: np.ndarray | str, entity, tokens, answer
) -> dict[str, list]:
    """Rows `<e_entity> tokens...` -> `<e_answer>`: entity indices `entity`, `answer` (n,), token ids
    `tokens` (n,) or (n, k): the relation facts (atomic, paths, inverse) of composition and inverse."""
    inputs = np.column_stack([ENTITY0 + np.asarray(entity), tokens])
    return fact_rows(vocab, split, kind, group, inputs, (ENTITY0 + np.asarray(answer))[:, None])


def finish(
    task: str, version: str, params: TaskParams, vocab: Vocab, parts: list[dict], pools: dict | None = None
) -> Dataset:
    """The `Dataset` of the concatenated row blocks (empty ones add nothing), with meta: task, params,
    version, hash and, if given, the pool size of each split (the validation split's is the OOD test pool)."""
    facts = facts_frame({c: [x for part in parts for x in part[c]] for c in parts[0]})
    meta: dict[str, Any] = {"task": task, "params": dataclasses.asdict(params), "generator_version": version}
    if pools is not None:
        val = {"val_inferred_ood": pools["test_inferred_ood"]} if params.val_size else {}
        meta["pools"] = {**pools, **val}
    meta["content_hash"] = dataset_hash(facts)
    return Dataset(facts, vocab, meta)


# --- sampling by index ---------------------------------------------------------------------------


def sample(rng: np.random.Generator, pool_size: int, n: int) -> np.ndarray:
    """n distinct indices of range(pool_size), in random order."""
    return rng.choice(pool_size, size=n, replace=False).astype(np.int64)


def nth_not_in(r: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """The r-th (0-based) non-negative integer not in `excluded` (sorted, no duplicates)."""
    shifted = excluded - np.arange(len(excluded), dtype=np.int64)
    return np.asarray(r, dtype=np.int64) + np.searchsorted(shifted, r, side="right")
