"""What the analyses share: batched hidden states, scores of one target token, padding of token lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def as_long(x, name: str, ndim: int) -> torch.Tensor:
    """`x` as an int64 CPU-or-device tensor of `ndim` dimensions (ValueError otherwise)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long()
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


def pad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids (N, T) right-padded with 0 = `<pad>`, lengths (N,)). In the causal models a
    position never sees the padding after it."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.zeros(len(seqs), int(lengths.max()) if len(seqs) else 0, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return ids, lengths


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def hidden_stack(
    model: nn.Module, idx: torch.Tensor, batch_size: int = 256, position: int | None = None
) -> torch.Tensor:
    """All hidden states of `idx` (N, T): (n_hidden, N, T, C) float32 on the CPU, computed in batches;
    with `position`, only that position's: (n_hidden, N, C)."""
    dev = device_of(model)
    parts = []
    for start in range(0, len(idx), batch_size):
        states = torch.stack(model.hidden_states(idx[start : start + batch_size].to(dev)))
        parts.append((states if position is None else states[:, :, position]).float().cpu())
    if not parts:
        shape = (model.n_hidden, 0) + (() if position is not None else (idx.shape[1],))
        return torch.zeros(*shape, model.config.d_model)
    return torch.cat(parts, dim=1)


def target_scores(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probability and rank (0: the top; the number of tokens with a strictly larger logit) of
    token `target` (...,) under `logits` (..., V)."""
    logits = logits.float()
    chosen = logits.gather(-1, target[..., None])  # (..., 1)
    prob = torch.softmax(logits, dim=-1).gather(-1, target[..., None])[..., 0]
    rank = (logits > chosen).sum(-1)
    return prob, rank


def group_labels(groups: Sequence[str] | None, n: int) -> np.ndarray:
    """Per-row group names (an "all" group when None), checked against the row count."""
    if groups is None:
        return np.full(n, "all", dtype=object)
    g = np.asarray(groups, dtype=object)
    if g.shape != (n,):
        raise ValueError(f"groups: expected {n} labels, got shape {g.shape}")
    return g
