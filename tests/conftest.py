"""Shared fixtures: a tiny comparison dataset and a tiny study config."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from grokbench.tasks import generate
from grokbench.tasks.base import write_dataset

# `make test` runs the suite on one pytest-xdist worker per core: one torch thread each, not a core's share
# of two (oversubscribed threads slow both workers down).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

TINY_DATA = {
    "n_entities": 24,
    "n_attributes": 2,
    "value_range": 3,
    "phi": 4.0,
    "id_ratio": 0.75,
    "test_size": 40,
    "seed": 0,
}
TINY_MODEL = {"family": "gpt", "n_layer": 1, "d_model": 32, "n_head": 2}
TINY_TRAINING = {
    "steps": 40,
    "batch_size": 32,
    "lr": 3e-3,
    "warmup_steps": 5,
    "eval": {"dense_every": 10, "dense_until": 20, "every": 20, "max_size": 64},
}
TINY_CONFIG = {
    "datasets": {"a": {"task": "comparison", **TINY_DATA}},
    "models": {"gpt": TINY_MODEL},
    "training": {"default": TINY_TRAINING},
    "grid": [{"datasets": ["a"], "models": ["gpt"], "seeds": [0]}],
}


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_dataset(generate("comparison", TINY_DATA), path)
    return path
