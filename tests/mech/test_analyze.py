"""The three analyses on a checkpoint file and a dataset file; the dataset side (probe rows, corruptions,
bridge targets) checked against the atomic facts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from grokbench.mech import facts as F
from grokbench.mech.analyze import TABLES, analyze_checkpoint, block_size_of, load_model
from grokbench.mech.tracing import ALL
from grokbench.models import build_model
from grokbench.tasks import generate
from grokbench.tasks.base import read_dataset, write_dataset
from grokbench.train.data import build_tensors

from ..tasks.helpers import COMP, ORD
from .helpers import perturb, spec_of

LENS = ["step", "target", "group", "layer", "position", "role", "n", "prob", "log_prob", "rank", "top1"]
PROBES = [
    "step",
    "target",
    "position",
    "layer",
    "split",
    "n",
    "accuracy",
    "control_accuracy",
    "majority_accuracy",
]
TRACING = [
    "step",
    "corrupted",
    "group",
    "layer",
    "position",
    "role",
    "n",
    "p_clean",
    "p_corrupt",
    "p_patched",
]
TRACING += ["recovery", "ld_clean", "ld_corrupt", "ld_patched", "ld_recovery"]


@pytest.fixture(scope="module")
def composition_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "composition.parquet"
    write_dataset(generate("composition", COMP), path)
    return path


def _checkpoint(tmp_path, ds, family="gpt", step=40):
    """A checkpoint file in train/run.py's layout, of a model off its init."""
    spec = spec_of(family)
    torch.manual_seed(0)
    model = perturb(build_model(spec, vocab_size=len(ds.vocab), block_size=block_size_of(ds)).eval())
    path = tmp_path / f"step{step:08d}.pt"
    torch.save({"model": model.state_dict(), "model_spec": spec, "step": step}, path)
    return path, model


@pytest.mark.parametrize("task", ["comparison", "composition"])
def test_analyze_checkpoint(task, tiny_dataset_path, composition_path, tmp_path):
    data = tiny_dataset_path if task == "comparison" else composition_path
    ds = read_dataset(data)
    assert block_size_of(ds) == build_tensors(ds, 8).block_size
    path, model = _checkpoint(tmp_path, ds)
    loaded, step = load_model(path, ds)
    idx = torch.tensor([ds.facts["input_ids"].iloc[-1]])
    with torch.no_grad():
        assert step == 40 and torch.equal(loaded(idx), model(idx))

    tables = analyze_checkpoint(path, data, max_facts=12, batch_size=8)
    assert tuple(tables) == TABLES
    lens, probes, tracing = (tables[name] for name in TABLES)
    assert list(lens.columns) == LENS and list(probes.columns) == PROBES and list(tracing.columns) == TRACING
    for df in tables.values():
        assert (df["step"] == 40).all() and not df.empty
    T = len(ds.facts[ds.facts["kind"] == "inferred"]["input_ids"].iloc[0])
    L = model.n_hidden
    assert set(lens["group"]) == set(F.EVAL_SPLITS) and (lens["n"] == 12).all()
    assert set(lens["target"]) == ({"answer"} if task == "comparison" else {"answer", "bridge"})
    assert len(lens) == len(set(lens["target"])) * 3 * L * T
    assert set(probes["split"]) == {"train", "test_id", "test_ood"} and set(probes["layer"]) == set(range(L))
    assert ((probes["accuracy"] >= 0) & (probes["accuracy"] <= 1)).all()
    corrupted = [2, 4] if task == "comparison" else [0]  # e_a and e_b; the head entity
    assert sorted(set(tracing["corrupted"])) == corrupted
    assert len(tracing) == len(corrupted) * 3 * L * (T + 1)
    assert (tracing.loc[tracing["position"] == ALL, "recovery"] == 1.0).all()  # GPT: no side channel
    assert (tracing.loc[tracing["position"] == ALL, "role"] == "all").all()
    roles = dict(zip(lens["position"], lens["role"]))
    assert all(roles[p] == f"{p}:<e_#>" for p in corrupted)


def _values(ds):
    atomic = ds.facts[ds.facts["kind"] == "atomic"]
    value = {tuple(i): ds.vocab.tokens[a[0]] for i, a in zip(atomic["input_ids"], atomic["answer_ids"])}
    group = {tuple(i): g for i, g in zip(atomic["input_ids"], atomic["group"])}
    return value, group


