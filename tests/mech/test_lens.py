"""Logit lens: at the last layer it is the model's own prediction; shapes, columns, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grokbench.mech.lens import COLUMNS, lens_scores, logit_lens

from .helpers import tiny_model

V, T, N = 19, 5, 12


@pytest.mark.parametrize(
    ("family", "extra"), [("gpt", {}), ("mamba2", {"memory_tokens": 2}), ("rwkv7", {"loops": 2})]
)
def test_last_layer_is_the_models_softmax(family, extra):
    m = tiny_model(family, V, T, **extra)
    g = torch.Generator().manual_seed(0)
    idx, target = torch.randint(V, (N, T), generator=g), torch.randint(V, (N,), generator=g)
    prob, rank = lens_scores(m, idx, target, batch_size=5)
    assert prob.shape == rank.shape == (m.n_hidden, N, T)
    with torch.no_grad():
        logits = m(idx)
    own = torch.softmax(logits, -1).gather(-1, target[:, None, None].expand(N, T, 1))[..., 0]
    torch.testing.assert_close(prob[-1], own, rtol=1e-6, atol=1e-7)
    top = logits.argmax(-1) == target[:, None]
    assert torch.equal(rank[-1] == 0, top)
    expected = (logits > logits.gather(-1, target[:, None, None].expand(N, T, 1))).sum(-1)
    assert torch.equal(rank[-1], expected)

    table = logit_lens(m, idx, target, batch_size=5)
    assert tuple(table.columns) == COLUMNS
    assert len(table) == m.n_hidden * T and (table["n"] == N).all()
    last = table[(table["layer"] == m.n_hidden - 1) & (table["position"] == T - 1)].iloc[0]
    assert last["prob"] == pytest.approx(own[:, -1].double().mean().item(), rel=1e-6)
    assert last["top1"] == pytest.approx(top[:, -1].double().mean().item())
    assert ((table["prob"] > 0) & (table["prob"] <= 1)).all() and (table["rank"] >= 0).all()


def test_groups_and_lengths():
    m = tiny_model("llama", V, T)
    g = torch.Generator().manual_seed(1)
    idx, target = torch.randint(V, (N, T), generator=g), torch.randint(V, (N,), generator=g)
    lengths = torch.tensor([T] * 6 + [3] * 6)
    table = logit_lens(m, idx, target, lengths=lengths, groups=["a"] * 6 + ["b"] * 6)
    counts = table.groupby(["group", "position"])["n"].first()
    assert set(counts["a"].index) == set(range(T)) and (counts["a"] == 6).all()
    assert set(counts["b"].index) == {0, 1, 2} and (counts["b"] == 6).all()  # padding left out
    # the padded rows' real positions never see their padding (causal): as the short inputs alone
    alone = logit_lens(m, idx[6:, :3], target[6:])
    mine = table[table["group"] == "b"].reset_index(drop=True)
    for col in ("prob", "log_prob", "rank", "top1"):
        np.testing.assert_allclose(mine[col], alone[col], rtol=1e-5, atol=1e-7)
    assert np.isfinite(table["log_prob"]).all()


def test_empty_and_bad_shapes():
    m = tiny_model("gpt", V, T)
    with pytest.raises(ValueError, match="target"):
        logit_lens(m, torch.zeros(3, T, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    empty = logit_lens(m, torch.zeros(0, T, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert empty.empty and tuple(empty.columns) == COLUMNS
