"""Tests of the k-hop composition task: paths re-derived by brute force from the written atomic facts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from grokbench.tasks.base import read_dataset

from .helpers import (
    COMP,
    COMP_HOPS,
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


def _all_paths(graph: dict, hops: int) -> dict[str, set]:
    """Brute force: every hops-hop path (head, relations) whose hops are all ID / all OOD."""
    out_graph: dict[int, list] = {}
    for (h, rel), (t, g) in sorted(graph.items()):
        out_graph.setdefault(h, []).append((rel, t, g))
    paths: dict[str, set] = {"id": set(), "ood": set()}
    for h in out_graph:
        stack = [(h, (), ())]
        while stack:
            e, rels, groups = stack.pop()
            if len(rels) == hops:
                if len(set(groups)) == 1:
                    paths[groups[0]].add((h, rels))
                continue
            for rel, t, g in out_graph[e]:
                stack.append((t, rels + (rel,), groups + (g,)))
    return paths


@pytest.fixture(scope="module", params=sorted(COMP_HOPS))
def comp(request, tmp_path_factory) -> tuple[dict, Path]:
    params = {**COMP, **COMP_HOPS[request.param], "hops": request.param}
    return params, write(tmp_path_factory.mktemp("comp"), "composition", params)


def test_composition(comp) -> None:
    params, path = comp
    assert_format(path, "composition")
    rows = read_rows(path)
    n, k, hops = params["n_entities"], params["n_relations_per_entity"], params["hops"]
    graph = atomic_graph(rows)
    # world: every entity has k distinct outgoing relations, a fixed share of the facts is OOD
    assert Counter(h for h, _ in graph) == {h: k for h in range(n)}
    assert all(0 <= rel < params["n_relations"] and 0 <= t < n for (_, rel), (t, _) in graph.items())
    n_ood_atomic = sum(g == "ood" for _, g in graph.values())
    assert n_ood_atomic == round(params["ood_ratio"] * n * k)
    n_id_atomic = n * k - n_ood_atomic

    paths = _all_paths(graph, hops)
    inf = by_split(rows)
    assert set(inf) == {"train", "test_inferred_id", "test_inferred_ood"}
    keys: dict[str, list] = {}
    for split, facts in inf.items():
        want = "ood" if split == "test_inferred_ood" else "id"
        keys[split] = []
        for r in facts:
            m = re.fullmatch(r"<e_(\d+)>" + r"<r_(\d+)>" * hops, r["text"])
            h, rels = int(m.group(1)), tuple(map(int, m.groups()[1:]))
            e, groups = h, set()
            for rel in rels:  # the answer follows the atomic facts
                e, g = graph[(e, rel)]
                groups.add(g)
            assert ent(r["answer"]) == e
            assert r["group"] == want and groups == {want}  # all hops ID (train, test_id) / all OOD
            keys[split].append((h, rels))
        assert len(set(keys[split])) == len(keys[split]), f"duplicates in {split}"
        assert set(keys[split]) <= paths[want]
    # counts and pools
    assert len(keys["train"]) == round(params["phi"] * n_id_atomic)
    assert len(keys["test_inferred_id"]) == len(keys["test_inferred_ood"]) == params["test_size"]
    n_train_pool = round(params["train_ratio"] * len(paths["id"]))
    pools = read_dataset(path).meta["pools"]
    assert pools == {
        "train": n_train_pool,
        "test_inferred_id": len(paths["id"]) - n_train_pool,
        "test_inferred_ood": len(paths["ood"]),
    }
    assert not set(keys["train"]) & set(keys["test_inferred_id"])


@pytest.mark.parametrize("hops", [2, 3])
def test_same_seed_same_bytes(hops: int, tmp_path: Path) -> None:
    assert_same_seed_same_bytes(tmp_path, "composition", {**COMP, **COMP_HOPS[hops], "hops": hops})


def test_int_and_float_params_are_the_same_request(tmp_path: Path) -> None:
    a = write(tmp_path, "composition", COMP, "a.parquet")
    b = write(tmp_path, "composition", {**COMP, "phi": 2}, "b.parquet")
    assert a.read_bytes() == b.read_bytes()


BAD = [
    ({"n_entities": 1}, "n_entities"),
    ({"n_entities": "60"}, "n_entities"),
    ({"n_relations": 0}, "n_relations"),
    ({"n_relations_per_entity": 0}, "n_relations_per_entity"),
    ({"n_relations_per_entity": 9}, "n_relations_per_entity"),  # > n_relations
    ({"hops": 1}, "hops"),
    ({"hops": 5}, "hops"),
    ({"hops": 2.0}, "hops"),
    ({"n_relations": 10**4, "n_relations_per_entity": 10**4, "hops": 4}, "hops"),  # overflow
    ({"ood_ratio": 0.0}, "ood_ratio"),
    ({"ood_ratio": 1.0}, "ood_ratio"),
    ({"ood_ratio": 0.001}, "ood_ratio"),  # rounds to no OOD atomic fact
    ({"ood_ratio": 0.005}, "ood_ratio"),  # one OOD fact: no all-OOD path
    ({"train_ratio": 0.0}, "train_ratio"),
    ({"train_ratio": 1.0}, "train_ratio"),
    ({"train_ratio": 0.99999}, "train_ratio"),  # no held-out ID path
    ({"phi": 0.0}, "phi"),
    ({"phi": float("nan")}, "phi"),
    ({"phi": 1e-5}, "phi"),  # rounds to no training fact
    ({"phi": 100.0}, "phi"),  # more than the training pool
    ({"test_size": 0}, "test_size"),
    ({"test_size": 10**6}, "test_size"),
    ({"seed": -1}, "seed"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize(("overrides", "name"), BAD, ids=bad_ids(BAD))
def test_bad_params_named(overrides: dict, name: str) -> None:
    assert_bad_params_named("composition", {**COMP, **overrides}, name)
