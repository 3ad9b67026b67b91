"""Tests of the composition (k-hop), ordering and inverse tasks and of the in-context format.

As for the comparison task, every invariant is re-derived from the written Parquet file: the hidden
structure (graph, order, entity groups) is rebuilt from the atomic facts and the `text` column, and
the questions are answered and classified by brute force, without the generators' internals.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grokbench.tasks import GENERATOR_VERSIONS, TASKS, check_params, generate
from grokbench.tasks.base import read_dataset, write_dataset
from grokbench.train.data import IGNORE, build_tensors

COMP = {
    "n_entities": 60,
    "n_relations": 8,
    "n_relations_per_entity": 4,
    "hops": 2,
    "ood_ratio": 0.25,
    "train_ratio": 0.9,
    "phi": 2.0,
    "test_size": 20,
    "seed": 3,
}
COMP_HOPS = {  # hops -> overrides that keep the pools large enough and the brute force small
    2: {},
    3: {"n_entities": 40, "n_relations_per_entity": 3, "ood_ratio": 0.4, "phi": 1.5, "test_size": 15},
    4: {"n_entities": 30, "n_relations_per_entity": 3, "ood_ratio": 0.5, "phi": 2.0, "test_size": 10},
}
ORD = {"n_entities": 40, "train_distance": 3, "id_ratio": 0.75, "test_size": 30, "seed": 1}
INV = {
    "n_entities": 100,
    "n_relations": 6,
    "n_relations_per_entity": 4,
    "id_ratio": 0.7,
    "train_ratio": 0.8,
    "test_size": 20,
    "seed": 2,
}
CMP = {"n_entities": 30, "n_attributes": 3, "value_range": 4, "phi": 5.0, "id_ratio": 0.8, "test_size": 20}
SMALL = {"composition": COMP, "ordering": ORD, "inverse": INV, "comparison": CMP}
TOKEN = re.compile(r"<[^<>]+>")
ENTITY = re.compile(r"<e_(\d+)>")


def _write(tmp: Path, task: str, params: dict, name: str = "d.parquet") -> Path:
    path = tmp / name
    write_dataset(generate(task, params), path)
    return path


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _ent(tok: str) -> int:
    return int(re.fullmatch(r"<e_(\d+)>", tok).group(1))


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "inferred":
            out.setdefault(r["split"], []).append(r)
    return out


def _assert_format(path: Path, task: str) -> None:
    """Columns, token ids that spell the text, one answer token, atomic facts only in train."""
    ds = read_dataset(path)
    assert ds.meta["task"] == task
    assert ds.meta["generator_version"].startswith(GENERATOR_VERSIONS[task])
    for r in _rows(path):
        assert ds.vocab.decode(r["input_ids"]) == TOKEN.findall(r["text"])
        assert ds.vocab.decode(r["answer_ids"]) == TOKEN.findall(r["answer"])
        assert "".join(TOKEN.findall(r["text"])) == r["text"]
        assert len(r["answer_ids"]) == 1
        assert r["kind"] == "inferred" or r["split"] == "train"
        assert r["group"] in ("id", "ood")


# --- composition ---------------------------------------------------------------------------------


def _graph(rows: list[dict]) -> dict[tuple[int, int], tuple[int, str]]:
    """(head, relation) -> (tail, group), from the atomic facts; each (head, relation) once."""
    graph: dict[tuple[int, int], tuple[int, str]] = {}
    for r in rows:
        if r["kind"] == "atomic":
            h, rel = map(int, re.fullmatch(r"<e_(\d+)><r_(\d+)>", r["text"]).groups())
            assert (h, rel) not in graph
            graph[(h, rel)] = (_ent(r["answer"]), r["group"])
    return graph


def _all_paths(graph: dict, hops: int) -> dict[str, set]:
    """Brute force: every hops-hop path (head, relations) whose hops are all ID / all OOD."""
    out_edges: dict[int, list] = {}
    for (h, rel), (t, g) in sorted(graph.items()):
        out_edges.setdefault(h, []).append((rel, t, g))
    paths: dict[str, set] = {"id": set(), "ood": set()}
    for h in out_edges:
        stack = [(h, (), ())]
        while stack:
            e, rels, groups = stack.pop()
            if len(rels) == hops:
                if len(set(groups)) == 1:
                    paths[groups[0]].add((h, rels))
                continue
            for rel, t, g in out_edges[e]:
                stack.append((t, rels + (rel,), groups + (g,)))
    return paths


@pytest.fixture(scope="module", params=sorted(COMP_HOPS))
def comp(request, tmp_path_factory) -> tuple[dict, Path]:
    params = {**COMP, **COMP_HOPS[request.param], "hops": request.param}
    return params, _write(tmp_path_factory.mktemp("comp"), "composition", params)


def test_composition(comp) -> None:
    params, path = comp
    _assert_format(path, "composition")
    rows = _rows(path)
    n, k, hops = params["n_entities"], params["n_relations_per_entity"], params["hops"]
    graph = _graph(rows)
    # world: every entity has k distinct outgoing relations, a fixed share of the facts is OOD
    assert Counter(h for h, _ in graph) == {h: k for h in range(n)}
    assert all(0 <= rel < params["n_relations"] and 0 <= t < n for (_, rel), (t, _) in graph.items())
    n_ood_atomic = sum(g == "ood" for _, g in graph.values())
    assert n_ood_atomic == round(params["ood_ratio"] * n * k)
    n_id_atomic = n * k - n_ood_atomic

    paths = _all_paths(graph, hops)
    inf = _by_split(rows)
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
            assert _ent(r["answer"]) == e
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


# --- ordering ------------------------------------------------------------------------------------


def _pair(text: str) -> tuple[int, int]:
    a, b = map(int, re.fullmatch(r"<q><e_(\d+)><mask><e_(\d+)>", text).groups())
    return a, b


@pytest.fixture(scope="module")
def ord_file(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("ord"), "ordering", ORD)


def test_ordering(ord_file: Path) -> None:
    _assert_format(ord_file, "ordering")
    rows = _rows(ord_file)
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

    inf = _by_split(rows)
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


# --- inverse -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inv_file(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("inv"), "inverse", INV)


def test_inverse(inv_file: Path) -> None:
    _assert_format(inv_file, "inverse")
    rows = _rows(inv_file)
    n, k = INV["n_entities"], INV["n_relations_per_entity"]
    graph = _graph(rows)
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

    inf = _by_split(rows)
    assert set(inf) == {"train", "test_inferred_id", "test_inferred_ood"}
    keys = {}
    for split, facts in inf.items():
        keys[split] = []
        for r in facts:
            b, rel = map(int, re.fullmatch(r"<e_(\d+)><r_(\d+)_inv>", r["text"]).groups())
            a = _ent(r["answer"])
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


# --- in-context format ---------------------------------------------------------------------------

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
    path = _write(tmp_path, task, params)
    plain = _rows(_write(tmp_path, task, SMALL[task], "plain.parquet"))
    _assert_format(path, task)
    rows = _rows(path)
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
    plain = _write(tmp_path, "comparison", CMP, "plain.parquet")
    off = _write(tmp_path, "comparison", {**CMP, "format": {"k_demos": 0}}, "off.parquet")
    assert off.read_bytes() == plain.read_bytes()


# --- determinism ---------------------------------------------------------------------------------

DETERMINISM = [
    ("composition", COMP),
    ("composition", {**COMP, **COMP_HOPS[3], "hops": 3}),
    ("ordering", ORD),
    ("inverse", INV),
    ("comparison", {**CMP, "format": {"k_demos": 2}}),
    ("inverse", {**INV, "format": {"k_demos": 2, "train_informative": 0.3}}),
]


@pytest.mark.parametrize(("task", "params"), DETERMINISM, ids=[t for t, _ in DETERMINISM])
def test_same_seed_same_bytes(task: str, params: dict, tmp_path: Path) -> None:
    a = _write(tmp_path, task, params, "a.parquet")
    b = _write(tmp_path, task, dict(reversed(params.items())), "b.parquet")
    assert a.read_bytes() == b.read_bytes()
    c = _write(tmp_path, task, {**params, "seed": params.get("seed", 0) + 1}, "c.parquet")
    assert c.read_bytes() != a.read_bytes()


def test_int_and_float_params_are_the_same_request(tmp_path: Path) -> None:
    a = _write(tmp_path, "composition", COMP, "a.parquet")
    b = _write(tmp_path, "composition", {**COMP, "phi": 2}, "b.parquet")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("task", ["comparison", "composition", "ordering", "inverse"])
def test_validation_split(task: str) -> None:
    """val_size > 0 adds `val_inferred_ood`: OOD questions disjoint from the test and training ones;
    val_size 0 (the default) leaves the dataset as it was."""
    params = SMALL[task]
    plain = generate(task, params)
    assert generate(task, {**params, "val_size": 0}).meta["content_hash"] == plain.meta["content_hash"]
    assert "val_inferred_ood" not in set(plain.facts["split"])
    ds = generate(task, {**params, "val_size": 7})
    facts = ds.facts
    val, test = facts[facts["split"] == "val_inferred_ood"], facts[facts["split"] == "test_inferred_ood"]
    assert len(val) == 7 and len(test) == len(plain.facts.query("split == 'test_inferred_ood'"))
    assert set(val["group"]) == {"ood"} and set(val["kind"]) == {"inferred"}
    questions = set(facts.loc[facts["split"] != "val_inferred_ood", "text"])
    assert not set(val["text"]) & questions  # never a test or training question
    assert set(facts["split"]) - set(plain.facts["split"]) == {"val_inferred_ood"}


def test_registry() -> None:
    assert {"comparison", "composition", "ordering", "inverse"} <= set(TASKS)
    assert set(TASKS) == set(GENERATOR_VERSIONS)
    for task in ("composition", "ordering", "inverse"):
        check_params(task, {})  # the defaults are feasible
        check_params(task, SMALL[task])


# --- parameter validation ------------------------------------------------------------------------

BAD = [
    ("composition", {"n_entities": 1}, "n_entities"),
    ("composition", {"n_entities": "60"}, "n_entities"),
    ("composition", {"n_relations": 0}, "n_relations"),
    ("composition", {"n_relations_per_entity": 0}, "n_relations_per_entity"),
    ("composition", {"n_relations_per_entity": 9}, "n_relations_per_entity"),  # > n_relations
    ("composition", {"hops": 1}, "hops"),
    ("composition", {"hops": 5}, "hops"),
    ("composition", {"hops": 2.0}, "hops"),
    ("composition", {"n_relations": 10**4, "n_relations_per_entity": 10**4, "hops": 4}, "hops"),  # overflow
    ("composition", {"ood_ratio": 0.0}, "ood_ratio"),
    ("composition", {"ood_ratio": 1.0}, "ood_ratio"),
    ("composition", {"ood_ratio": 0.001}, "ood_ratio"),  # rounds to no OOD atomic fact
    ("composition", {"ood_ratio": 0.005}, "ood_ratio"),  # one OOD fact: no all-OOD path
    ("composition", {"train_ratio": 0.0}, "train_ratio"),
    ("composition", {"train_ratio": 1.0}, "train_ratio"),
    ("composition", {"train_ratio": 0.99999}, "train_ratio"),  # no held-out ID path
    ("composition", {"phi": 0.0}, "phi"),
    ("composition", {"phi": float("nan")}, "phi"),
    ("composition", {"phi": 1e-5}, "phi"),  # rounds to no training fact
    ("composition", {"phi": 100.0}, "phi"),  # more than the training pool
    ("composition", {"test_size": 0}, "test_size"),
    ("composition", {"test_size": 10**6}, "test_size"),
    ("composition", {"seed": -1}, "seed"),
    ("composition", {"bogus": 1}, "bogus"),
    ("ordering", {"n_entities": 3}, "n_entities"),
    ("ordering", {"n_entities": 40.0}, "n_entities"),
    ("ordering", {"train_distance": 1}, "train_distance"),
    ("ordering", {"train_distance": 39}, "train_distance"),  # no far pair left
    ("ordering", {"id_ratio": 0.0}, "id_ratio"),
    ("ordering", {"id_ratio": 1.0}, "id_ratio"),
    ("ordering", {"id_ratio": 0.99}, "id_ratio"),  # no OOD entity
    ("ordering", {"id_ratio": 0.02}, "id_ratio"),  # one ID entity
    ("ordering", {"test_size": 0}, "test_size"),
    ("ordering", {"test_size": 10**5}, "test_size"),
    ("ordering", {"seed": -2}, "seed"),
    ("ordering", {"bogus": 1}, "bogus"),
    ("inverse", {"n_entities": 3}, "n_entities"),
    ("inverse", {"n_relations": 0}, "n_relations"),
    ("inverse", {"n_relations_per_entity": 7}, "n_relations_per_entity"),
    ("inverse", {"id_ratio": 1.0}, "id_ratio"),
    ("inverse", {"id_ratio": 0.99}, "id_ratio"),  # one OOD entity
    ("inverse", {"train_ratio": 0.0}, "train_ratio"),
    ("inverse", {"train_ratio": 0.9999}, "train_ratio"),  # no held-out fact
    ("inverse", {"test_size": 0}, "test_size"),
    ("inverse", {"test_size": 500}, "test_size"),
    ("inverse", {"seed": True}, "seed"),
    ("inverse", {"bogus": 1}, "bogus"),
    ("comparison", {"format": {"k_demos": 1}}, "format.k_demos"),  # fewer than the 2 needed facts
    ("comparison", {"format": {"k_demos": -1}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": 33}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": "2"}}, "format.k_demos"),
    ("comparison", {"format": {"k_demos": 2, "train_informative": 1.5}}, "format.train_informative"),
    ("comparison", {"format": {"bogus": 1}}, "format.bogus"),
    ("comparison", {"format": 2}, "format"),
    ("composition", {"hops": 3, **COMP_HOPS[3], "format": {"k_demos": 2}}, "format.k_demos"),
    ("ordering", {"format": {"k_demos": 2}}, "format.k_demos"),  # not defined for ordering
    *((task, {"val_size": v}, "val_size") for task in SMALL for v in (-1, 10**6)),  # negative; too many
]


@pytest.mark.parametrize(
    ("task", "overrides", "name"), BAD, ids=[f"{t}-{n}-{i}" for i, (t, _, n) in enumerate(BAD)]
)
def test_bad_params_named(task: str, overrides: dict, name: str) -> None:
    params = {**SMALL[task], **overrides}
    for call in (check_params, generate):
        with pytest.raises(ValueError) as e:
            call(task, params)
        assert re.match(rf"{re.escape(name)}\b", str(e.value)), str(e.value)
