"""Tests of the transitive ordering task: the hidden order rebuilt from the written adjacent facts."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from .helpers import (
    ORD,
    assert_bad_params_named,
    assert_format,
    assert_same_seed_same_bytes,
    bad_ids,
    by_split,
    read_rows,
    write,
)


def _pair(text: str) -> tuple[int, int]:
    a, b = map(int, re.fullmatch(r"<q><e_(\d+)><mask><e_(\d+)>", text).groups())
    return a, b


@pytest.fixture(scope="module")
def ord_file(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("ord"), "ordering", ORD)


def test_ordering(ord_file: Path) -> None:
    assert_format(ord_file, "ordering")
    rows = read_rows(ord_file)
    n, d = ORD["n_entities"], ORD["train_distance"]
    atomic = [(*_pair(r["text"]), r["answer"], r["group"]) for r in rows if r["kind"] == "atomic"]
    # the atomic facts chain the entities: rebuild the hidden order from the "<lt>" facts
    succ = {a: b for a, b, lab, _ in atomic if lab == "<lt>"}
    assert len(succ) == n - 1 and len(atomic) == 2 * (n - 1)
    first = (set(range(n)) - set(succ.values())).pop()
    order = [first]
    while order[-1] in succ:
        order.append(succ[order[-1]])
    assert sorted(order) == list(range(n))
    rank = {e: i for i, e in enumerate(order)}
    # every adjacent pair in both orders, nothing else
    assert {(a, b) for a, b, _, _ in atomic} == {
        p for i in range(n - 1) for p in ((order[i], order[i + 1]), (order[i + 1], order[i]))
    }

    inf = by_split(rows)
    assert set(inf) == {"train", "test_inferred_id", "test_inferred_ood", "test_near_ood"}
    # ID entities: those in ID questions; their number is the parameter's
    id_ents = {e for s in ("train", "test_inferred_id") for r in inf[s] for e in _pair(r["text"])}
    assert len(id_ents) == round(ORD["id_ratio"] * n)
    for a, b, lab, group in atomic:
        assert lab == ("<lt>" if rank[a] < rank[b] else "<gt>")
        assert group == ("id" if {a, b} <= id_ents else "ood")

    pairs = {}
    for split, facts in inf.items():
        pairs[split] = [_pair(r["text"]) for r in facts]
        assert len(set(pairs[split])) == len(facts), f"duplicates in {split}"
        for r, (a, b) in zip(facts, pairs[split]):
            assert r["answer"] == ("<lt>" if rank[a] < rank[b] else "<gt>")
            assert r["group"] == ("ood" if split.endswith("_ood") else "id")

    def brute(lo: int, hi: int, both_id: bool) -> set:
        return {
            (a, b)
            for a, b in itertools.permutations(range(n), 2)
            if lo <= abs(rank[a] - rank[b]) <= hi and ({a, b} <= id_ents) == both_id
        }

    assert set(pairs["train"]) == brute(2, d, True)  # all near ID pairs, both orders
    assert set(pairs["test_inferred_id"]) <= brute(d + 1, n, True)
    assert set(pairs["test_inferred_ood"]) <= brute(d + 1, n, False)
    near_ood = brute(2, d, False)
    assert set(pairs["test_near_ood"]) <= near_ood
    assert len(pairs["test_inferred_id"]) == len(pairs["test_inferred_ood"]) == ORD["test_size"]
    assert len(pairs["test_near_ood"]) == min(ORD["test_size"], len(near_ood))
    # OOD entities are seen in training only in their adjacent (atomic) facts
    assert not {e for p in pairs["train"] for e in p} - id_ents


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    assert_same_seed_same_bytes(tmp_path, "ordering", ORD)


BAD = [
    ({"n_entities": 3}, "n_entities"),
    ({"n_entities": 40.0}, "n_entities"),
    ({"train_distance": 1}, "train_distance"),
    ({"train_distance": 39}, "train_distance"),  # no far pair left
    ({"id_ratio": 0.0}, "id_ratio"),
    ({"id_ratio": 1.0}, "id_ratio"),
    ({"id_ratio": 0.99}, "id_ratio"),  # no OOD entity
    ({"id_ratio": 0.02}, "id_ratio"),  # one ID entity
    ({"test_size": 0}, "test_size"),
    ({"test_size": 10**5}, "test_size"),
    ({"seed": -2}, "seed"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize(("overrides", "name"), BAD, ids=bad_ids(BAD))
def test_bad_params_named(overrides: dict, name: str) -> None:
    assert_bad_params_named("ordering", {**ORD, **overrides}, name)
