"""Backbone.hidden_states for every family and variant: the head of the last state is the forward's logits,
patching a layer with its own values changes nothing, patching with another input's values moves the run
onto that input, and a patched run resumed from the unpatched run's TrunkState is the whole patched run."""

from __future__ import annotations

import pytest
import torch

from grokbench.models import FAMILIES

from ..models.test_common import model

VOCAB, T = 23, 7  # as tests/models/test_common.py's `model`


def _id(variant: dict) -> str:
    return ",".join(f"{k}={x}" for k, x in variant.items()) or "plain"


# every family plain and with loops, memory tokens and a kv memory at once; sharing and re-injection on two
COMBINED = {"loops": 2, "memory_tokens": 2, "kv_memory": 4}
CASES = [(f, v) for f in sorted(FAMILIES) for v in ({}, COMBINED)]
CASES += [("gpt", {"share": "all"}), ("mamba", {"share": "all"}), ("gpt", {"loops": 2, "reinject": True})]
CASES += [("rwkv7", {"loops": 2, "reinject": True})]


@pytest.mark.parametrize(("family", "variant"), CASES, ids=[f"{f}-{_id(v)}" for f, v in CASES])
@torch.no_grad()
def test_hidden_states(family, variant):
    m = model(family, **variant)
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():  # off the init, where zero output projections make blocks near identities
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    idx = torch.randint(VOCAB, (3, T), generator=g)
    other = torch.randint(VOCAB, (3, T), generator=g)
    logits = m(idx)
    states = m.hidden_states(idx)
    n = 1 + m.config.n_layer * m.config.loops
    assert m.n_hidden == n and len(states) == n
    assert all(s.shape == (3, T, m.config.d_model) for s in states)
    assert torch.equal(m.head(states[-1]), logits)  # exactly the forward

    mask = torch.rand(3, T, generator=g) < 0.5
    mask[0, 0] = True
    for layer in range(n):
        same = m.hidden_states(idx, patch={layer: (mask, states[layer])})
        assert all(torch.equal(a, b) for a, b in zip(same, states, strict=True)), layer
        assert torch.equal(m.head(same[-1]), logits)

    # every position of a layer from another input: the run goes on as that input's, where the state
    # at that layer is all a block passes on (see hidden_states: reinject and RWKV-7's v_first)
    theirs = m.hidden_states(other)
    markov = not variant.get("reinject") and family != "rwkv7"
    everything = torch.ones(T, dtype=torch.bool)
    for layer in range(n) if markov else (0, n - 1):
        moved = m.hidden_states(idx, patch={layer: (everything, theirs[layer])})
        torch.testing.assert_close(m.head(moved[-1]), m.head(theirs[-1]), rtol=1e-5, atol=1e-5)
        assert torch.equal(moved[layer], theirs[layer])
        if layer:
            assert all(torch.equal(a, b) for a, b in zip(moved[:layer], states[:layer], strict=True))
    if not markov:  # the side channel: a middle layer's state alone does not carry the run over
        moved = m.hidden_states(idx, patch={1: (everything, theirs[1])})
        assert not torch.allclose(m.head(moved[-1]), m.head(theirs[-1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("family", "variant"), CASES, ids=[f"{f}-{_id(v)}" for f, v in CASES])
@torch.no_grad()
def test_resume_is_the_whole_forward(family, variant):
    """hidden_states(start=trunk_states(idx)[l]) with a patch at layer l (causal tracing's shortcut): the
    states from l on and the logits equal those of the whole patched forward, bit for bit; trunk_states
    are the forward's own states."""
    m = model(family, **variant)
    g = torch.Generator().manual_seed(2)
    for p in m.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    idx = torch.randint(VOCAB, (3, T), generator=g)
    other = m.hidden_states(torch.randint(VOCAB, (3, T), generator=g))
    resume = m.trunk_states(idx)
    states = m.hidden_states(idx)
    mem = m.config.memory_tokens
    assert [r.layer for r in resume] == list(range(m.n_hidden))
    assert all(torch.equal(r.x[:, mem:], s) for r, s in zip(resume, states, strict=True))
    for mask in (torch.arange(T) == 2, torch.ones(T, dtype=torch.bool)):
        for layer in range(m.n_hidden):
            patch = {layer: (mask, other[layer])}
            whole = m.hidden_states(idx, patch=patch)
            part = m.hidden_states(idx, patch=patch, start=resume[layer])
            assert len(part) == m.n_hidden - layer
            assert all(torch.equal(a, b) for a, b in zip(part, whole[layer:], strict=True)), layer
            assert torch.equal(m.head(part[-1]), m.head(whole[-1]))
        # without a patch: the run itself, from any layer
        assert torch.equal(m.head(m.hidden_states(idx, start=resume[1])[-1]), m(idx))


def test_patch_errors():
    m = model("gpt")
    idx = torch.randint(VOCAB, (2, T))
    values = torch.zeros(2, T, m.config.d_model)
    with pytest.raises(ValueError, match="layer 9"):
        m.hidden_states(idx, patch={9: (torch.ones(T, dtype=torch.bool), values)})
    with pytest.raises(ValueError, match="mask"):
        m.hidden_states(idx, patch={0: (torch.ones(T), values)})
    with pytest.raises(ValueError, match="values"):
        m.hidden_states(idx, patch={0: (torch.ones(T, dtype=torch.bool), values[:, :3])})
    start = m.trunk_states(idx)[1]
    with pytest.raises(ValueError, match=r"layer 0 not in 1\.\."):  # below the resumed layer
        m.hidden_states(idx, patch={0: (torch.ones(T, dtype=torch.bool), values)}, start=start)
    with pytest.raises(ValueError, match="start: state"):
        m.hidden_states(idx[:1], start=start)
