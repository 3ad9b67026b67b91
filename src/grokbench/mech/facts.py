"""The dataset side of the analyses: which facts, which positions, which labels and corruptions.

Read off a grokbench dataset (tasks/base.py: one row per fact, `input_ids` -> `answer_ids`, `split`,
`kind`, `group`) and its vocabulary's token strings. An inferred fact's answer is predicted at its last
input position (train/data.py). Layouts (tasks/comparison.py, tasks/composition.py):

- comparison: atomic `<e_i><attr_j>` -> `<v>`; inferred `<attr_j><q><e_a><mask><e_b>` -> `<attr_j_k>`,
  k = sign(v_a - v_b) + 1; ID / OOD is per (entity, attribute), the atomic fact's `group`.
- composition: atomic `<e_h><r>` -> `<e_t>`; inferred `<e_h><r_1>...<r_k>` -> `<e_t>`; the bridge after the
  first hop is the tail of `<e_h><r_1>`; ID / OOD is per atomic fact (a path is ID when all hops are).

Only the plain format (no in-context demonstrations, tasks/incontext.py) is supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..tasks.base import Dataset
from .common import pad

_ENTITY = re.compile(r"<e_\d+>")
_DIGITS = re.compile(r"\d+")
EVAL_SPLITS = ("train", "test_inferred_id", "test_inferred_ood")


def check_plain(ds: Dataset) -> None:
    fmt = (ds.meta.get("params") or {}).get("format") or {}
    if fmt.get("k_demos", 0):
        raise ValueError("mech: the in-context format (k_demos > 0) is not supported")


def entity_tokens(ds: Dataset) -> np.ndarray:
    """Token ids of the entities `<e_i>`, in id order."""
    return np.array([i for i, t in enumerate(ds.vocab.tokens) if _ENTITY.fullmatch(t)], dtype=np.int64)


def sample_inferred(
    ds: Dataset, splits=EVAL_SPLITS, max_facts: int | None = 256, seed: int = 0
) -> pd.DataFrame:
    """Inferred facts of `splits`, at most `max_facts` per split drawn without replacement (seeded),
    in dataset order; the column `fact` holds the row's index in `ds.facts`."""
    f = ds.facts
    rng = np.random.default_rng(seed)
    parts = []
    for split in splits:
        rows = np.flatnonzero((f["split"] == split).to_numpy() & (f["kind"] == "inferred").to_numpy())
        if max_facts is not None and len(rows) > max_facts:
            rows = np.sort(rng.choice(rows, size=max_facts, replace=False))
        parts.append(rows)
    rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return f.iloc[rows].assign(fact=rows).reset_index(drop=True)


def position_roles(ds: Dataset, facts: pd.DataFrame) -> list[str]:
    """A name per input position of `facts` (equal lengths): "p:<pattern>", the token pattern with digits
    as '#' when every fact has that pattern there (e.g. "2:<e_#>"), else "p:mixed"."""
    ids = np.array(facts["input_ids"].tolist())
    roles = []
    for p in range(ids.shape[1]):
        patterns = {_DIGITS.sub("#", ds.vocab.tokens[t]) for t in np.unique(ids[:, p])}
        roles.append(f"{p}:{patterns.pop() if len(patterns) == 1 else 'mixed'}")
    return roles


def _atomic(ds: Dataset) -> pd.DataFrame:
    return ds.facts[(ds.facts["kind"] == "atomic").to_numpy()]


def _number(ds: Dataset, token: int) -> int:
    return int(_DIGITS.search(ds.vocab.tokens[token]).group())


# --- probes --------------------------------------------------------------------------------------


@dataclass
class ProbeSet:
    """Probe rows: the hidden state at `position` of each input in `inputs` (N, T) is to decode `labels`
    (N,); `split` is "train" (fitted on), "test_id" (held-out ID) or "test_ood"; `keys` one probe each."""

    target: str
    inputs: torch.Tensor
    position: int
    labels: np.ndarray
    split: np.ndarray
    keys: np.ndarray


def _probe_split(group: np.ndarray, heldout_fraction: float, seed: int) -> np.ndarray:
    """ "train" / "test_id" for ID rows (a seeded draw of round(fraction * n_id) held out), "test_ood"."""
    split = np.where(group == "id", "train", "test_ood").astype(object)
    ids = np.flatnonzero(group == "id")
    held = np.random.default_rng(seed).choice(ids, size=round(heldout_fraction * len(ids)), replace=False)
    split[held] = "test_id"
    return split


