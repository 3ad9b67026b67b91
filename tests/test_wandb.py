"""An offline Weights & Biases run (training.wandb): its files are written without network, and they hold
the values of the run's metrics table.

The .wandb file is read back with a small reader of its record log (leveldb's log format: 32 KiB blocks
of records, each with a 7-byte header: CRC, length, type full / first / middle / last; a 7-byte file
header ":W&B" + magic + version), each record a `wandb_internal_pb2.Record`: wandb 0.31 writes it from
its Go core and no longer ships a Python reader.
"""

from __future__ import annotations

import json
import struct

import pandas as pd
import pytest

from grokbench.train.pack import run_pack
from grokbench.train.run import run

from .conftest import TINY_MODEL, TINY_TRAINING

pytest.importorskip("wandb")
BLOCK = 32768


def log_records(path):
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk


def history(path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in log_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.HasField("history"):
            rows.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return rows


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is grokbench's default, not the user's env
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # any attempt at the network would fail
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")


def check_run_folder(out):
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list((out / "wandb").rglob("*"))
    logged = history(files[0])
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert sorted(h["_step"] for h in logged) == sorted(metrics["step"].unique())
    for h in logged:
        at = metrics[metrics["step"] == h["_step"]]
        for r in at.itertuples():
            assert h[f"accuracy/{r.split}"] == pytest.approx(r.accuracy, abs=1e-12)
            assert h[f"loss/{r.split}"] == pytest.approx(r.loss, rel=1e-12)


def test_offline_wandb_run_holds_the_metrics(tmp_path, tiny_dataset_path, no_network):
    out = tmp_path / "run"
    cell = {"dataset": "a", "model": "gpt", "training": "default", "seed": 0}
    run(tiny_dataset_path, TINY_MODEL, {**TINY_TRAINING, "wandb": True}, 0, out, cell=cell, progress=False)
    check_run_folder(out)


def test_each_pack_member_gets_its_own_offline_run(tmp_path, tiny_dataset_path, no_network):
    """A pack's members log side by side in one process: each its own run, with its own values."""
    seeds = [0, 1]
    cells = [{"dataset": "a", "model": "gpt", "training": "default", "seed": s} for s in seeds]
    dirs = [tmp_path / f"seed{s}" for s in seeds]
    training = {**TINY_TRAINING, "wandb": True}
    run_pack(
        tiny_dataset_path,
        TINY_MODEL,
        training,
        seeds,
        dirs,
        cells,
        "a/gpt/default/pack0-1",
        2,
        progress=False,
    )
    for d in dirs:
        check_run_folder(d)
