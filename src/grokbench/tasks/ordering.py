"""Transitive ordering: a hidden total order over entities, learned from near comparisons.

World. A uniformly random permutation puts the `n_entities` entities in a hidden total order;
rank(e) is e's position and the distance of two entities is |rank(a) - rank(b)|. Every fact is a
comparison `<q><e_a><mask><e_b>` -> `<lt>` if rank(a) < rank(b), else `<gt>` (no ties; both orders of
a pair are distinct facts). round(id_ratio * n_entities) entities, drawn uniformly, are ID; the rest
are OOD. Distances are always measured in the full order (OOD entities included).

- Atomic facts (split train, kind atomic): every adjacent pair (distance 1), both orders, 2(N-1)
  facts; group "id" when both entities are ID, "ood" otherwise. These are the only facts that
  mention an OOD entity in training.
- Training inferred facts (group id): every ordered pair of two ID entities at distance
  2..`train_distance` ("near" pairs).
- `test_inferred_id`: `test_size` ordered pairs of two ID entities at distance > train_distance
  ("far" pairs; no far pair is ever trained, in either order).
- `test_inferred_ood`: `test_size` ordered far pairs (distance > train_distance) with at least one OOD
  entity (OOD-ID or OOD-OOD). Answering needs the OOD entity placed from its adjacent facts alone.
- `test_near_ood` (extra diagnostic split): ordered pairs at distance 2..train_distance with at least
  one OOD entity, never trained: min(test_size, pool) of them (absent when that pool is empty).

So an ID entity is one with near comparisons in training; an OOD entity is one known only through
its (at most two) neighbours in the order. The pools depend on where the OOD entities fall, so
`check_params` draws the world (cheap) and checks test_size against the pools of this seed. Pairs
are counted per smaller position and sampled by index; no pair list of size N^2 is materialized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Dataset, Vocab
from .common import (
    ENTITY0,
    EntitySplit,
    TaskParams,
    WorldPlan,
    entity_vocab,
    fact_rows,
    finish,
    group_of,
    sample,
)

TASK = "ordering"
GENERATOR_VERSION = "ordering/1"
LABELS = ("<lt>", "<gt>")


@dataclass(frozen=True)
class OrderingParams(EntitySplit, TaskParams):
    n_entities: int = 200
    train_distance: int = 3
    id_ratio: float = 0.9
    test_size: int = 500

    def check(self) -> None:
        """Static checks (no draw); `plan` adds the checks that depend on the drawn world."""
        n, d = self.n_entities, self.train_distance
        if n < 4:
            raise ValueError(f"n_entities={n}: must be at least 4")
        if not 2 <= d <= n - 2:
            raise ValueError(
                f"train_distance={d}: must be between 2 (distance 1 pairs are the atomic facts) and "
                f"n_entities - 2 = {n - 2} (so that far pairs exist)"
            )
        self.check_common(("id_ratio",))
        self.check_entity_split(2, 1)


# --- pairs by position ---------------------------------------------------------------------------


class PairPool:
    """Unordered position pairs (p, q), p < q, q - p in [dmin, dmax], of one type.

    `both_id`: both positions ID; otherwise: at least one position OOD. Pair k is the k-th in
    lexicographic order of (p, q); `unrank` maps pair indices to positions.
    """

    def __init__(self, is_ood: np.ndarray, dmin: int, dmax: int, both_id: bool) -> None:
        n = len(is_ood)
        self.is_ood, self.both_id = is_ood, both_id
        self.cum_id = np.concatenate([[0], np.cumsum(~is_ood)])
        self.cum_ood = np.concatenate([[0], np.cumsum(is_ood)])
        self.pos_id = np.flatnonzero(~is_ood)
        self.pos_ood = np.flatnonzero(is_ood)
        p = np.arange(n)
        self.lo = np.minimum(p + dmin, n)
        hi = np.minimum(p + dmax, n - 1) + 1  # exclusive
        hi = np.maximum(hi, self.lo)
        if both_id:
            counts = np.where(is_ood, 0, self.cum_id[hi] - self.cum_id[self.lo])
        else:
            counts = np.where(is_ood, hi - self.lo, self.cum_ood[hi] - self.cum_ood[self.lo])
        self.counts = counts.astype(np.int64)
        self.ends = np.cumsum(self.counts)
        self.size = int(self.ends[-1])

    def unrank(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(k, dtype=np.int64)
        p = np.searchsorted(self.ends, k, side="right")
        r = k - (self.ends[p] - self.counts[p])
        lo = self.lo[p]
        if self.both_id:
            q = self.pos_id[self.cum_id[lo] + r]
        else:
            ood_i = np.minimum(self.cum_ood[lo] + r, len(self.pos_ood) - 1)  # clipped where p is OOD
            q = np.where(self.is_ood[p], lo + r, self.pos_ood[ood_i])
        return p, q


def ordered(pool: PairPool, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (a, b) of ordered pairs g in range(2 * pool.size): pair g // 2, reversed if g odd."""
    k, flip = np.divmod(np.asarray(g, dtype=np.int64), 2)
    p, q = pool.unrank(k)
    flip = flip.astype(bool)
    return np.where(flip, q, p), np.where(flip, p, q)


