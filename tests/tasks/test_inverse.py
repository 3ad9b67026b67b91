"""Tests of the inverse-relations task: the relations and entity groups rebuilt from the written facts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from .helpers import (
    ENTITY,
    INV,
    assert_bad_params_named,
    assert_format,
    assert_same_seed_same_bytes,
    atomic_graph,
    bad_ids,
    by_split,
    ent,
    read_rows,
    write,
)


@pytest.fixture(scope="module")
def inv_file(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("inv"), "inverse", INV)


def test_inverse(inv_file: Path) -> None:
    assert_format(inv_file, "inverse")
    rows = read_rows(inv_file)
    n, k = INV["n_entities"], INV["n_relations_per_entity"]
    graph = atomic_graph(rows)
    assert Counter(h for h, _ in graph) == {h: k for h in range(n)}
    backward = {}
    for (h, rel), (t, _) in graph.items():
        assert (t, rel) not in backward  # every relation is injective: its inverse is a function
        backward[(t, rel)] = h
    # ID entities: those in an "id" atomic fact (an "id" fact has two ID entities)
    id_ents = {e for (h, _), (t, g) in graph.items() if g == "id" for e in (h, t)}
    assert len(id_ents) == round(INV["id_ratio"] * n)
    for (h, _), (t, g) in graph.items():
        assert g == ("id" if {h, t} <= id_ents else "ood")

    inf = by_split(rows)
    assert set(inf) == {"train", "test_inferred_id", "test_inferred_ood"}
    keys = {}
    for split, facts in inf.items():
        keys[split] = []
        for r in facts:
            b, rel = map(int, re.fullmatch(r"<e_(\d+)><r_(\d+)_inv>", r["text"]).groups())
            a = ent(r["answer"])
            assert backward[(b, rel)] == a
            in_id = {a, b} <= id_ents
            if split == "test_inferred_ood":
                assert r["group"] == "ood" and not {a, b} & id_ents  # both entities OOD
            else:
                assert r["group"] == "id" and in_id
            keys[split].append((b, rel))
        assert len(set(keys[split])) == len(keys[split])
    n_id_facts = sum(g == "id" for _, g in graph.values())
    assert len(keys["train"]) == round(INV["train_ratio"] * n_id_facts)
    assert len(keys["test_inferred_id"]) == len(keys["test_inferred_ood"]) == INV["test_size"]
    assert not set(keys["train"]) & set(keys["test_inferred_id"])
    # OOD entities never appear in a training inverse fact
    ood_ents = set(range(n)) - id_ents
    assert not {e for r in inf["train"] for e in map(int, ENTITY.findall(r["text"] + r["answer"]))} & ood_ents


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    assert_same_seed_same_bytes(tmp_path, "inverse", INV)


BAD = [
    ({"n_entities": 3}, "n_entities"),
    ({"n_relations": 0}, "n_relations"),
    ({"n_relations_per_entity": 7}, "n_relations_per_entity"),
    ({"id_ratio": 1.0}, "id_ratio"),
    ({"id_ratio": 0.99}, "id_ratio"),  # one OOD entity
    ({"train_ratio": 0.0}, "train_ratio"),
    ({"train_ratio": 0.9999}, "train_ratio"),  # no held-out fact
    ({"test_size": 0}, "test_size"),
    ({"test_size": 500}, "test_size"),
    ({"seed": True}, "seed"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize(("overrides", "name"), BAD, ids=bad_ids(BAD))
def test_bad_params_named(overrides: dict, name: str) -> None:
    assert_bad_params_named("inverse", {**INV, **overrides}, name)
