"""The comparison task of Wang, Yue, Su, Sun 2024, "Grokked Transformers are Implicit Reasoners".

Reference: repository OSU-NLP-Group/GrokkedTransformer, `comparison.ipynb` (ANCHORS.md section 2).

Each entity has a value in 0..value_range-1 for each attribute (atomic facts `<e_i><attr_j>` ->
`<v>`). An inferred fact asks how two entities compare on one attribute:
`<attr_j><q><e_a><mask><e_b>` -> `<attr_j_k>` with k = 0 (v[a] < v[b]), 1 (equal), 2 (greater).

Per attribute the entities are split at random into ID (round(id_ratio * N)) and OOD (the rest).
Unordered pairs of two ID entities are split TRAIN_POOL_FRACTION / rest into a training pool and a
held-out ID pool, both orders of a pair going to the same pool (as in the reference, so the reverse
of a held-out question is never trained on); ordered pairs of two OOD entities form the OOD pool;
mixed pairs are dropped. All atomic facts are trained on; round(phi * number of ID atomic facts)
inferred facts are drawn from the training pool, and `test_size` facts each from the held-out ID
pool and the OOD pool. With `val_size` > 0, `val_size` more OOD facts, disjoint from the test ones, form
the split `val_inferred_ood`: a validation split for model selection (hyperparameters are never chosen on
test facts); with the default 0 the dataset is unchanged.

Everything is drawn from one `numpy.random.default_rng(seed)`, by index, without materializing the
pair lists, so the paper-size dataset (N=1000, A=20) generates in about a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Dataset, Vocab
from .common import (
    ENTITY0,
    SPECIALS,
    EntitySplit,
    InferredPerAtomic,
    TaskParams,
    entity_vocab,
    fact_rows,
    finish,
    group_of,
    nth_not_in,
    sample,
)

TASK = "comparison"
GENERATOR_VERSION = "comparison/1"
TRAIN_POOL_FRACTION = 0.9  # share of unordered ID-ID pairs in the training pool (fixed in Wang et al.)
N_LABELS = 3  # less, equal, greater


@dataclass(frozen=True)
class ComparisonParams(EntitySplit, InferredPerAtomic, TaskParams):
    n_entities: int = 200
    n_attributes: int = 4
    value_range: int = 5
    phi: float = 45.0
    id_ratio: float = 0.9
    test_size: int = 500

    # --- derived sizes (same for every attribute) -------------------------------------------------

    @property
    def n_id_atomic(self) -> int:
        return self.n_id * self.n_attributes

    @property
    def n_id_unordered(self) -> int:
        """Unordered ID-ID pairs per attribute."""
        return self.n_id * (self.n_id - 1) // 2

    @property
    def n_train_unordered(self) -> int:
        """Unordered ID-ID pairs per attribute in the training pool."""
        return round(TRAIN_POOL_FRACTION * self.n_id_unordered)

    @property
    def n_heldout_unordered(self) -> int:
        return self.n_id_unordered - self.n_train_unordered

    @property
    def train_pool_size(self) -> int:
        """Ordered ID-ID facts available for training, all attributes."""
        return 2 * self.n_train_unordered * self.n_attributes

    @property
    def heldout_pool_size(self) -> int:
        return 2 * self.n_heldout_unordered * self.n_attributes

    @property
    def ood_pool_size(self) -> int:
        return self.n_ood * (self.n_ood - 1) * self.n_attributes

    def check(self) -> None:
        where = f"(n_entities={self.n_entities}, n_attributes={self.n_attributes}, id_ratio={self.id_ratio})"
        if self.n_entities < 4:
            raise ValueError(f"n_entities={self.n_entities}: need at least 4 (2 ID and 2 OOD per attribute)")
        if self.n_attributes < 1:
            raise ValueError(f"n_attributes={self.n_attributes}: must be at least 1")
        if self.value_range < 2:
            raise ValueError(f"value_range={self.value_range}: must be at least 2")
        self.check_common(("id_ratio",))
        self.check_entity_split(2, 2, " per attribute")
        self.check_phi()
        self.check_train_pool(self.train_pool_size, "ordered ID pairs", where)
        self.check_pools({"held-out ID": self.heldout_pool_size, "OOD": self.ood_pool_size}, "facts", where)


def check_params(params: Mapping[str, Any]) -> ComparisonParams:
    """Validate a params mapping without generating anything; return the parsed parameters."""
    return ComparisonParams.from_dict(params)


# --- vocabulary ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Token id offsets of each token block in the vocabulary."""

    n_entities: int
    n_attributes: int
    value_range: int

    @property
    def entity0(self) -> int:
        return ENTITY0

    @property
    def attr0(self) -> int:
        return self.entity0 + self.n_entities

    @property
    def value0(self) -> int:
        return self.attr0 + self.n_attributes

    @property
    def label0(self) -> int:
        return self.value0 + self.value_range

    def special(self, tok: str) -> int:
        return 1 + SPECIALS.index(tok)


def build_vocab(p: ComparisonParams) -> Vocab:
    toks = [f"<attr_{j}>" for j in range(p.n_attributes)]
    toks += [f"<{v}>" for v in range(p.value_range)]
    toks += [f"<attr_{j}_{k}>" for j in range(p.n_attributes) for k in range(N_LABELS)]
    return entity_vocab(p.n_entities, toks)


# --- sampling by index ---------------------------------------------------------------------------


