"""A command line that explains itself: every subcommand has a description, an example, and a help text
for each of its options."""

from __future__ import annotations

import argparse
import os

import pytest

from grokbench import cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_is_explained(name):
    sub = subcommands()[name]
    assert sub.description and len(sub.description) > 40, name
    assert "example:" in (sub.epilog or "") or "Example:" in sub.description, name
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 5, f"{name} {action.option_strings or action.dest}"


def test_defaults_are_shown(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench-backends", "--help"])
    out = capsys.readouterr().out
    assert "batch size (default: 128)" in out and "example:" in out


def test_threads_bound_openblas(monkeypatch):
    """--threads bounds numpy's OpenBLAS threads as it bounds torch's (for a fresh process, where numpy
    is not yet imported); a value set in the environment wins."""
    monkeypatch.setattr(cli, "cmd_mech", lambda args: 0)  # parse only
    argv = ["mech", "--run-dir", "r", "--data", "d.parquet", "--out-dir", "o", "--threads", "1"]
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert cli.main(argv) == 0 and os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert cli.main(argv) == 0 and os.environ["OPENBLAS_NUM_THREADS"] == "3"
