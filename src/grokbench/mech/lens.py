"""Logit lens: read the answer off every layer's residual stream with the model's own final norm and head.

For a hidden state h at layer l and position t, the lens logits are `model.head(h)`: the family's final
norm (GPT `transformer.ln_f`, Llama `model.norm`, Mamba `backbone.norm_f`, RWKV `ln_out`, the linear-attention
families `norm`) then the LM head, exactly what the forward applies to the last layer, so the lens at the
last layer and the last input position is the model's own prediction. This is the "logit lens" of
nostalgebraist (2020, "interpreting GPT: the logit lens") with the final norm applied, as TransformerLens'
`ActivationCache.accumulated_resid(apply_ln=True)` does (read, not copied); Wang et al. (2024, Grokked
Transformers) use it to find the bridge entity of composition in the middle layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .common import as_long, device_of, group_labels, target_scores

COLUMNS = ("group", "layer", "position", "n", "prob", "log_prob", "rank", "top1")


@torch.no_grad()
def lens_scores(
    model: nn.Module, idx: torch.Tensor, target: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per fact, layer and position: (prob, rank) of token `target[i]` (N,) under the lens at every
    position of `idx` (N, T). Both (n_hidden, N, T) on the CPU; rank 0 is the top token."""
    idx, target = as_long(idx, "idx", 2), as_long(target, "target", 1)
    if len(target) != len(idx):
        raise ValueError(f"target: {len(target)} tokens for {len(idx)} inputs")
    dev = device_of(model)
    probs, ranks = [], []
    for start in range(0, len(idx), batch_size):
        x, y = idx[start : start + batch_size].to(dev), target[start : start + batch_size].to(dev)
        states = torch.stack(model.hidden_states(x))  # (L, B, T, C)
        logits = model.head(states.flatten(0, 1)).unflatten(0, states.shape[:2])  # (L, B, T, V)
        p, r = target_scores(logits, y[None, :, None].expand(logits.shape[:3]))
        probs.append(p.cpu())
        ranks.append(r.cpu())
    if not probs:
        empty = torch.zeros(model.n_hidden, 0, idx.shape[1])
        return empty, empty.long()
    return torch.cat(probs, dim=1), torch.cat(ranks, dim=1)


def logit_lens(
    model: nn.Module,
    idx: torch.Tensor,
    target: torch.Tensor,
    lengths: torch.Tensor | None = None,
    groups: Sequence[str] | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """The logit lens of `model` on facts `idx` (N, T) for the target tokens `target` (N,) (the answer, or
    any token to look for, e.g. a bridge entity), averaged over the facts of each group.

    `lengths` (N,): real input lengths of right-padded rows (positions at or past a row's length are
    left out); `groups` (N,): a label per fact (e.g. its split), "all" when None.

    One row per (group, layer, position), columns `COLUMNS`:
    - group: the facts' label; layer: 0 = embedding, l = after the l-th block application
      (`Backbone.hidden_states`); position: index of the input token (0-based);
    - n: facts with that position;
    - prob: mean probability of the target; log_prob: mean log of it (floored at 1e-45);
    - rank: mean rank of the target (0 = top); top1: fraction of facts where the target is the top token.
    """
    idx = as_long(idx, "idx", 2)
    prob, rank = lens_scores(model, idx, target, batch_size)
    L, N, T = prob.shape
    g = group_labels(groups, N)
    lengths = torch.full((N,), T) if lengths is None else as_long(lengths, "lengths", 1)
    valid = (torch.arange(T)[None, :] < lengths[:, None]).numpy()  # (N, T)
    layer, fact, pos = np.meshgrid(np.arange(L), np.arange(N), np.arange(T), indexing="ij")
    keep = np.broadcast_to(valid[None], (L, N, T))
    p = prob.double().numpy()[keep]
    r = rank.numpy()[keep].astype(np.float64)
    long = pd.DataFrame(
        {
            "group": g[fact[keep]],
            "layer": layer[keep],
            "position": pos[keep],
            "prob": p,
            "log_prob": np.log(np.maximum(p, 1e-45)),
            "rank": r,
            "top1": (r == 0).astype(np.float64),
        }
    )
    if long.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "group" else float) for c in COLUMNS})
    agg = long.groupby(["group", "layer", "position"], sort=True)
    out = agg[["prob", "log_prob", "rank", "top1"]].mean()
    out.insert(0, "n", agg.size())
    return out.reset_index()[list(COLUMNS)]
