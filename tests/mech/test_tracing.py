"""Causal tracing: restoring every position of a layer recovers the clean run fully, restoring nothing
or a state the corruption did not change recovers nothing, and the table's shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grokbench.mech.tracing import ALL, COLUMNS, Pairs, causal_trace, restored_logits, trace_scores

from .helpers import tiny_model

V, T, N = 19, 5, 10
CORRUPTED = 2  # the position the corruption changes


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(V, (N, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, CORRUPTED] = (clean[:, CORRUPTED] + 1 + torch.randint(V - 1, (N,), generator=g)) % V
    answer = torch.randint(V, (N,), generator=g)
    return clean, corrupt, answer


@pytest.mark.parametrize(
    ("family", "extra"),
    [("gpt", {}), ("llama", {"loops": 2}), ("mamba", {"memory_tokens": 2}), ("gla", {"kv_memory": 4})],
)
def test_full_and_no_recovery(family, extra):
    m = tiny_model(family, V, T, **extra)
    clean, corrupt, answer = inputs()
    table = causal_trace(m, Pairs(clean, corrupt, answer), groups=["a"] * 4 + ["b"] * 6, batch_size=4)
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 2 * m.n_hidden * (T + 1)
    assert set(table["position"]) == {*range(T), ALL}
    assert dict(table.groupby("group")["n"].first()) == {"a": 4, "b": 6}
    assert (table["p_clean"] != table["p_corrupt"]).all()
    everything = table[table["position"] == ALL]
    assert (everything["recovery"] == 1.0).all() and (everything["ld_recovery"] == 1.0).all()
    embed = table[table["layer"] == 0].set_index(["group", "position"])
    for group in ("a", "b"):  # at the embedding, only the changed position differs between the runs
        assert embed.loc[(group, CORRUPTED), "recovery"] == 1.0
        before = [embed.loc[(group, p), "recovery"] for p in range(T) if p != CORRUPTED]
        assert before == [0.0] * (T - 1)
    # before the corrupted position nothing differs at any layer (causal models)
    early = table[(table["position"] < CORRUPTED) & (table["position"] >= 0)]
    assert (early["recovery"] == 0.0).all()


def test_restoring_nothing_is_the_corrupted_run():
    m = tiny_model("rwkv6", V, T)
    clean, corrupt, _ = inputs(1)
    states = m.hidden_states(clean)
    with torch.no_grad():
        ref = m(corrupt)
        for layer in range(m.n_hidden):
            nothing = restored_logits(m, states[layer], corrupt, layer, torch.zeros(T, dtype=torch.bool))
            assert torch.equal(nothing, ref)
            everything = restored_logits(m, states[layer], corrupt, layer, torch.ones(T, dtype=torch.bool))
            torch.testing.assert_close(everything, m(clean), rtol=1e-5, atol=1e-6)


def test_side_channels_and_given_corrupt_answer():
    """RWKV-7: v_first stays the corrupted run's, so only the last layer and the embedding are sure to
    recover fully; a given corrupted answer is the logit difference's second token."""
    m = tiny_model("rwkv7", V, T)
    clean, corrupt, answer = inputs(2)
    other = (answer + 1) % V
    s = trace_scores(m, Pairs(clean, corrupt, answer, other))
    every = list(s["positions"]).index(ALL)
    for layer in (0, m.n_hidden - 1):
        assert torch.equal(s["p_patched"][layer, every], s["p_clean"])
    with torch.no_grad():
        last = m(clean)[:, -1].double()
    ld = last.gather(-1, answer[:, None])[:, 0] - last.gather(-1, other[:, None])[:, 0]
    torch.testing.assert_close(s["ld_clean"], ld)
    table = causal_trace(m, Pairs(clean, corrupt, answer, other), positions=[CORRUPTED])
    assert set(table["position"]) == {CORRUPTED, ALL} and np.isfinite(table["recovery"]).all()


def test_bad_inputs():
    m = tiny_model("gpt", V, T)
    clean, corrupt, answer = inputs()
    with pytest.raises(ValueError, match="corrupt"):
        Pairs(clean, corrupt[:, :3], answer)
    with pytest.raises(ValueError, match="corrupt_answer"):
        Pairs(clean, corrupt, answer, answer[:3])
    with pytest.raises(ValueError, match="positions"):
        causal_trace(m, Pairs(clean, corrupt, answer), positions=[T])
