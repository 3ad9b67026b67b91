"""Tiny models off their init, shared by the mech tests."""

from __future__ import annotations

import torch

from grokbench.models import build_model, family_keys

SMALL = {"n_head": 2, "head_size": 16, "headdim": 16, "d_state": 8}


def spec_of(family: str, **extra) -> dict:
    """A 2-layer d=32 spec of `family` (heads of 16 channels)."""
    spec = {"family": family, "n_layer": 2, "d_model": 32, **extra}
    return spec | {k: v for k, v in SMALL.items() if k in family_keys(family)}


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 1, scale: float = 0.1) -> torch.nn.Module:
    """Move every parameter off its init (where zero output projections make blocks near identities and
    any two runs alike), in place."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def tiny_model(family: str, vocab_size: int, block_size: int, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = build_model(spec_of(family, **extra), vocab_size=vocab_size, block_size=block_size).eval()
    return perturb(m, seed + 1)
