"""The k-hop composition task, after the two-hop composition task of Wang, Yue, Su, Sun 2024.

Reference: repository OSU-NLP-Group/GrokkedTransformer, `composition.ipynb` (ANCHORS.md section 2).

World. Every entity `<e_h>` has `n_relations_per_entity` distinct outgoing relations, drawn uniformly
from `n_relations`; each (entity, relation) points to a tail drawn uniformly from all entities (self
loops allowed, as in the reference). Atomic fact: `<e_h><r_j>` -> `<e_t>`. Inferred fact (a `hops`-hop
path, hops in 2..4): `<e_h><r_1>...<r_k>` -> `<e_t>`, where each `r_i` is an outgoing relation of the
entity reached after i-1 hops; every such path is a distinct question with a unique answer.

ID / OOD (as in the reference, at the level of atomic facts): round(ood_ratio * number of atomic
facts) atomic facts, drawn uniformly, are OOD; the rest are ID. All atomic facts (ID and OOD) are
trained on. A path is ID when all its hops are ID atomic facts and OOD when all its hops are OOD;
mixed paths are dropped. The ID paths are split round(train_ratio * |ID paths|) / rest into a
training pool and a held-out ID pool (the reference flips a 0.995 coin per path; here the count is
exact). Training inferred facts: round(phi * number of ID atomic facts) drawn from the training pool;
`test_inferred_id`: `test_size` held-out ID paths; `test_inferred_ood`: `test_size` OOD paths.

Pool sizes depend on the draw (which facts are OOD, where tails point), so `check_params` draws the
world (cheap: n_entities x n_relations_per_entity) and checks that phi and test_size fit the pools of
this seed; the errors give the pool sizes. Paths are counted per start entity by dynamic programming
and sampled by index (`unrank_paths`), so no path list is materialized (4-hop paths of the reference
world are 2000 x 20^4 = 3.2e8).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Dataset, Vocab
from .common import (
    InferredPerAtomic,
    RelationGraph,
    TaskParams,
    WorldPlan,
    entity_rows,
    entity_vocab,
    finish,
    group_of,
    nth_not_in,
    sample,
)

TASK = "composition"
GENERATOR_VERSION = "composition/1"
MIN_HOPS, MAX_HOPS = 2, 4
MAX_PATHS = 1 << 53  # n_entities * n_relations_per_entity ** hops; keeps every count exact in int64/float


# --- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompositionParams(RelationGraph, InferredPerAtomic, TaskParams):
    """Defaults: the reference world (2000 entities, 200 relations, out-degree 20, 5% OOD, 99.5%)."""

    n_entities: int = 2000
    n_relations: int = 200
    n_relations_per_entity: int = 20
    hops: int = 2
    ood_ratio: float = 0.05
    train_ratio: float = 0.995
    phi: float = 18.0  # the largest phi of the reference (training inferred per ID atomic fact)
    test_size: int = 1000

    @property
    def n_atomic(self) -> int:
        return self.n_entities * self.n_relations_per_entity

    @property
    def n_ood_atomic(self) -> int:
        return round(self.ood_ratio * self.n_atomic)

    @property
    def n_id_atomic(self) -> int:
        return self.n_atomic - self.n_ood_atomic

    @property
    def n_paths(self) -> int:
        return self.n_entities * self.n_relations_per_entity**self.hops

    def check(self) -> None:
        """Static checks (no draw); `plan` adds the checks that depend on the drawn world."""
        if self.n_entities < 2:
            raise ValueError(f"n_entities={self.n_entities}: must be at least 2")
        self.check_relations()
        if not MIN_HOPS <= self.hops <= MAX_HOPS:
            raise ValueError(f"hops={self.hops}: must be between {MIN_HOPS} and {MAX_HOPS}")
        if self.n_paths > MAX_PATHS:
            raise ValueError(
                f"hops={self.hops}: n_entities * n_relations_per_entity ** hops = {self.n_paths} paths "
                f"exceeds {MAX_PATHS}"
            )
        self.check_common(("ood_ratio", "train_ratio"))
        if self.n_ood_atomic < 1 or self.n_id_atomic < 1:
            raise ValueError(
                f"ood_ratio={self.ood_ratio}: gives {self.n_ood_atomic} OOD of {self.n_atomic} atomic "
                "facts; need at least 1 ID and 1 OOD"
            )
        self.check_phi()


# --- world and path counting ---------------------------------------------------------------------


@dataclass
class World:
    rel: np.ndarray  # (N, R) int: relation of each outgoing edge, sorted per entity
    tail: np.ndarray  # (N, R) int: tail entity of each outgoing edge
    ood: np.ndarray  # (N, R) bool: the atomic fact is OOD


def draw_world(p: CompositionParams, rng: np.random.Generator) -> World:
    n, r = p.n_entities, p.n_relations_per_entity
    rel = p.draw_relations(rng)
    tail = rng.integers(0, n, size=(n, r))
    ood = np.zeros(n * r, dtype=bool)
    ood[sample(rng, n * r, p.n_ood_atomic)] = True
    return World(rel, tail, ood.reshape(n, r))


def path_counts(tail: np.ndarray, mask: np.ndarray, hops: int) -> list[np.ndarray]:
    """counts[j][e]: number of j-hop paths from e that use only edges in `mask` (counts[0] = 1)."""
    counts = [np.ones(len(tail), dtype=np.int64)]
    for _ in range(hops):
        counts.append((mask * counts[-1][tail]).sum(axis=1))
    return counts


def unrank_paths(
    g: np.ndarray, tail: np.ndarray, mask: np.ndarray, counts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The g-th masked path (lexicographic in start entity, then edge slots): (head, slots, end).

    slots[:, i] is the edge slot (column of `tail`) taken at hop i.
    """
    g = np.asarray(g, dtype=np.int64)
    hops = len(counts) - 1
    ends = np.cumsum(counts[hops])
    e = np.searchsorted(ends, g, side="right")
    r = g - (ends[e] - counts[hops][e])
    head = e.copy()
    slots = np.empty((len(g), hops), dtype=np.int64)
    for i in range(hops):
        w = np.cumsum(mask[e] * counts[hops - 1 - i][tail[e]], axis=1)  # (n, R)
        c = (w <= r[:, None]).sum(axis=1)
        r = r - np.where(c > 0, w[np.arange(len(g)), np.maximum(c - 1, 0)], 0)
        slots[:, i] = c
        e = tail[e, c]
    return head, slots, e