def probe_set(ds: Dataset, heldout_fraction: float = 0.2, seed: int = 0) -> ProbeSet | None:
    """The probe rows of the dataset's task, or None for a task without one.

    comparison: per atomic fact (entity e, attribute a), the input `<attr_a><q><e>` (the first entity
    slot of every inferred question on a; by causality the state there depends on nothing else),
    position 2, label the value token of e on a, one probe per attribute (target "value").
    composition: per atomic fact (h, r), the input `<e_h><r>` (the start of every path whose first hop
    is (h, r)), position 1, label the tail entity token: the bridge entity after the first hop (target
    "bridge"; the atomic fact itself is trained to answer it there).
    ID / OOD is the atomic fact's group; `heldout_fraction` of the ID rows (seeded) are held out."""
    check_plain(ds)
    task = ds.meta.get("task")
    atomic = _atomic(ds)
    inputs = np.array(atomic["input_ids"].tolist(), dtype=np.int64)
    labels = np.array([a[0] for a in atomic["answer_ids"]], dtype=np.int64)
    group = atomic["group"].to_numpy().astype(object)
    split = _probe_split(group, heldout_fraction, seed)
    if task == "comparison":
        q = np.full(len(inputs), ds.vocab.id("<q>"))
        seqs = np.stack([inputs[:, 1], q, inputs[:, 0]], axis=1)
        return ProbeSet("value", torch.from_numpy(seqs), 2, labels, split, inputs[:, 1])
    if task == "composition":
        return ProbeSet("bridge", torch.from_numpy(inputs), 1, labels, split, np.zeros(len(inputs), np.int64))
    return None


# --- tracing -------------------------------------------------------------------------------------


@dataclass
class Corruption:
    """Corrupted inputs (N, T) of the facts, their answer (N,; -1 where unknown: the analysis then uses
    the corrupted run's top alternative), the position changed, and which facts have a corruption."""

    inputs: torch.Tensor
    answer: np.ndarray
    position: int
    ok: np.ndarray


def _comparison_corruption(
    ds: Dataset, facts: pd.DataFrame, rng: np.random.Generator, position: int = 2
) -> Corruption:
    """The entity at `position` (2: e_a, 4: e_b) replaced by another entity of its group on the attribute,
    neither e_a nor e_b, such that the comparison gives another label; the answer is that label's token."""
    if position not in (2, 4):
        raise ValueError(f"comparison: the entities are at positions 2 and 4, not {position}")
    atomic = _atomic(ds)
    a_in = np.array(atomic["input_ids"].tolist(), dtype=np.int64)
    value = {(e, a): _number(ds, v[0]) for (e, a), v in zip(a_in.tolist(), atomic["answer_ids"])}
    group = dict(zip(map(tuple, a_in.tolist()), atomic["group"]))
    by_attr: dict[tuple[int, str], list[int]] = {}
    for (e, a), g in group.items():
        by_attr.setdefault((a, g), []).append(e)
    ids = np.array(facts["input_ids"].tolist(), dtype=np.int64)
    out, answer, ok = ids.copy(), np.full(len(ids), -1), np.zeros(len(ids), dtype=bool)

    def label(row: list[int]) -> int:  # the comparison of row's e_a and e_b on its attribute
        attr, ea, eb = row[0], row[2], row[4]
        return int(np.sign(value[ea, attr] - value[eb, attr])) + 1

    for i, row in enumerate(ids.tolist()):
        attr, ea, eb = row[0], row[2], row[4]
        clean = label(row)
        swapped = [
            [*row[:position], x, *row[position + 1 :]] for x in by_attr[attr, group[row[position], attr]]
        ]
        cand = [r for r in swapped if r[position] not in (ea, eb) and label(r) != clean]
        if cand:
            new = cand[rng.integers(len(cand))]
            out[i], ok[i] = new, True
            answer[i] = ds.vocab.id(f"<attr_{_number(ds, attr)}_{label(new)}>")
    return Corruption(torch.from_numpy(out), answer, position, ok)


