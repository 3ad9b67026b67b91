"""Shared by the task tests: small parameters of every task, and checks that read a written dataset back.

Every invariant is re-derived from the written Parquet file: the hidden structure (graph, order, entity
groups) is rebuilt from the atomic facts and the `text` column, without the generators' internals.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grokbench.tasks import GENERATOR_VERSIONS, check_params, generate
from grokbench.tasks.base import read_dataset, write_dataset

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


def write(tmp: Path, task: str, params: dict, name: str = "d.parquet") -> Path:
    path = tmp / name
    write_dataset(generate(task, params), path)
    return path


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def ent(tok: str) -> int:
    return int(re.fullmatch(r"<e_(\d+)>", tok).group(1))


def by_split(rows: list[dict]) -> dict[str, list[dict]]:
    """The inferred rows of each split."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "inferred":
            out.setdefault(r["split"], []).append(r)
    return out


def assert_format(path: Path, task: str) -> None:
    """Columns, token ids that spell the text, one answer token, atomic facts only in train."""
    ds = read_dataset(path)
    assert ds.meta["task"] == task
    assert ds.meta["generator_version"].startswith(GENERATOR_VERSIONS[task])
    for r in read_rows(path):
        assert ds.vocab.decode(r["input_ids"]) == TOKEN.findall(r["text"])
        assert ds.vocab.decode(r["answer_ids"]) == TOKEN.findall(r["answer"])
        assert "".join(TOKEN.findall(r["text"])) == r["text"]
        assert len(r["answer_ids"]) == 1
        assert r["kind"] == "inferred" or r["split"] == "train"
        assert r["group"] in ("id", "ood")


def atomic_graph(rows: list[dict]) -> dict[tuple[int, int], tuple[int, str]]:
    """(head, relation) -> (tail, group), from the atomic facts `<e_h><r_j>` -> `<e_t>`; each once."""
    out: dict[tuple[int, int], tuple[int, str]] = {}
    for r in rows:
        if r["kind"] == "atomic":
            h, rel = map(int, re.fullmatch(r"<e_(\d+)><r_(\d+)>", r["text"]).groups())
            assert (h, rel) not in out
            out[(h, rel)] = (ent(r["answer"]), r["group"])
    return out


def assert_same_seed_same_bytes(tmp: Path, task: str, params: dict) -> None:
    """The same parameters (in any key order) give the same file; the next seed another one."""
    a = write(tmp, task, params, "a.parquet")
    b = write(tmp, task, dict(reversed(params.items())), "b.parquet")
    assert a.read_bytes() == b.read_bytes()
    c = write(tmp, task, {**params, "seed": params.get("seed", 0) + 1}, "c.parquet")
    assert c.read_bytes() != a.read_bytes()


def assert_bad_params_named(task: str, params: dict, name: str) -> None:
    """Both checking and generating reject `params` with a ValueError that starts with `name`."""
    for call in (check_params, generate):
        with pytest.raises(ValueError) as e:
            call(task, params)
        assert re.match(rf"{re.escape(name)}\b", str(e.value)), str(e.value)


def bad_ids(bad: list[tuple]) -> list[str]:
    """Test ids of bad-parameter cases ([task,] overrides, name): the task and name, and the position."""
    return ["-".join([*(x for x in case if isinstance(x, str)), str(i)]) for i, case in enumerate(bad)]
