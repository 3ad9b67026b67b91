"""In-context format: every inferred question preceded by demonstrations, for any supported task.

Usage: a dataset parameter `format: {k_demos: K, train_informative: P}` next to the task's own
parameters (config or `--params`). `tasks.generate` builds the task's dataset without it, then
`apply` rewrites it; k_demos = 0 (the default) is off and gives exactly the plain dataset.

Rewrite (the row order of the plain dataset is kept, new test rows come last):
- Atomic facts stay bare: they are the in-weights knowledge.
- Every inferred fact (training and test) becomes `D_1 <sep> ... D_K <sep> query`, where each
  demonstration D is a full training fact (its input and answer tokens) and only the query's answer
  is a target. The query's text and answer are unchanged.
- Demonstrations are drawn from the training facts (atomic and inferred) of the query's key: the
  attribute (comparison), the relation (inverse) or the first relation (composition).
- "Needed" facts of a query: the atomic facts its answer follows from (comparison: the two entities'
  values on the attribute; composition: the hops' facts; inverse: the forward fact).
- Uninformative demonstrations: K distinct facts of the key that mention no entity of the query or
  of its needed facts (so they carry no answer-relevant information).
- Informative demonstrations: the needed facts plus K - m uninformative ones, in random order
  (needs K >= m, the number of needed facts: 2, hops, 1).

Splits: `train` inferred facts get informative demonstrations with probability `train_informative`
(so that reading the context can be learned), uninformative ones otherwise. Every
`test_inferred_<g>` split keeps its questions with uninformative demonstrations (in-weights answering,
as before), and a new split `test_incontext_<g>` repeats the same questions with informative
demonstrations (in-context answering): e.g. `test_incontext_ood` asks the OOD questions with their
atomic facts shown. Other test splits get uninformative demonstrations and no counterpart.

A `<sep>` token is appended to the vocabulary if the task has none. All draws come from one generator
seeded by (the task's seed, a constant), so files are deterministic. The task is read back from the
facts' text (no generator internals), so an adapter per task is all a new task needs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .base import Dataset, Vocab, dataset_hash, facts_frame
from .common import parse

FORMAT_KEY = "format"
FORMAT_VERSION = "incontext/1"
SEP = "<sep>"
MAX_DEMOS = 32
MAX_ROUNDS = 200  # rejection-sampling rounds before giving up on too small a pool
_STREAM = 0x1C  # second word of the format's seed sequence: a stream apart from the task's own draws
_ENTITY = re.compile(r"<e_(\d+)>")


@dataclass(frozen=True)
class FormatParams:
    k_demos: int = 0
    train_informative: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.k_demos <= MAX_DEMOS:
            raise ValueError(f"{FORMAT_KEY}.k_demos={self.k_demos}: must be between 0 and {MAX_DEMOS}")
        if not 0.0 <= self.train_informative <= 1.0:
            raise ValueError(
                f"{FORMAT_KEY}.train_informative={self.train_informative}: must be between 0 and 1"
            )


def parse_format(fmt: Any) -> FormatParams:
    """The format mapping parsed and checked; errors start with `format` or `format.<key>`."""
    return parse(FormatParams, fmt, FORMAT_KEY)


def split_params(params: Any) -> tuple[Any, Any]:
    """(the task's own params, the format mapping or None)."""
    if not isinstance(params, Mapping) or FORMAT_KEY not in params:
        return params, None
    return {k: v for k, v in params.items() if k != FORMAT_KEY}, params[FORMAT_KEY]


# --- adapters: key and needed atomic facts of each row, read from the facts --------------------


def _extract(s: pd.Series, pattern: str) -> np.ndarray:
    out = s.str.extract(pattern)
    if out.isna().to_numpy().any():
        bad = s[out.isna().any(axis=1)].iloc[0]
        raise RuntimeError(f"in-context format: unexpected fact {bad!r} (pattern {pattern})")
    return out.astype(np.int64).to_numpy()


def _table(rows: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    t = np.full((i.max() + 1, j.max() + 1), -1, dtype=np.int64)
    t[i, j] = rows
    return t


def _lookup(t: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    ok = (i < t.shape[0]) & (j < t.shape[1])
    out = np.full(len(i), -1, dtype=np.int64)
    out[ok] = t[i[ok], j[ok]]
    if (out < 0).any():
        raise RuntimeError("in-context format: a question's atomic fact is missing from the dataset")
    return out


def _comparison(facts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    atomic = (facts["kind"] == "atomic").to_numpy()
    a_rows, q_rows = np.flatnonzero(atomic), np.flatnonzero(~atomic)
    ent, attr = _extract(facts["text"].iloc[a_rows], r"^<e_(\d+)><attr_(\d+)>$").T
    j, ea, eb = _extract(facts["text"].iloc[q_rows], r"^<attr_(\d+)><q><e_(\d+)><mask><e_(\d+)>$").T
    table = _table(a_rows, ent, attr)
    key = np.empty(len(facts), dtype=np.int64)
    key[a_rows], key[q_rows] = attr, j
    needed = np.full((len(facts), 2), -1, dtype=np.int64)
    needed[q_rows] = np.stack([_lookup(table, ea, j), _lookup(table, eb, j)], axis=1)
    return key, needed


def _composition(facts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    atomic = (facts["kind"] == "atomic").to_numpy()
    a_rows, q_rows = np.flatnonzero(atomic), np.flatnonzero(~atomic)
    head, rel = _extract(facts["text"].iloc[a_rows], r"^<e_(\d+)><r_(\d+)>$").T
    tail = np.full(len(facts), -1, dtype=np.int64)
    tail[a_rows] = _extract(facts["answer"].iloc[a_rows], r"^<e_(\d+)>$")[:, 0]
    table = _table(a_rows, head, rel)
    texts = facts["text"].iloc[q_rows]
    hops = texts.iloc[0].count("<r_") if len(texts) else 2
    path = _extract(texts, r"^<e_(\d+)>" + r"<r_(\d+)>" * hops + "$")
    key = np.empty(len(facts), dtype=np.int64)
    key[a_rows], key[q_rows] = rel, path[:, 1]
    needed = np.full((len(facts), hops), -1, dtype=np.int64)
    e = path[:, 0]
    for i in range(hops):
        row = _lookup(table, e, path[:, 1 + i])
        needed[q_rows, i] = row
        e = tail[row]
    return key, needed


def _inverse(facts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    atomic = (facts["kind"] == "atomic").to_numpy()
    a_rows, q_rows = np.flatnonzero(atomic), np.flatnonzero(~atomic)
    _, rel = _extract(facts["text"].iloc[a_rows], r"^<e_(\d+)><r_(\d+)>$").T
    tail = _extract(facts["answer"].iloc[a_rows], r"^<e_(\d+)>$")[:, 0]
    b, j = _extract(facts["text"].iloc[q_rows], r"^<e_(\d+)><r_(\d+)_inv>$").T
    table = _table(a_rows, rel, tail)  # relations are injective: (r, tail) names one atomic fact
    key = np.empty(len(facts), dtype=np.int64)
    key[a_rows], key[q_rows] = rel, j
    needed = np.full((len(facts), 1), -1, dtype=np.int64)
    needed[q_rows, 0] = _lookup(table, j, b)
    return key, needed


Adapter = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]
ADAPTERS: dict[str, Adapter] = {"comparison": _comparison, "composition": _composition, "inverse": _inverse}


def n_needed(task: str, params: Any) -> int:
    """Atomic facts each question of `task` depends on, for its parsed params."""
    return {"comparison": 2, "inverse": 1}.get(task) or int(params.hops)


def check_format(task: str, fmt: Any, params: Any) -> FormatParams:
    """Validate the format mapping for `task` (whose parsed params are `params`)."""
    f = parse_format(fmt)
    if f.k_demos == 0:
        return f
    if task not in ADAPTERS:
        raise ValueError(
            f"{FORMAT_KEY}.k_demos={f.k_demos}: the in-context format is not defined for task {task!r}; "
            f"supported: {sorted(ADAPTERS)}"
        )
    m = n_needed(task, params)
    if f.k_demos < m:
        raise ValueError(
            f"{FORMAT_KEY}.k_demos={f.k_demos}: must be at least {m}, the atomic facts a {task} "
            "question depends on (the informative demonstrations show all of them)"
        )
    return f


# --- the rewrite ---------------------------------------------------------------------------------


def _entities(facts: pd.DataFrame) -> np.ndarray:
    """(n, E) entity ids mentioned by each fact (input or answer), padded with -1."""
    found = [
        [int(x) for x in _ENTITY.findall(t + a)]
        for t, a in zip(facts["text"].tolist(), facts["answer"].tolist(), strict=True)
    ]
    width = max(map(len, found), default=1) or 1
    out = np.full((len(found), width), -1, dtype=np.int64)
    for i, ents in enumerate(found):
        out[i, : len(ents)] = ents
    return out


def _bad(cand: np.ndarray, ents: np.ndarray, excl: np.ndarray) -> np.ndarray:
    """(Q, K) demonstrations that mention an excluded entity or repeat an earlier one in their row."""
    bad = np.zeros(cand.shape, dtype=bool)
    for lo in range(0, len(cand), 8192):
        c, x = cand[lo : lo + 8192], excl[lo : lo + 8192]
        hit = ents[c][..., :, None] == x[:, None, None, :]  # (q, K, E, X)
        bad[lo : lo + 8192] = (hit & (x[:, None, None, :] >= 0)).any(axis=(2, 3))
    for j in range(1, cand.shape[1]):
        bad[:, j] |= (cand[:, :j] == cand[:, j : j + 1]).any(axis=1)
    return bad


def _fillers(rng, f: FormatParams, qkey, excl, pool_rows, pool_key, ents) -> np.ndarray:
    """(Q, K) uninformative demonstrations: distinct training facts of the key, no excluded entity."""
    keys = np.arange(max(qkey.max(initial=0), pool_key.max(initial=0)) + 1)
    start = np.searchsorted(pool_key, keys, side="left")
    size = np.searchsorted(pool_key, keys, side="right") - start
    s, n = start[qkey], size[qkey]
    if (n == 0).any():
        raise ValueError(f"{FORMAT_KEY}.k_demos={f.k_demos}: a question's key has no training facts")
    k = f.k_demos
    cand = pool_rows[s[:, None] + rng.integers(0, n[:, None], size=(len(qkey), k))]
    active = np.arange(len(qkey))
    for _ in range(MAX_ROUNDS):
        bad = _bad(cand[active], ents, excl[active])
        keep = bad.any(axis=1)
        active, bad = active[keep], bad[keep]
        if not len(active):
            return cand
        qi, ci = np.nonzero(bad)
        rows = active[qi]
        cand[rows, ci] = pool_rows[s[rows] + rng.integers(0, n[rows])]
    raise ValueError(
        f"{FORMAT_KEY}.k_demos={k}: could not draw {k} distinct demonstrations of the same key that avoid "
        f"the question's entities for {len(active)} questions; the training pools are too small"
    )


def apply(task: str, ds: Dataset, fmt: Any) -> Dataset:
    """`ds` (the plain dataset of `task`) rewritten in the in-context format `fmt`."""
    f = parse_format(fmt)
    if f.k_demos == 0:
        return ds
    facts = ds.facts
    if task not in ADAPTERS:
        check_format(task, fmt, None)  # raises, naming format.k_demos
    key, needed = ADAPTERS[task](facts)
    m = needed.shape[1]
    if f.k_demos < m:
        raise ValueError(f"{FORMAT_KEY}.k_demos={f.k_demos}: must be at least {m} for task {task!r}")
    rng = np.random.default_rng([int(ds.meta["params"]["seed"]), _STREAM])

    split = facts["split"].to_numpy().astype(str)
    kind = facts["kind"].to_numpy().astype(str)
    ents = _entities(facts)
    train = np.flatnonzero(split == "train")
    pool_rows = train[np.argsort(key[train], kind="stable")]
    pool_key = key[pool_rows]

    # questions: every inferred row, then the in-context copies of the test_inferred_* splits
    base_q = np.flatnonzero(kind == "inferred")
    informative = np.zeros(len(base_q), dtype=bool)
    is_train_q = split[base_q] == "train"
    informative[is_train_q] = rng.random(int(is_train_q.sum())) < f.train_informative
    copies = [
        (s, np.flatnonzero(split == s)) for s in sorted(set(split[base_q])) if s.startswith("test_inferred_")
    ]
    q = np.concatenate([base_q, *(rows for _, rows in copies)])
    informative = np.concatenate([informative, np.ones(len(q) - len(base_q), dtype=bool)])

    need = needed[q]  # (Q, m)
    excl = np.concatenate([ents[q], ents[need].reshape(len(q), -1)], axis=1)
    demos = _fillers(rng, f, key[q], excl, pool_rows, pool_key, ents)
    demos[informative, :m] = need[informative]
    demos = rng.permuted(demos, axis=1)

    vocab = ds.vocab if SEP in ds.vocab.tokens else Vocab([*ds.vocab.tokens, SEP])
    sep = vocab.id(SEP)
    inputs = facts["input_ids"].tolist()
    answers = facts["answer_ids"].tolist()
    texts = facts["text"].tolist()
    demo_ids = [list(i) + list(a) + [sep] for i, a in zip(inputs, answers, strict=True)]
    demo_text = [t + a + SEP for t, a in zip(texts, facts["answer"].tolist(), strict=True)]
    new_inputs = [
        [t for d in row for t in demo_ids[d]] + list(inputs[i]) for i, row in zip(q, demos.tolist())
    ]
    new_texts = ["".join(demo_text[d] for d in row) + texts[i] for i, row in zip(q, demos.tolist())]

    out = {c: facts[c].tolist() for c in facts.columns}
    nb = len(base_q)
    for i, row in enumerate(base_q.tolist()):
        out["input_ids"][row] = new_inputs[i]
        out["text"][row] = new_texts[i]
    new_split = [f"test_incontext_{s.removeprefix('test_inferred_')}" for s, rows in copies for _ in rows]
    extra_rows = q[nb:]
    for c in facts.columns:
        if c == "split":
            out[c] += new_split
        elif c == "input_ids":
            out[c] += new_inputs[nb:]
        elif c == "text":
            out[c] += new_texts[nb:]
        else:
            out[c] += facts[c].iloc[extra_rows].tolist()
    new_facts = facts_frame(out)
    meta = {
        **ds.meta,
        "params": {**ds.meta["params"], FORMAT_KEY: dataclasses.asdict(f)},
        "generator_version": f"{ds.meta['generator_version']}+{FORMAT_VERSION}",
    }
    meta["content_hash"] = dataset_hash(new_facts)
    return Dataset(new_facts, vocab, meta)
