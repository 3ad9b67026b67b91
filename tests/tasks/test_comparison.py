"""Tests of the comparison task generator and the shared dataset format.

The invariants are checked independently of the generator's internals: the written Parquet file is
read back with plain pyarrow, the `text` column is parsed back into entity / attribute tokens, and
the value table and the per-attribute entity groups are rebuilt from the atomic facts.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grokbench.tasks import TASKS, check_params, generate
from grokbench.tasks.base import Dataset, Vocab, read_dataset, write_dataset
from grokbench.tasks.common import nth_not_in
from grokbench.tasks.comparison import unrank_ordered, unrank_pairs

SMALL = {
    "n_entities": 30,
    "n_attributes": 3,
    "value_range": 4,
    "phi": 5.0,
    "id_ratio": 0.8,
    "test_size": 20,
    "seed": 7,
}
COLUMNS = ["split", "kind", "group", "input_ids", "answer_ids", "text", "answer"]
TOKEN = re.compile(r"<[^<>]+>")
ATOMIC = re.compile(r"<e_(\d+)><attr_(\d+)>")
INFERRED = re.compile(r"<attr_(\d+)><q><e_(\d+)><mask><e_(\d+)>")


def _write(tmp: Path, name: str, **overrides) -> Path:
    path = tmp / name
    write_dataset(generate("comparison", {**SMALL, **overrides}), path)
    return path


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("cmp"), "small.parquet")


@pytest.fixture(scope="module")
def parsed(small_file: Path) -> dict:
    """The file re-derived by parsing: value table, groups, and inferred facts per split."""
    rows = pq.read_table(small_file).to_pylist()
    n, a = SMALL["n_entities"], SMALL["n_attributes"]
    values = np.full((n, a), -1)
    groups = np.full((a, n), "", dtype=object)
    atomic_seen: Counter = Counter()
    inferred: dict[str, list[tuple[int, int, int, int, str]]] = {}
    for r in rows:
        if r["kind"] == "atomic":
            e, j = map(int, ATOMIC.fullmatch(r["text"]).groups())
            assert r["split"] == "train"
            atomic_seen[(e, j)] += 1
            values[e, j] = int(re.fullmatch(r"<(\d+)>", r["answer"]).group(1))
            groups[j, e] = r["group"]
        else:
            assert r["kind"] == "inferred"
            j, ea, eb = map(int, INFERRED.fullmatch(r["text"]).groups())
            m = re.fullmatch(r"<attr_(\d+)_([012])>", r["answer"])
            assert int(m.group(1)) == j
            inferred.setdefault(r["split"], []).append((j, ea, eb, int(m.group(2)), r["group"]))
    return {
        "rows": rows,
        "values": values,
        "groups": groups,
        "atomic_seen": atomic_seen,
        "inferred": inferred,
    }


def _keys(facts) -> list[tuple[int, int, int]]:
    return [(j, ea, eb) for j, ea, eb, _, _ in facts]


# --- file format ---------------------------------------------------------------------------------


def test_schema_and_vocab(small_file: Path) -> None:
    table = pq.read_table(small_file)
    assert table.column_names == COLUMNS
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("answer_ids").type == pa.list_(pa.int32())
    assert table.schema.metadata[b"grokbench.meta"]
    ds = read_dataset(small_file)
    n, a, r = SMALL["n_entities"], SMALL["n_attributes"], SMALL["value_range"]
    expected = ["<pad>", "<mask>", "<sep>", "<a>", "</a>", "<q>", "</q>"]
    expected += [f"<e_{i}>" for i in range(n)] + [f"<attr_{j}>" for j in range(a)]
    expected += [f"<{v}>" for v in range(r)]
    expected += [f"<attr_{j}_{k}>" for j in range(a) for k in range(3)]
    assert ds.vocab.tokens == expected
    assert ds.meta["task"] == "comparison"
    assert ds.meta["params"] == {**SMALL, "val_size": 0}  # every parameter, defaults included
    assert ds.meta["generator_version"]


def test_ids_match_text(parsed: dict, small_file: Path) -> None:
    vocab = read_dataset(small_file).vocab
    for r in parsed["rows"]:
        assert vocab.decode(r["input_ids"]) == TOKEN.findall(r["text"])
        assert vocab.decode(r["answer_ids"]) == TOKEN.findall(r["answer"])
        assert "".join(TOKEN.findall(r["text"])) == r["text"]


# --- task invariants -----------------------------------------------------------------------------


def test_every_atomic_fact_trained_once(parsed: dict) -> None:
    n, a = SMALL["n_entities"], SMALL["n_attributes"]
    assert set(parsed["atomic_seen"]) == {(e, j) for e in range(n) for j in range(a)}
    assert set(parsed["atomic_seen"].values()) == {1}
    assert ((parsed["values"] >= 0) & (parsed["values"] < SMALL["value_range"])).all()


def test_groups_per_attribute(parsed: dict) -> None:
    n_id = round(SMALL["id_ratio"] * SMALL["n_entities"])
    for row in parsed["groups"]:
        assert Counter(row) == {"id": n_id, "ood": SMALL["n_entities"] - n_id}
    # the split is drawn independently per attribute
    assert len({tuple(row) for row in parsed["groups"]}) > 1


def test_labels_agree_with_values(parsed: dict) -> None:
    v = parsed["values"]
    for facts in parsed["inferred"].values():
        for j, ea, eb, k, _ in facts:
            assert ea != eb
            assert k == (0 if v[ea, j] < v[eb, j] else 1 if v[ea, j] == v[eb, j] else 2)


def test_split_membership_and_groups(parsed: dict) -> None:
    g = parsed["groups"]
    inf = parsed["inferred"]
    assert set(inf) == {"train", "test_inferred_id", "test_inferred_ood"}
    for split, want in [("train", "id"), ("test_inferred_id", "id"), ("test_inferred_ood", "ood")]:
        for j, ea, eb, _, group in inf[split]:
            assert group == want
            assert g[j, ea] == want and g[j, eb] == want  # never a mixed or OOD pair in train


def test_counts(parsed: dict) -> None:
    n_id_atomic = int((parsed["groups"] == "id").sum())
    inf = parsed["inferred"]
    assert len(inf["train"]) == round(SMALL["phi"] * n_id_atomic)
    assert len(inf["test_inferred_id"]) == SMALL["test_size"]
    assert len(inf["test_inferred_ood"]) == SMALL["test_size"]


def test_no_leakage(parsed: dict) -> None:
    inf = parsed["inferred"]
    train = set(_keys(inf["train"]))
    test_id = set(_keys(inf["test_inferred_id"]))
    test_ood = set(_keys(inf["test_inferred_ood"]))
    for s in inf:
        assert len(set(_keys(inf[s]))) == len(inf[s]), f"duplicate facts in {s}"
    assert not train & test_id
    assert not train & test_ood
    assert not test_id & test_ood
    # held-out pairs are held out in both orders, as in the reference
    assert not {(j, eb, ea) for j, ea, eb in test_id} & train


def test_paper_size_counts() -> None:
    params = {"n_entities": 1000, "n_attributes": 20, "value_range": 20, "phi": 12.6}
    ds = generate("comparison", {**params, "test_size": 3000})
    counts = ds.facts.groupby(["split", "kind"]).size().to_dict()
    assert counts == {
        ("train", "atomic"): 20000,
        ("train", "inferred"): 226800,  # 246,800 training facts in all (ANCHORS section 1)
        ("test_inferred_id", "inferred"): 3000,
        ("test_inferred_ood", "inferred"): 3000,
    }
    assert len(ds.vocab) == 1107


# --- determinism and hashing ---------------------------------------------------------------------


def test_same_seed_same_bytes(tmp_path: Path, small_file: Path) -> None:
    again = _write(tmp_path, "again.parquet")
    assert again.read_bytes() == small_file.read_bytes()
    as_int = _write(tmp_path, "int_phi.parquet", phi=5)  # 5 and 5.0 are the same request
    assert as_int.read_bytes() == small_file.read_bytes()


def test_other_seed_other_bytes(tmp_path: Path, small_file: Path) -> None:
    other = _write(tmp_path, "other.parquet", seed=8)
    assert other.read_bytes() != small_file.read_bytes()
    assert read_dataset(other).meta["content_hash"] != read_dataset(small_file).meta["content_hash"]


def test_round_trip(tmp_path: Path) -> None:
    ds = generate("comparison", SMALL)
    path = tmp_path / "rt.parquet"
    write_dataset(ds, path)
    back = read_dataset(path)
    assert back.vocab == ds.vocab
    assert back.meta == ds.meta
    assert back.facts.equals(ds.facts)
    assert list(back.facts.columns) == COLUMNS
    write_dataset(back, tmp_path / "rt2.parquet")
    assert (tmp_path / "rt2.parquet").read_bytes() == path.read_bytes()


def test_modified_content_detected(tmp_path: Path, small_file: Path) -> None:
    table = pq.read_table(small_file)
    answers = table.column("answer").to_pylist()
    answers[0] = "<0>" if answers[0] != "<0>" else "<1>"
    idx = table.column_names.index("answer")
    tampered = table.set_column(idx, table.schema.field(idx), pa.array(answers, pa.string()))
    path = tmp_path / "tampered.parquet"
    pq.write_table(tampered, path)
    with pytest.raises(ValueError, match="hash") as e:
        read_dataset(path)
    assert str(path) in str(e.value)


def test_corrupt_meta_hash_detected(tmp_path: Path, small_file: Path) -> None:
    table = pq.read_table(small_file)
    md = dict(table.schema.metadata)
    md[b"grokbench.meta"] = md[b"grokbench.meta"].replace(b'"content_hash":"', b'"content_hash":"0')
    path = tmp_path / "badmeta.parquet"
    pq.write_table(table.replace_schema_metadata(md), path)
    with pytest.raises(ValueError, match="hash"):
        read_dataset(path)


def test_not_a_dataset(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), plain)
    with pytest.raises(ValueError, match="not a grokbench dataset") as e:
        read_dataset(plain)
    assert str(plain) in str(e.value)
    text = tmp_path / "text.parquet"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a grokbench dataset"):
        read_dataset(text)


# --- parameter validation ------------------------------------------------------------------------

BAD = [
    ({"n_entities": "200"}, "n_entities"),
    ({"n_entities": 3.5}, "n_entities"),
    ({"n_entities": True}, "n_entities"),
    ({"n_entities": 3}, "n_entities"),
    ({"n_attributes": 0}, "n_attributes"),
    ({"value_range": 1}, "value_range"),
    ({"phi": "45"}, "phi"),
    ({"phi": 0.0}, "phi"),
    ({"phi": -1.0}, "phi"),
    ({"phi": float("nan")}, "phi"),
    ({"phi": 1e-4}, "phi"),  # rounds to zero training facts
    ({"phi": 1000.0}, "phi"),  # more than the training pool
    ({"id_ratio": 0.0}, "id_ratio"),
    ({"id_ratio": 1.0}, "id_ratio"),
    ({"id_ratio": 1.5}, "id_ratio"),
    ({"id_ratio": 0.98}, "id_ratio"),  # one OOD entity per attribute
    ({"id_ratio": 0.04}, "id_ratio"),  # one ID entity per attribute
    ({"test_size": 0}, "test_size"),
    ({"test_size": 10**6}, "test_size"),
    ({"test_size": 100}, "test_size"),  # OOD pool: 6 * 5 * 3 = 90 ordered pairs
    ({"seed": -1}, "seed"),
    ({"seed": 1.0}, "seed"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize(("overrides", "name"), BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_params_named(overrides: dict, name: str) -> None:
    params = {**SMALL, **overrides}
    for call in (check_params, generate):
        with pytest.raises(ValueError) as e:
            call("comparison", params)
        assert re.match(rf"{name}\b", str(e.value)), str(e.value)


def test_good_params_pass() -> None:
    check_params("comparison", {})
    check_params("comparison", SMALL)
    check_params("comparison", {"n_entities": 1000, "n_attributes": 20, "value_range": 20})


def test_phi_message_gives_numbers() -> None:
    with pytest.raises(ValueError, match=r"^phi=1000.0: asks for 72000 training inferred") as e:
        check_params("comparison", {**SMALL, "phi": 1000.0})
    assert "n_entities=30" in str(e.value)


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="'nope'") as e:
        generate("nope", {})
    assert "comparison" in str(e.value)
    with pytest.raises(ValueError, match="'nope'"):
        check_params("nope", {})
    assert "comparison" in TASKS


# --- building blocks -----------------------------------------------------------------------------


def test_vocab() -> None:
    v = Vocab(["<pad>", "<a>", "<b>"])
    assert len(v) == 3 and v.id("<pad>") == 0
    assert v.encode(["<b>", "<a>"]) == [2, 1]
    assert v.decode([2, 1]) == ["<b>", "<a>"]
    with pytest.raises(KeyError):
        v.id("<c>")
    with pytest.raises(ValueError):
        Vocab(["<a>", "<pad>"])
    with pytest.raises(ValueError):
        Vocab(["<pad>", "<a>", "<a>"])


def test_dataset_rejects_wrong_columns() -> None:
    ds = generate("comparison", SMALL)
    with pytest.raises(ValueError, match="columns"):
        Dataset(ds.facts[COLUMNS[::-1]], ds.vocab, ds.meta)


@pytest.mark.parametrize("n", [2, 3, 7, 12, 1001])
def test_unrank_pairs(n: int) -> None:
    i, j = unrank_pairs(np.arange(n * (n - 1) // 2), n)
    ri, rj = np.triu_indices(n, 1)  # lexicographic (i, j), i < j
    assert (i == ri).all() and (j == rj).all()
    oi, oj = unrank_ordered(np.arange(n * (n - 1)), n)
    ri, rj = np.nonzero(~np.eye(n, dtype=bool))  # lexicographic (i, j), i != j
    assert (oi == ri).all() and (oj == rj).all()
    if n < 10:
        pairs = list(zip(i.tolist(), j.tolist(), strict=True))
        assert pairs == list(itertools.combinations(range(n), 2))


def test_nth_not_in() -> None:
    rng = np.random.default_rng(0)
    excluded = np.sort(rng.choice(200, size=37, replace=False))
    rest = np.setdiff1d(np.arange(200), excluded)
    assert (nth_not_in(np.arange(len(rest)), excluded) == rest).all()