def test_comparison_rows(tiny_dataset_path):
    ds = read_dataset(tiny_dataset_path)
    value, group = _values(ds)
    ps = F.probe_set(ds, heldout_fraction=0.25, seed=0)
    assert ps.target == "value" and ps.position == 2 and len(ps.labels) == len(value)
    for (attr, q, e), label, split, key in zip(ps.inputs.tolist(), ps.labels, ps.split, ps.keys):
        assert ds.vocab.tokens[q] == "<q>" and key == attr
        assert ds.vocab.tokens[label] == value[e, attr]
        assert (group[e, attr] == "ood") == (split == "test_ood")
    n_id = sum(g == "id" for g in group.values())
    assert (ps.split == "test_id").sum() == round(0.25 * n_id)

    facts = F.sample_inferred(ds, max_facts=20, seed=1)
    assert F.corruption_positions(ds, facts) == [2, 4]
    num = re.compile(r"\d+")
    for position in (2, 4):
        c = F.corruptions(ds, facts, seed=0, position=position)
        assert c.position == position and c.ok.mean() > 0.5
        for clean, bad, answer, ok in zip(facts["input_ids"], c.inputs.tolist(), c.answer, c.ok):
            if not ok:
                continue
            attr, _, ea, _, eb = clean
            x = bad[position]
            assert [t for i, t in enumerate(bad) if i != position] == [
                t for i, t in enumerate(clean) if i != position
            ]
            assert x not in (ea, eb) and group[x, attr] == group[clean[position], attr]
            v = {e: int(value[e, attr][1:-1]) for e in (ea, eb, x)}
            new = (v[x], v[eb]) if position == 2 else (v[ea], v[x])
            label = int(np.sign(new[0] - new[1])) + 1
            assert label != int(np.sign(v[ea] - v[eb])) + 1
            assert num.findall(ds.vocab.tokens[answer]) == num.findall(ds.vocab.tokens[attr]) + [str(label)]
    with pytest.raises(ValueError, match="positions 2 and 4"):
        F.corruptions(ds, facts, position=3)


def test_composition_rows(composition_path):
    ds = read_dataset(composition_path)
    atomic = ds.facts[ds.facts["kind"] == "atomic"]
    tail = {tuple(i): a[0] for i, a in zip(atomic["input_ids"], atomic["answer_ids"])}
    ps = F.probe_set(ds)
    assert ps.target == "bridge" and ps.position == 1
    assert [tail[tuple(i)] for i in ps.inputs.tolist()] == ps.labels.tolist()

    facts = F.sample_inferred(ds, max_facts=15, seed=0)
    bridge = F.lens_targets(ds, facts)["bridge"]
    assert bridge.tolist() == [tail[tuple(i[:2])] for i in facts["input_ids"]]
    assert F.corruption_positions(ds, facts) == [0]
    c = F.corruptions(ds, facts, seed=0)
    assert c.position == 0 and c.ok.any()
    rows = zip(facts["input_ids"], facts["answer_ids"], c.inputs.tolist(), c.answer, c.ok)
    for clean, clean_answer, bad, answer, ok in rows:
        if ok:
            e = bad[0]
            for r in bad[1:]:
                e = tail[e, r]
            assert bad[1:] == list(clean[1:]) and bad[0] != clean[0] and e == answer != clean_answer[0]


def test_unsupported_format(tiny_dataset_path):
    ds = read_dataset(tiny_dataset_path)
    ds.meta["params"] = {**ds.meta["params"], "format": {"k_demos": 2}}
    with pytest.raises(ValueError, match="in-context"):
        F.probe_set(ds)


def test_other_task(tmp_path):
    """ordering: no probe rows (columns kept), the first entity corrupted with the model's own alternative."""
    ds = generate("ordering", ORD)
    path, _ = _checkpoint(tmp_path, ds, family="mamba")
    tables = analyze_checkpoint(path, ds, max_facts=6, batch_size=4)
    assert tables["probes"].empty and list(tables["probes"].columns) == PROBES
    assert list(tables["tracing"].columns) == TRACING and set(tables["tracing"]["corrupted"]) == {1}
    assert set(tables["logit_lens"]["role"]) == {"0:<q>", "1:<e_#>", "2:<mask>", "3:<e_#>"}