def _composition_corruption(ds: Dataset, facts: pd.DataFrame, rng: np.random.Generator) -> Corruption:
    """The head entity (position 0) replaced by one from which the same relations lead to another tail;
    the answer is that tail."""
    atomic = _atomic(ds)
    a_in = np.array(atomic["input_ids"].tolist(), dtype=np.int64)
    V = len(ds.vocab)
    relations = np.unique(a_in[:, 1])
    column = np.full(V, len(relations))  # a relation token's column; other tokens: the last, all -1
    column[relations] = np.arange(len(relations))
    nxt = np.full((V, len(relations) + 1), -1, dtype=np.int64)  # (token, relation) -> tail token
    nxt[a_in[:, 0], column[a_in[:, 1]]] = [a[0] for a in atomic["answer_ids"]]
    ents = entity_tokens(ds)
    ids = np.array(facts["input_ids"].tolist(), dtype=np.int64)
    out, answer, ok = ids.copy(), np.full(len(ids), -1), np.zeros(len(ids), dtype=bool)
    for i, (row, ans) in enumerate(zip(ids, facts["answer_ids"])):
        e = ents.copy()
        for r in row[1:]:
            e = np.where(e >= 0, nxt[np.maximum(e, 0), column[r]], -1)
        cand = np.flatnonzero((e >= 0) & (e != ans[0]) & (ents != row[0]))
        if len(cand):
            j = cand[rng.integers(len(cand))]
            out[i, 0], answer[i], ok[i] = ents[j], e[j], True
    return Corruption(torch.from_numpy(out), answer, 0, ok)


def _entity_corruption(ds: Dataset, facts: pd.DataFrame, rng: np.random.Generator) -> Corruption:
    """Any other task: the first entity of each fact replaced by another entity found at that position in
    the facts of the same split; the answer is left to the model (-1)."""
    ids = np.array(facts["input_ids"].tolist(), dtype=np.int64)
    is_ent = np.isin(ids, entity_tokens(ds))
    cols = np.flatnonzero(is_ent.all(axis=0))
    if len(ids) == 0 or len(cols) == 0:
        return Corruption(torch.from_numpy(ids), np.full(len(ids), -1), -1, np.zeros(len(ids), dtype=bool))
    p = int(cols[0])
    out, ok = ids.copy(), np.zeros(len(ids), dtype=bool)
    split = facts["split"].to_numpy()
    for i in range(len(ids)):
        pool = np.unique(ids[split == split[i], p])
        pool = pool[pool != ids[i, p]]
        if len(pool):
            out[i, p], ok[i] = pool[rng.integers(len(pool))], True
    return Corruption(torch.from_numpy(out), np.full(len(ids), -1), p, ok)


def corruption_positions(ds: Dataset, facts: pd.DataFrame) -> list[int]:
    """The positions `corruptions` can change: comparison e_a and e_b (2, 4), composition the head entity
    (0), any other task the first position holding an entity in every fact (none: [])."""
    task = ds.meta.get("task")
    if task == "comparison":
        return [2, 4]
    if task == "composition":
        return [0]
    ids = np.array(facts["input_ids"].tolist(), dtype=np.int64)
    cols = np.flatnonzero(np.isin(ids, entity_tokens(ds)).all(axis=0)) if len(ids) else []
    return [int(cols[0])] if len(cols) else []


def corruptions(ds: Dataset, facts: pd.DataFrame, seed: int = 0, position: int | None = None) -> Corruption:
    """One corruption per fact of `facts` (inferred facts of equal length), drawn with `seed`, of the
    entity at `position` (default: the first of `corruption_positions`; comparison takes 2 or 4)."""
    check_plain(ds)
    rng = np.random.default_rng(seed)
    task = ds.meta.get("task")
    if task == "comparison":
        return _comparison_corruption(ds, facts, rng, 2 if position is None else position)
    make = _composition_corruption if task == "composition" else _entity_corruption
    c = make(ds, facts, rng)
    if position is not None and position != c.position:
        raise ValueError(f"{task}: corrupts position {c.position}, not {position}")
    return c


# --- logit lens targets --------------------------------------------------------------------------


def lens_targets(ds: Dataset, facts: pd.DataFrame) -> dict[str, np.ndarray]:
    """Target tokens per fact: "answer" always; for composition also "bridge", the tail of the first hop
    (-1 where the dataset has no such atomic fact)."""
    targets = {"answer": np.array([a[0] for a in facts["answer_ids"]], dtype=np.int64)}
    if ds.meta.get("task") == "composition":
        atomic = _atomic(ds)
        tail = {tuple(i): a[0] for i, a in zip(atomic["input_ids"], atomic["answer_ids"])}
        targets["bridge"] = np.array([tail.get(tuple(i[:2]), -1) for i in facts["input_ids"]], dtype=np.int64)
    return targets


def fact_inputs(facts: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """The facts' input ids, right-padded: (ids (N, T), lengths (N,))."""
    return pad(facts["input_ids"].tolist())
