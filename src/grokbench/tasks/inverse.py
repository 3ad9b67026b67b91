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
from typing import Any

import numpy as np

from .base import Dataset, Vocab
from .common import (
    EntitySplit,
    RelationGraph,
    TaskParams,
    WorldPlan,
    entity_rows,
    entity_vocab,
    finish,
    group_of,
    sample,
)

TASK = "inverse"
GENERATOR_VERSION = "inverse/1"


@dataclass(frozen=True)
class InverseParams(RelationGraph, EntitySplit, TaskParams):
    n_entities: int = 1000
    n_relations: int = 20
    n_relations_per_entity: int = 10
    id_ratio: float = 0.8
    train_ratio: float = 0.9
    test_size: int = 200

    def check(self) -> None:
        """Static checks (no draw); `plan` adds the checks that depend on the drawn world."""
        if self.n_entities < 4:
            raise ValueError(f"n_entities={self.n_entities}: must be at least 4")
        self.check_relations()
        self.check_common(("id_ratio", "train_ratio"))
        self.check_entity_split(2, 2)


@dataclass
class Plan(WorldPlan):
    head: np.ndarray  # (F,) atomic facts, by head entity then relation
    rel: np.ndarray  # (F,)
    tail: np.ndarray  # (F,)
    is_ood: np.ndarray  # (N,) bool, by entity
    id_facts: np.ndarray  # indices of ID-ID atomic facts
    ood_facts: np.ndarray  # indices of OOD-OOD atomic facts
    n_train: int
    n_heldout: int


def plan(params: Mapping[str, Any]) -> Plan:
    """Parse and check `params`, draw the relations and the ID entities, check the pools of inverse facts."""
    p = InverseParams.from_dict(params)
    rng = np.random.default_rng(p.seed)
    n = p.n_entities
    rel = p.draw_relations(rng).ravel()
    head = p.heads()
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
    pl = Plan(p, rng, head, rel, tail, is_ood, id_facts, ood_facts, n_train, len(id_facts) - n_train)
    where = f"(seed={p.seed}: {len(id_facts)} ID-ID and {len(ood_facts)} OOD-OOD of {len(rel)} atomic facts)"
    if n_train < 1 or pl.n_heldout < 1:
        raise ValueError(
            f"train_ratio={p.train_ratio}: gives {n_train} training and {pl.n_heldout} held-out "
            f"inverse facts {where}; need at least 1 of each"
        )
    p.check_pools({"held-out ID": pl.n_heldout, "OOD": len(ood_facts)}, "facts", where)
    return pl


def check_params(params: Mapping[str, Any]) -> InverseParams:
    """Validate a params mapping (drawing the world for the pool sizes); return the parsed params."""
    return plan(params).params


def build_vocab(p: InverseParams) -> Vocab:
    return entity_vocab(p.n_entities, [*p.relation_tokens(), *p.relation_tokens("_inv")])


def generate(params: Mapping[str, Any]) -> Dataset:
    """Generate the inverse-relations dataset for `params` (a mapping of `InverseParams` fields)."""
    pl = plan(params)
    p, rng = pl.params, pl.rng
    vocab = build_vocab(p)
    r0 = p.relation0
    inv0 = r0 + p.n_relations  # `<r_0_inv>`

    shuffled = pl.id_facts[sample(rng, len(pl.id_facts), len(pl.id_facts))]
    train, heldout = shuffled[: pl.n_train], shuffled[pl.n_train :]
    test_id = heldout[sample(rng, len(heldout), p.test_size)]
    test_ood, val_ood = p.test_and_val(rng, len(pl.ood_facts))
    questions = {
        "train": train,
        "test_inferred_id": test_id,
        "test_inferred_ood": pl.ood_facts[test_ood],
        "val_inferred_ood": pl.ood_facts[val_ood],
    }

    atomic_group = np.where(pl.is_ood[pl.head] | pl.is_ood[pl.tail], "ood", "id")
    parts = [entity_rows(vocab, "train", "atomic", atomic_group, pl.head, r0 + pl.rel, pl.tail)]
    parts += [
        entity_rows(vocab, split, "inferred", group_of(split), pl.tail[f], inv0 + pl.rel[f], pl.head[f])
        for split, f in questions.items()
    ]
    pools = {"train": pl.n_train, "test_inferred_id": pl.n_heldout, "test_inferred_ood": len(pl.ood_facts)}
    return finish(TASK, GENERATOR_VERSION, p, vocab, parts, pools)