@dataclass
class Plan(WorldPlan):
    order: np.ndarray  # (N,) entity at each position
    is_ood: np.ndarray  # (N,) bool, by position
    near_id: PairPool
    far_id: PairPool
    far_ood: PairPool
    near_ood: PairPool


def plan(params: Mapping[str, Any]) -> Plan:
    """Parse and check `params`, draw the order and the ID entities, check the pools of pairs."""
    p = OrderingParams.from_dict(params)
    rng = np.random.default_rng(p.seed)
    n, d = p.n_entities, p.train_distance
    order = rng.permutation(n)
    is_ood = np.zeros(n, dtype=bool)
    is_ood[sample(rng, n, p.n_ood)] = True
    pl = Plan(
        p,
        rng,
        order,
        is_ood,
        near_id=PairPool(is_ood, 2, d, both_id=True),
        far_id=PairPool(is_ood, d + 1, n - 1, both_id=True),
        far_ood=PairPool(is_ood, d + 1, n - 1, both_id=False),
        near_ood=PairPool(is_ood, 2, d, both_id=False),
    )
    where = f"(seed={p.seed}, n_entities={n}, train_distance={d}, id_ratio={p.id_ratio})"
    if pl.near_id.size < 1:
        raise ValueError(f"train_distance={d}: no pair of ID entities at distance 2..{d} {where}")
    p.check_pools({"far ID": 2 * pl.far_id.size, "far OOD": 2 * pl.far_ood.size}, "ordered pairs", where)
    return pl


def check_params(params: Mapping[str, Any]) -> OrderingParams:
    """Validate a params mapping (drawing the world for the pool sizes); return the parsed params."""
    return plan(params).params


# --- vocabulary and rows -------------------------------------------------------------------------


def build_vocab(p: OrderingParams) -> Vocab:
    return entity_vocab(p.n_entities, LABELS)


def _rows(p: OrderingParams, pl: Plan, vocab: Vocab, split: str, kind: str, group, pa, pb) -> dict:
    label0 = ENTITY0 + p.n_entities
    n = len(pa)
    q, mask = vocab.id("<q>"), vocab.id("<mask>")
    ea, eb = ENTITY0 + pl.order[pa], ENTITY0 + pl.order[pb]
    inputs = np.stack([np.full(n, q), ea, np.full(n, mask), eb], axis=1).astype(np.int64)
    answers = (label0 + (pa > pb))[:, None]
    return fact_rows(vocab, split, kind, group, inputs, answers)


def generate(params: Mapping[str, Any]) -> Dataset:
    """Generate the ordering dataset for `params` (a mapping of `OrderingParams` fields)."""
    pl = plan(params)
    p, rng = pl.params, pl.rng
    vocab = build_vocab(p)
    n = p.n_entities

    adj = np.arange(n - 1)
    a_pos = np.stack([adj, adj + 1], axis=1).ravel()  # (0,1), (1,0), (1,2), (2,1), ...
    b_pos = np.stack([adj + 1, adj], axis=1).ravel()
    atomic_group = np.where(pl.is_ood[a_pos] | pl.is_ood[b_pos], "ood", "id")

    n_near_ood = min(p.test_size, 2 * pl.near_ood.size)
    # drawn in this order (train, far ID, far OOD, near OOD): the order fixes the dataset for a seed
    train = ordered(pl.near_id, sample(rng, 2 * pl.near_id.size, 2 * pl.near_id.size))
    far_id = ordered(pl.far_id, sample(rng, 2 * pl.far_id.size, p.test_size))
    test_ood, val_ood = p.test_and_val(rng, 2 * pl.far_ood.size)
    questions = {
        "train": train,
        "test_inferred_id": far_id,
        "test_inferred_ood": ordered(pl.far_ood, test_ood),
        "test_near_ood": ordered(pl.near_ood, sample(rng, 2 * pl.near_ood.size, n_near_ood)),
        "val_inferred_ood": ordered(pl.far_ood, val_ood),
    }
    parts = [_rows(p, pl, vocab, "train", "atomic", atomic_group, a_pos, b_pos)]
    parts += [_rows(p, pl, vocab, split, "inferred", group_of(split), *ab) for split, ab in questions.items()]
    pools = {
        "train": 2 * pl.near_id.size,
        "test_inferred_id": 2 * pl.far_id.size,
        "test_inferred_ood": 2 * pl.far_ood.size,
        "test_near_ood": 2 * pl.near_ood.size,
    }
    return finish(TASK, GENERATOR_VERSION, p, vocab, parts, pools)
