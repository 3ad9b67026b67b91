"""The training-throughput benchmark (`grokbench bench-train`): its CPU version runs end to end."""

from __future__ import annotations

import json
import re

import pytest
import torch

from grokbench import cli
from grokbench.bench.train import DEFAULTS, peak_tflops, resolve

from ..conftest import TINY_DATA

SMALL = json.dumps(TINY_DATA)  # the test suite's tiny comparison dataset


def test_bench_train_cli_prints_the_three_setups(capsys):
    argv = ["bench-train", "--preset", "tiny", "--batch", "16", "--steps", "3", "--warmup", "1"]
    assert cli.main([*argv, "--seeds", "2", "--data", SMALL]) == 0
    out = capsys.readouterr().out
    header, *table = out.strip().splitlines()
    assert header.startswith("device: ") and "batch 16" in header and "3 timed steps after 1 warmup" in header
    names = ["reference (HF GPT-2 + BPE vocab)", "grokbench single run", "grokbench packed x2"]
    rows = {}
    for line in table[1:]:
        name = next(n for n in names if line.startswith(n))
        params, speed, ratio, mfu = line[len(name) :].split()
        rows[name] = (int(params.replace(",", "")), float(speed), float(ratio), mfu)
    assert list(rows) == names
    assert all(p > 0 and s > 0 and r > 0 for p, s, r, _ in rows.values())
    assert rows[names[0]][2] == 1.0  # the reference is the baseline
    base = rows[names[0]][1]
    for _, s, r, _ in rows.values():  # ratio = examples/s over the reference's
        # as printed: examples/s to 0.05 (each side), the ratio to 0.005
        rounding = 0.005 + (s / base) * (0.05 / s + 0.05 / base) + 1e-9
        assert r == pytest.approx(s / base, abs=rounding)
    # GPT-2's 50257-token vocabulary makes the reference's model larger than grokbench's
    assert rows[names[0]][0] > rows[names[1]][0] == rows[names[2]][0]
    if torch.cuda.is_available() and peak_tflops(torch.device("cuda")):
        assert all(re.fullmatch(r"\d+\.\d+%", m) for *_, m in rows.values())
    else:
        assert all(m == "-" for *_, m in rows.values())  # no peak known: no MFU


def test_bench_train_defaults_and_bad_input(capsys):
    assert resolve({"batch": None, "steps": 7}, cuda=False) == {"batch": DEFAULTS["batch"][1], "steps": 7}
    assert resolve({"batch": None}, cuda=True) == {"batch": DEFAULTS["batch"][0]}
    assert peak_tflops(torch.device("cpu")) is None
    assert cli.main(["bench-train", "--preset", "huge", "--data", SMALL]) == 2
    assert "--preset 'huge'" in capsys.readouterr().err
    assert cli.main(["bench-train", "--steps", "0"]) == 2