@dataclass
class Plan(WorldPlan):
    """The drawn world and the pool sizes it gives."""

    world: World
    id_counts: list[np.ndarray]
    ood_counts: list[np.ndarray]
    n_id_paths: int
    n_train_pool: int
    n_heldout: int
    n_ood_paths: int


def plan(params: Mapping[str, Any]) -> Plan:
    """Parse and check `params`, draw the graph, count its all-ID and all-OOD paths and check the pools."""
    p = CompositionParams.from_dict(params)
    rng = np.random.default_rng(p.seed)
    w = draw_world(p, rng)
    id_counts = path_counts(w.tail, ~w.ood, p.hops)
    ood_counts = path_counts(w.tail, w.ood, p.hops)
    n_id = int(id_counts[-1].sum())
    n_train_pool = round(p.train_ratio * n_id)
    n_ood = int(ood_counts[-1].sum())
    pl = Plan(p, rng, w, id_counts, ood_counts, n_id, n_train_pool, n_id - n_train_pool, n_ood)
    where = f"(seed={p.seed}: {n_id} of {p.n_paths} {p.hops}-hop paths have all hops ID, {n_ood} all OOD)"
    if pl.n_heldout < 1 or n_train_pool < 1:
        raise ValueError(f"train_ratio={p.train_ratio}: leaves {pl.n_heldout} held-out ID paths {where}")
    p.check_train_pool(n_train_pool, "paths", where)
    if n_ood < 1:
        raise ValueError(f"ood_ratio={p.ood_ratio}: no path has all hops OOD {where}")
    p.check_pools({"held-out ID": pl.n_heldout, "OOD": n_ood}, "paths", where)
    return pl


def check_params(params: Mapping[str, Any]) -> CompositionParams:
    """Validate a params mapping (drawing the world for the pool sizes); return the parsed params."""
    return plan(params).params


# --- vocabulary and rows -------------------------------------------------------------------------


def build_vocab(p: CompositionParams) -> Vocab:
    return entity_vocab(p.n_entities, p.relation_tokens())


def _path_rows(p: CompositionParams, pl: Plan, vocab: Vocab, split: str, g: np.ndarray) -> dict[str, list]:
    """Rows of the paths `g` of the split's pool: the all-ID paths, or the all-OOD ones for an OOD split."""
    w, group = pl.world, group_of(split)
    mask, counts = (w.ood, pl.ood_counts) if group == "ood" else (~w.ood, pl.id_counts)
    head, slots, end = unrank_paths(g, w.tail, mask, counts)
    rels = np.empty_like(slots)
    e = head
    for i in range(p.hops):
        rels[:, i] = w.rel[e, slots[:, i]]
        e = w.tail[e, slots[:, i]]
    return entity_rows(vocab, split, "inferred", group, head, p.relation0 + rels, end)


def generate(params: Mapping[str, Any]) -> Dataset:
    """Generate the composition dataset for `params` (a mapping of `CompositionParams` fields)."""
    pl = plan(params)
    p, rng, w = pl.params, pl.rng, pl.world
    vocab = build_vocab(p)

    heldout = np.sort(sample(rng, pl.n_id_paths, pl.n_heldout))
    train = nth_not_in(sample(rng, pl.n_train_pool, p.n_train_inferred), heldout)
    test_id = heldout[sample(rng, pl.n_heldout, p.test_size)]
    test_ood, val_ood = p.test_and_val(rng, pl.n_ood_paths)
    questions = {
        "train": train,
        "test_inferred_id": test_id,
        "test_inferred_ood": test_ood,
        "val_inferred_ood": val_ood,
    }

    rels = p.relation0 + w.rel.ravel()
    atomic_group = np.where(w.ood.ravel(), "ood", "id")
    parts = [entity_rows(vocab, "train", "atomic", atomic_group, p.heads(), rels, w.tail.ravel())]
    parts += [_path_rows(p, pl, vocab, split, g) for split, g in questions.items()]
    pools = {"train": pl.n_train_pool, "test_inferred_id": pl.n_heldout, "test_inferred_ood": pl.n_ood_paths}
    return finish(TASK, GENERATOR_VERSION, p, vocab, parts, pools)
