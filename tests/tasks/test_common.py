"""Tests of what every task shares: the registry, parameters parsed through `grokbench.params` with
errors that start with the parameter's name, and the validation split `val_inferred_ood`."""

from __future__ import annotations

import pytest

from grokbench.tasks import CHECKS, GENERATOR_VERSIONS, TASKS, check_params, generate
from grokbench.tasks.common import parse
from grokbench.tasks.incontext import FormatParams

from .helpers import SMALL, assert_bad_params_named, bad_ids


def test_registry() -> None:
    assert {"comparison", "composition", "ordering", "inverse"} <= set(TASKS)
    assert set(TASKS) == set(GENERATOR_VERSIONS)
    for task in ("composition", "ordering", "inverse"):
        check_params(task, {})  # the defaults are feasible
        check_params(task, SMALL[task])


@pytest.mark.parametrize("task", sorted(SMALL))
def test_parsed_params(task: str) -> None:
    """Every parameter, defaults included, ints given for floats stored as floats."""
    p = CHECKS[task](SMALL[task])  # the task module's check_params: the parsed parameters
    floats = {k for k, v in SMALL[task].items() if isinstance(v, float)}
    as_ints = {k: int(SMALL[task][k]) for k in floats if SMALL[task][k] == int(SMALL[task][k])}
    assert CHECKS[task]({**SMALL[task], **as_ints}) == p
    assert all(isinstance(getattr(p, k), float) for k in floats)
    assert p.val_size == 0 and p.seed == SMALL[task].get("seed", 0)


def test_parse_names_the_key() -> None:
    with pytest.raises(
        ValueError, match=r"^bogus: unknown key; expected one of \['k_demos', 'train_informative'\]$"
    ):
        parse(FormatParams, {"bogus": 1})
    with pytest.raises(ValueError, match=r"^format\.bogus: unknown key; expected one of \['k_demos'"):
        parse(FormatParams, {"bogus": 1}, "format")
    with pytest.raises(ValueError, match=r"^k_demos=True: expected int, got bool$"):
        parse(FormatParams, {"k_demos": True})
    with pytest.raises(ValueError, match=r"^format\.k_demos='2': expected int, got str$"):
        parse(FormatParams, {"k_demos": "2"}, "format")
    with pytest.raises(ValueError, match=r"^format: expected a mapping, got int$"):
        parse(FormatParams, 2, "format")
    assert parse(FormatParams, {"train_informative": 1}) == FormatParams(train_informative=1.0)


@pytest.mark.parametrize(
    ("overrides", "start", "end"),
    [
        ({"n_entities": "30"}, "n_entities='30': expected int", "got str"),
        ({"n_entities": True}, "n_entities=True: expected int", "got bool"),
        ({"phi": True}, "phi=True: expected a", "got bool"),
        ({"phi": float("inf")}, "phi=inf: expected a finite number", "got float"),
        ({"seed": 1.0}, "seed=1.0: expected int", "got float"),
        (
            {"n_entites": 30},
            "n_entites: unknown key; expected one of ['id_ratio', 'n_attributes', 'n_entities'",
            "]",
        ),
    ],
)
def test_wrong_type_or_key_named(overrides: dict, start: str, end: str) -> None:
    """The parameter and its value first (the config prefixes its path), then what was expected."""
    for call in (check_params, generate):
        with pytest.raises(ValueError) as e:
            call("comparison", {**SMALL["comparison"], **overrides})
        assert str(e.value).startswith(start) and str(e.value).endswith(end), str(e.value)


@pytest.mark.parametrize("task", sorted(SMALL))
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
    if "pools" in plain.meta:  # the validation questions come from the OOD test pool
        assert ds.meta["pools"] == {
            **plain.meta["pools"],
            "val_inferred_ood": plain.meta["pools"]["test_inferred_ood"],
        }


BAD = [(task, {"val_size": v}, "val_size") for task in sorted(SMALL) for v in (-1, 10**6)]  # < 0; too many


@pytest.mark.parametrize(("task", "overrides", "name"), BAD, ids=bad_ids(BAD))
def test_bad_val_size_named(task: str, overrides: dict, name: str) -> None:
    assert_bad_params_named(task, {**SMALL[task], **overrides}, name)
