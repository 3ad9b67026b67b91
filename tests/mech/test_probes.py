"""Linear probes on synthetic hidden states: a linearly encoded label is decoded, on rows the probe never
saw; noise, and the shuffled-label control, are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from grokbench.mech.probes import COLUMNS, fit_probe, linear_probe

K, D, N = 8, 16, 400


def synthetic(seed: int = 0, keys: int = 1):
    """Layer 0: noise; layer 1: the label's direction (one set of directions per key) plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(K, (N,), generator=g)
    key = torch.randint(keys, (N,), generator=g)
    directions = torch.randn(keys, K, D, generator=g)
    noise = torch.randn(2, N, D, generator=g)
    encoded = 3.0 * directions[key, labels] + 0.5 * noise[1]
    split = np.where(np.arange(N) % 5 == 0, "test_id", np.where(np.arange(N) % 5 == 1, "test_ood", "train"))
    return torch.stack([noise[0], encoded]), labels, split, key.numpy()


def _row(table: pd.DataFrame, layer: int, split: str) -> pd.Series:
    return table[(table["layer"] == layer) & (table["split"] == split)].iloc[0]


@pytest.mark.parametrize("method", ["logistic", "ridge"])
def test_decodes_a_linear_code_and_not_noise(method):
    features, labels, split, _ = synthetic()
    table = linear_probe(features, labels, split, method=method)
    assert tuple(table.columns) == COLUMNS
    assert list(table["split"][:3]) == ["train", "test_id", "test_ood"]
    assert set(table["layer"]) == {0, 1} and len(table) == 6
    chance = 1.0 / K
    for name in ("test_id", "test_ood"):
        coded, noise = _row(table, 1, name), _row(table, 0, name)
        assert coded["n"] == N // 5
        assert coded["accuracy"] > 0.9  # the code is linear: held-out rows are decoded
        # shuffled labels: a cluster's label is then a draw, right for about 1 cluster in K
        assert coded["control_accuracy"] < 0.5
        assert noise["accuracy"] < chance + 0.2  # layer 0 holds no information on the label
        assert coded["majority_accuracy"] < chance + 0.2


def test_per_key_probes():
    """Each key codes the label along its own directions: one probe per key decodes it."""
    features, labels, split, keys = synthetic(seed=1, keys=3)
    per_key = linear_probe(features, labels, split, keys)
    assert _row(per_key, 1, "test_id")["accuracy"] > 0.9
    assert _row(per_key, 1, "test_id")["n"] == N // 5  # pooled over the keys


def test_deterministic():
    features, labels, split, _ = synthetic(seed=2)
    a = linear_probe(features, labels, split, seed=3)
    b = linear_probe(features.clone(), labels.clone(), split.copy(), seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_fit_probe():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    y = torch.tensor([7, 3, 7, 3])  # label values need not be 0..K-1
    probe = fit_probe(x, y)
    assert torch.equal(probe.predict(x), y)
    assert torch.equal(fit_probe(x, torch.full((4,), 5)).predict(x), torch.full((4,), 5))  # one class
    with pytest.raises(ValueError, match="method"):
        fit_probe(x, y, method="svm")
