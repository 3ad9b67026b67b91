"""Tests of the in-context format (`format: {k_demos, train_informative}`) over the tasks it is defined for.

The demonstrations are checked against the plain dataset of the same parameters: training facts of the
question's key, informative ones showing exactly the atomic facts the answer follows from.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from grokbench.tasks.base import read_dataset
from grokbench.train.data import IGNORE, build_tensors

from .helpers import (
    CMP,
    COMP_HOPS,
    ENTITY,
    INV,
    SMALL,
    TOKEN,
    assert_bad_params_named,
    assert_format,
    assert_same_seed_same_bytes,
    bad_ids,
    read_rows,
    write,
)

K_DEMOS = 3


def _needed(task: str, rows: list[dict], query: str) -> tuple[set[str], set[int], int]:
    """(texts+answers of the atomic facts the question depends on, their entities, key)."""
    atomic = {r["text"]: r["text"] + r["answer"] for r in rows if r["kind"] == "atomic"}
    if task == "comparison":
        j, a, b = re.fullmatch(r"<attr_(\d+)><q><e_(\d+)><mask><e_(\d+)>", query).groups()
        facts = {atomic[f"<e_{a}><attr_{j}>"], atomic[f"<e_{b}><attr_{j}>"]}
        key = int(j)
    elif task == "composition":
        toks = TOKEN.findall(query)
        e, facts = toks[0], set()
        for rel in toks[1:]:
            fact = atomic[e + rel]
            facts.add(fact)
            e = TOKEN.findall(fact)[-1]
        key = int(toks[1][3:-1])
    else:
        b, j = re.fullmatch(r"<e_(\d+)><r_(\d+)_inv>", query).groups()
        facts = {f for f in atomic.values() if f.endswith(f"<r_{j}><e_{b}>")}
        key = int(j)
    ents = {int(x) for f in facts for x in ENTITY.findall(f)}
    return facts, ents, key


def _key(task: str, fact: str) -> int:
    if task == "comparison":
        return int(re.search(r"<attr_(\d+)>", fact).group(1))
    return int(re.search(r"<r_(\d+)(?:_inv)?>", fact).group(1))


@pytest.mark.parametrize("task", ["comparison", "composition", "inverse"])
def test_incontext(task: str, tmp_path: Path) -> None:
    params = {**SMALL[task], "format": {"k_demos": K_DEMOS, "train_informative": 0.5}}
    path = write(tmp_path, task, params)
    plain = read_rows(write(tmp_path, task, SMALL[task], "plain.parquet"))
    assert_format(path, task)
    rows = read_rows(path)
    ds = read_dataset(path)
    assert ds.meta["params"]["format"] == params["format"]
    assert ds.meta["generator_version"].endswith("+incontext/1")

    # the plain rows, in order, with only the inferred questions' inputs extended
    assert len(rows) > len(plain)
    train_facts = {r["text"] + r["answer"] for r in plain if r["split"] == "train"}
    for r, p in zip(rows, plain):
        assert {c: r[c] for c in ("split", "kind", "group", "answer")} == {
            c: p[c] for c in ("split", "kind", "group", "answer")
        }
        if r["kind"] == "atomic":
            assert r == p
        else:
            assert r["text"].endswith(p["text"]) and r["input_ids"][-len(p["input_ids"]) :] == p["input_ids"]

    # the extra splits repeat the test questions, in order
    splits = Counter(r["split"] for r in rows)
    for g in ("id", "ood"):
        assert [r["text"].split("<sep>")[-1] for r in rows if r["split"] == f"test_incontext_{g}"] == [
            r["text"] for r in plain if r["split"] == f"test_inferred_{g}"
        ]
        assert splits[f"test_incontext_{g}"] == splits[f"test_inferred_{g}"]

    n_informative = Counter()
    for r in rows:
        if r["kind"] != "inferred":
            continue
        *demos, query = r["text"].split("<sep>")
        assert len(demos) == K_DEMOS and len(set(demos)) == K_DEMOS
        assert set(demos) <= train_facts  # demonstrations are training facts
        needed, ents, key = _needed(task, plain, query)
        shows = needed <= set(demos)
        fillers = set(demos) - needed if shows else set(demos)
        assert len(fillers) == K_DEMOS - (len(needed) if shows else 0)
        for f in fillers:  # uninformative: same key, none of the question's entities
            assert _key(task, f) == key
            assert not {int(x) for x in ENTITY.findall(f)} & ents, (r["text"], f)
        if r["split"].startswith("test_incontext_"):
            assert shows
        elif r["split"].startswith("test_"):
            assert not shows
        n_informative[shows] += r["split"] == "train"
    assert n_informative[True] > 0 and n_informative[False] > 0  # train_informative = 0.5

    # the trainer's tensors: only the answer token is a target
    t = build_tensors(ds, eval_max_size=1000)
    assert ((t.y != IGNORE).sum(dim=1) == 1).all()
    assert {"test_incontext_id", "test_incontext_ood", "test_inferred_ood"} <= set(t.eval_sets)


def test_incontext_off_is_plain(tmp_path: Path) -> None:
    plain = write(tmp_path, "comparison", CMP, "plain.parquet")
    off = write(tmp_path, "comparison", {**CMP, "format": {"k_demos": 0}}, "off.parquet")
    assert off.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize(
    ("task", "params"),
    [
        ("comparison", {**CMP, "format": {"k_demos": 2}}),
        ("inverse", {**INV, "format": {"k_demos": 2, "train_informative": 0.3}}),
    ],
    ids=["comparison", "inverse"],
)
def test_same_seed_same_bytes(task: str, params: dict, tmp_path: Path) -> None:
    assert_same_seed_same_bytes(tmp_path, task, params)


BAD = [
    ("comparison", {"format": {"k_demos": 1}}, "format.k_demos"),  # fewer than the 2 needed facts
    ("comparison", {"format": {"k_demos": -1}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": 33}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": "2"}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": True}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": 2, "train_informative": 1.5}}, "format.train_informative"),
    ("comparison", {"format": {"k_demos": 2, "train_informative": "half"}}, "format.train_informative"),
    ("comparison", {"format": {"bogus": 1}}, "format.bogus"),
    ("comparison", {"format": 2}, "format"),
    ("composition", {"hops": 3, **COMP_HOPS[3], "format": {"k_demos": 2}}, "format.k_demos"),
    ("ordering", {"format": {"k_demos": 2}}, "format.k_demos"),  # not defined for ordering
]


@pytest.mark.parametrize(("task", "overrides", "name"), BAD, ids=bad_ids(BAD))
def test_bad_format_named(task: str, overrides: dict, name: str) -> None:
    assert_bad_params_named(task, {**SMALL[task], **overrides}, name)
