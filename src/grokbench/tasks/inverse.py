"""Inverse relations: learn r^-1 from r, and apply it to entities whose inverse facts were never seen.

World. Every entity has `n_relations_per_entity` distinct outgoing relations out of `n_relations`.
Each relation r is injective: the heads that have r get distinct tails, the first entries of a
uniformly random permutation of all entities (self loops allowed). So every relation r has a
well-defined inverse r^-1 on its tails. Atomic fact: `<e_a><r_j>` -> `<e_b>`. Inferred (inverse)
fact: `<e_b><r_j_inv>` -> `<e_a>`, one per atomic fact; `<r_j_inv>` is its own token, so the link
between r_j and r_j^-1 has to be learned from training inverse facts.

ID / OOD (by entity, like the comparison task). round(id_ratio * n_entities) entities, drawn
uniformly, are ID; the rest are OOD. All atomic facts are trained on; an atomic fact's group is "id"
when both its entities are ID, else "ood".
- Inverse facts of ID-ID atomic facts: round(train_ratio * count) of them, drawn uniformly, are the
  training inferred facts (all of them: there is no phi, the pool is at most one inverse per atomic
  fact); the rest form the held-out pool, from which `test_inferred_id` draws `test_size`.
- `test_inferred_ood`: `test_size` inverse facts of OOD-OOD atomic facts.
- Inverse facts of mixed (ID-OOD) atomic facts are in no split.
Hence an OOD entity never appears in any training inverse fact (neither as question nor answer): its
inverse facts must come from its forward facts alone. A held-out ID inverse fact involves entities
that do appear in other training inverse facts.

The pool sizes depend on the draw, so `check_params` draws the world (cheap) and checks train_ratio
and test_size against the pools of this seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Dataset, Vocab
from .common import SPECIALS, EntitySplit, TaskParams, check_test_pools, fact_rows, finish, sample

TASK = "inverse"
GENERATOR_VERSION = "inverse/1"


@dataclass(frozen=True)
class InverseParams(EntitySplit, TaskParams):
    TASK: ClassVar[str] = TASK

    n_entities: int = 1000
    n_relations: int = 20
    n_relations_per_entity: int = 10
    id_ratio: float = 0.8
    train_ratio: float = 0.9
    test_size: int = 200
    val_size: int = 0  # OOD facts of the validation split `val_inferred_ood` (disjoint from the test split)
    seed: int = 0

    def check(self) -> None:
        """Static checks (no draw); `plan` adds the checks that depend on the drawn world."""
        if self.n_entities < 4:
            raise ValueError(f"n_entities={self.n_entities}: must be at least 4")
        if self.n_relations < 1:
            raise ValueError(f"n_relations={self.n_relations}: must be at least 1")
        if not 1 <= self.n_relations_per_entity <= self.n_relations:
            raise ValueError(
                f"n_relations_per_entity={self.n_relations_per_entity}: must be between 1 and "
                f"n_relations={self.n_relations}"
            )
        self.check_common(("id_ratio", "train_ratio"))
        if self.n_id < 2 or self.n_ood < 2:
            raise ValueError(
                f"id_ratio={self.id_ratio}: gives {self.n_id} ID and {self.n_ood} OOD entities out of "
                f"n_entities={self.n_entities}; need at least 2 of each"
            )


@dataclass
class Plan:
    head: np.ndarray  # (F,) atomic facts, by head entity then relation
    rel: np.ndarray  # (F,)
    tail: np.ndarray  # (F,)
    is_ood: np.ndarray  # (N,) bool, by entity
    id_facts: np.ndarray  # indices of ID-ID atomic facts
    ood_facts: np.ndarray  # indices of OOD-OOD atomic facts
    n_train: int
    n_heldout: int
    rng: np.random.Generator  # the generator after the world's draws: the sampling goes on from here


def plan(p: InverseParams) -> Plan:
    """Check `p`, draw the world from a fresh generator (left in `Plan.rng`), check the pools."""
    p.check()
    rng = np.random.default_rng(p.seed)
    n, k = p.n_entities, p.n_relations_per_entity
    rel = np.sort(np.argsort(rng.random((n, p.n_relations)), axis=1)[:, :k], axis=1).ravel()
    head = np.repeat(np.arange(n), k)
    by_rel = np.lexsort((head, rel))  # facts grouped by relation, heads ascending
    starts = np.searchsorted(rel[by_rel], np.arange(p.n_relations))
    rank = np.empty(len(rel), dtype=np.int64)
    rank[by_rel] = np.arange(len(rel)) - starts[rel[by_rel]]  # position of the head within its relation
    perms = np.argsort(rng.random((p.n_relations, n)), axis=1)
    tail = perms[rel, rank]
    is_ood = np.zeros(n, dtype=bool)
    is_ood[sample(rng, n, p.n_ood)] = True
    id_facts = np.flatnonzero(~is_ood[head] & ~is_ood[tail])
    ood_facts = np.flatnonzero(is_ood[head] & is_ood[tail])
    n_train = round(p.train_ratio * len(id_facts))
    pl = Plan(head, rel, tail, is_ood, id_facts, ood_facts, n_train, len(id_facts) - n_train, rng)
    where = f"(seed={p.seed}: {len(id_facts)} ID-ID and {len(ood_facts)} OOD-OOD of {len(rel)} atomic facts)"
    if n_train < 1 or pl.n_heldout < 1:
        raise ValueError(
            f"train_ratio={p.train_ratio}: gives {n_train} training and {pl.n_heldout} held-out "
            f"inverse facts {where}; need at least 1 of each"
        )
    pools = {"held-out ID": pl.n_heldout, "OOD": len(ood_facts)}
    check_test_pools(p.test_size, p.val_size, pools, "facts", where)
    return pl


def check_params(params: Mapping[str, Any]) -> InverseParams:
    """Validate a params mapping (drawing the world for the pool sizes); return the parsed params."""
    p = InverseParams.from_dict(params)
    plan(p)
    return p


def build_vocab(p: InverseParams) -> Vocab:
    toks = ["<pad>", *SPECIALS, *(f"<e_{i}>" for i in range(p.n_entities))]
    toks += [f"<r_{j}>" for j in range(p.n_relations)]
    toks += [f"<r_{j}_inv>" for j in range(p.n_relations)]
    return Vocab(toks)


def generate(params: Mapping[str, Any]) -> Dataset:
    """Generate the inverse-relations dataset for `params` (a mapping of `InverseParams` fields)."""
    p = InverseParams.from_dict(params)
    pl = plan(p)
    rng = pl.rng
    vocab = build_vocab(p)
    e0 = 1 + len(SPECIALS)
    r0 = e0 + p.n_entities
    inv0 = r0 + p.n_relations

    shuffled = pl.id_facts[sample(rng, len(pl.id_facts), len(pl.id_facts))]
    train, heldout = shuffled[: pl.n_train], shuffled[pl.n_train :]
    test_id = heldout[sample(rng, len(heldout), p.test_size)]
    ood = pl.ood_facts[sample(rng, len(pl.ood_facts), p.test_size + p.val_size)]  # test first, then val
    test_ood, val_ood = ood[: p.test_size], ood[p.test_size :]

    def inverse_rows(split: str, group: str, f: np.ndarray) -> dict[str, list]:
        inputs = np.stack([e0 + pl.tail[f], inv0 + pl.rel[f]], axis=1)
        return fact_rows(vocab, split, "inferred", group, inputs, (e0 + pl.head[f])[:, None])

    atomic_group = np.where(pl.is_ood[pl.head] | pl.is_ood[pl.tail], "ood", "id")
    atomic_inputs = np.stack([e0 + pl.head, r0 + pl.rel], axis=1)
    parts = [
        fact_rows(vocab, "train", "atomic", atomic_group, atomic_inputs, (e0 + pl.tail)[:, None]),
        inverse_rows("train", "id", train),
        inverse_rows("test_inferred_id", "id", test_id),
        inverse_rows("test_inferred_ood", "ood", test_ood),
    ]
    if p.val_size:
        parts.append(inverse_rows("val_inferred_ood", "ood", val_ood))
    pools = {"train": pl.n_train, "test_inferred_id": pl.n_heldout, "test_inferred_ood": len(pl.ood_facts)}
    if p.val_size:
        pools["val_inferred_ood"] = len(pl.ood_facts)
    return finish(TASK, GENERATOR_VERSION, p, vocab, parts, pools=pools)