def unrank_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j), i < j, of the k-th unordered pair of n items in lexicographic order."""
    k = np.asarray(k, dtype=np.int64)

    def before(i: np.ndarray) -> np.ndarray:  # number of pairs whose first position is < i
        return i * (2 * n - i - 1) // 2

    b = 2 * n - 1
    i = np.floor((b - np.sqrt(np.maximum(b * b - 8.0 * k, 0.0))) / 2).astype(np.int64)
    i = np.clip(i, 0, n - 2)
    for _ in range(2):  # fix float rounding at block edges
        i = np.where(before(i) > k, i - 1, i)
        i = np.where(before(i + 1) <= k, i + 1, i)
    return i, k - before(i) + i + 1


def unrank_ordered(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j), i != j, of the k-th ordered pair of n distinct items."""
    k = np.asarray(k, dtype=np.int64)
    i, r = np.divmod(k, n - 1)
    return i, r + (r >= i)


@dataclass
class _Draws:
    """Random state of a dataset: values, per-attribute entity groups, held-out unordered pairs."""

    values: np.ndarray  # (N, A) int
    id_ents: np.ndarray  # (A, n_id) sorted entity indices
    ood_ents: np.ndarray  # (A, n_ood)
    heldout: np.ndarray  # (A * n_heldout_unordered,) sorted global unordered-pair indices


def _draw_world(p: ComparisonParams, rng: np.random.Generator) -> _Draws:
    values = rng.integers(0, p.value_range, size=(p.n_entities, p.n_attributes))
    perms = np.stack([rng.permutation(p.n_entities) for _ in range(p.n_attributes)])
    id_ents = np.sort(perms[:, : p.n_id], axis=1)
    ood_ents = np.sort(perms[:, p.n_id :], axis=1)
    m = p.n_id_unordered
    heldout = [np.sort(sample(rng, m, p.n_heldout_unordered)) + a * m for a in range(p.n_attributes)]
    return _Draws(values, id_ents, ood_ents, np.concatenate(heldout))


def _id_pairs(p: ComparisonParams, w: _Draws, unordered: np.ndarray, flip: np.ndarray):
    """(attribute, entity a, entity b) for global unordered ID-pair indices, reversed where flip."""
    attr, u = np.divmod(unordered, p.n_id_unordered)
    i, j = unrank_pairs(u, p.n_id)
    ea, eb = w.id_ents[attr, i], w.id_ents[attr, j]
    return attr, np.where(flip, eb, ea), np.where(flip, ea, eb)


def _train_facts(p: ComparisonParams, w: _Draws, rng: np.random.Generator):
    g = sample(rng, p.train_pool_size, p.n_train_inferred)
    r, flip = np.divmod(g, 2)
    return _id_pairs(p, w, nth_not_in(r, w.heldout), flip.astype(bool))


def _heldout_facts(p: ComparisonParams, w: _Draws, rng: np.random.Generator):
    g = sample(rng, p.heldout_pool_size, p.test_size)
    r, flip = np.divmod(g, 2)
    return _id_pairs(p, w, w.heldout[r], flip.astype(bool))


def _ood_facts(p: ComparisonParams, w: _Draws, g: np.ndarray):
    """(attribute, entity a, entity b) of the facts g of the OOD pool."""
    attr, local = np.divmod(g, p.n_ood * (p.n_ood - 1))
    i, j = unrank_ordered(local, p.n_ood)
    return attr, w.ood_ents[attr, i], w.ood_ents[attr, j]


# --- rows ----------------------------------------------------------------------------------------


def _atomic_rows(p: ComparisonParams, w: _Draws, vocab: Vocab, lay: _Layout) -> dict[str, list]:
    ent, attr = np.divmod(np.arange(p.n_entities * p.n_attributes), p.n_attributes)
    is_id = np.zeros((p.n_attributes, p.n_entities), dtype=bool)
    np.put_along_axis(is_id, w.id_ents, True, axis=1)
    group = np.where(is_id[attr, ent], "id", "ood")
    inputs = np.stack([lay.entity0 + ent, lay.attr0 + attr], axis=1)
    answers = (lay.value0 + w.values[ent, attr])[:, None]
    return fact_rows(vocab, "train", "atomic", group, inputs, answers)


def _inferred_rows(p: ComparisonParams, w: _Draws, vocab: Vocab, lay: _Layout, split: str, facts) -> dict:
    attr, ea, eb = facts
    label = np.sign(w.values[ea, attr] - w.values[eb, attr]) + 1
    n = len(attr)
    inputs = np.stack(
        [
            lay.attr0 + attr,
            np.full(n, lay.special("<q>")),
            lay.entity0 + ea,
            np.full(n, lay.special("<mask>")),
            lay.entity0 + eb,
        ],
        axis=1,
    )
    answers = (lay.label0 + N_LABELS * attr + label)[:, None]
    return fact_rows(vocab, split, "inferred", group_of(split), inputs, answers)


def generate(params: Mapping[str, Any]) -> Dataset:
    """Generate the comparison dataset for `params` (a mapping of `ComparisonParams` fields)."""
    p = check_params(params)
    rng = np.random.default_rng(p.seed)
    vocab = build_vocab(p)
    lay = _Layout(p.n_entities, p.n_attributes, p.value_range)
    w = _draw_world(p, rng)
    questions = {"train": _train_facts(p, w, rng), "test_inferred_id": _heldout_facts(p, w, rng)}
    test_ood, val_ood = p.test_and_val(rng, p.ood_pool_size)
    questions["test_inferred_ood"] = _ood_facts(p, w, test_ood)
    questions["val_inferred_ood"] = _ood_facts(p, w, val_ood)
    parts = [_atomic_rows(p, w, vocab, lay)]
    parts += [_inferred_rows(p, w, vocab, lay, split, facts) for split, facts in questions.items()]
    return finish(TASK, GENERATOR_VERSION, p, vocab, parts)
