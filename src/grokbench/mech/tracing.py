"""Causal tracing (activation patching): which hidden states carry the information the answer needs.

A clean input and a corrupted one (one entity replaced by another, so the answer changes) are run; then
the corrupted run is repeated with the hidden state of one (layer, position), or of every position of a
layer, restored from the clean run, and the recovery of the clean answer is measured:

    recovery    = (p_patched - p_corrupt) / (p_clean - p_corrupt)
    ld_recovery = (ld_patched - ld_corrupt) / (ld_clean - ld_corrupt)

where p is the probability of the clean answer and ld = logit(clean answer) - logit(corrupted answer),
each first averaged over the facts (a ratio of means, stable where single facts have a tiny denominator):
1 is full recovery, 0 none. This is the causal tracing of Meng et al. (2022, "Locating and Editing Factual
Associations in GPT"), here with an entity swap as the corruption, as Wang et al. (2024, Grokked
Transformers) use it, and the logit-difference metric of TransformerLens' activation patching tutorials
(read, not copied). Restoring a whole layer recovers fully wherever the residual stream is all a block
passes on; see `Backbone.hidden_states` for the two side channels (re-injection, RWKV-7's v_first) that a
patch leaves in the corrupted run's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.backbone import TrunkState
from .common import as_long, device_of, group_labels

COLUMNS = (
    "group", "layer", "position", "n", "p_clean", "p_corrupt", "p_patched", "recovery",
    "ld_clean", "ld_corrupt", "ld_patched", "ld_recovery",
)  # fmt: skip
ALL = -1  # `position` of the rows that restore every position of the layer


def _answer_scores(logits: torch.Tensor, answer: torch.Tensor, other: torch.Tensor):
    """At the last position: (p of answer, logit(answer) - logit(other)), each (B,) float64."""
    last = logits[:, -1].double()
    p = torch.softmax(last, -1).gather(-1, answer[:, None])[:, 0]
    ld = (last.gather(-1, answer[:, None]) - last.gather(-1, other[:, None]))[:, 0]
    return p, ld


@torch.no_grad()
def restored_logits(
    model: nn.Module,
    clean_state: torch.Tensor,
    corrupt: torch.Tensor,
    layer: int,
    mask: torch.Tensor,
    start: TrunkState | None = None,
) -> torch.Tensor:
    """Logits (B, T, V) of the corrupted inputs `corrupt` (B, T) with layer `layer`'s hidden state set to
    `clean_state` (B, T, C) where `mask` ((T,) or (B, T) bool) is true. `start`: the corrupted run's
    TrunkState at `layer` (`Backbone.trunk_states`), to go on from there instead of recomputing the
    blocks below, which the patch does not change (the same logits, bit for bit)."""
    states = model.hidden_states(corrupt, patch={layer: (mask, clean_state)}, start=start)
    return model.head(states[-1])


@dataclass(frozen=True)
class Pairs:
    """The facts to trace: clean inputs `clean` (N, T), their corruptions `corrupt` (N, T) (same length;
    the answer is read at the last position), the clean answer `answer` (N,) and, optionally, the
    corrupted input's answer `corrupt_answer` (N,) (default: the corrupted run's top token other than the
    clean answer). Token tensors are checked and made int64 here."""

    clean: torch.Tensor
    corrupt: torch.Tensor
    answer: torch.Tensor
    corrupt_answer: torch.Tensor | None = None

    def __post_init__(self) -> None:
        clean, corrupt = as_long(self.clean, "clean", 2), as_long(self.corrupt, "corrupt", 2)
        answer = as_long(self.answer, "answer", 1)
        if clean.shape != corrupt.shape or len(answer) != len(clean):
            raise ValueError(
                f"clean {tuple(clean.shape)}, corrupt {tuple(corrupt.shape)}, answer {len(answer)}"
            )
        other = self.corrupt_answer
        if other is not None:
            other = as_long(other, "corrupt_answer", 1)
            if len(other) != len(clean):
                raise ValueError(f"corrupt_answer: {len(other)} tokens for {len(clean)} inputs")
        for name, value in (
            ("clean", clean),
            ("corrupt", corrupt),
            ("answer", answer),
            ("corrupt_answer", other),
        ):
            object.__setattr__(self, name, value)


@torch.no_grad()
def trace_scores(
    model: nn.Module, pairs: Pairs, positions: Sequence[int] | None = None, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Per fact of `pairs`: the clean and corrupted scores and the patched ones for every layer and
    restore set.

    Restore sets: each position of `positions` (default all) alone, then all positions (`ALL`). The
    scores are at the last input position, for the clean answer; the logit difference is against the
    corrupted answer (see `Pairs`). Returns float64 CPU tensors: p_clean, p_corrupt, ld_clean, ld_corrupt
    (N,); p_patched, ld_patched (n_hidden, R, N) for R restore sets; and `positions` (R,) with ALL for the
    last set."""
    clean, corrupt, answer, corrupt_answer = pairs.clean, pairs.corrupt, pairs.answer, pairs.corrupt_answer
    N, T = clean.shape
    positions = list(range(T)) if positions is None else [int(p) for p in positions]
    if any(not 0 <= p < T for p in positions):
        raise ValueError(f"positions must be in 0..{T - 1}, got {positions}")
    sets = [torch.arange(T) == p for p in positions] + [torch.ones(T, dtype=torch.bool)]
    dev, L, m = device_of(model), model.n_hidden, model.config.memory_tokens
    out = {k: [] for k in ("p_clean", "p_corrupt", "ld_clean", "ld_corrupt", "p_patched", "ld_patched")}
    for start in range(0, N, batch_size):
        sl = slice(start, start + batch_size)
        x, xc, y = clean[sl].to(dev), corrupt[sl].to(dev), answer[sl].to(dev)
        states = model.hidden_states(x)
        clean_logits = model.head(states[-1])
        resume = model.trunk_states(xc)  # the corrupted run at every layer: patched runs go on from there
        corrupt_logits = model.head(resume[-1].x[:, m:])  # = model(xc)
        if corrupt_answer is None:
            last = corrupt_logits[:, -1].scatter(-1, y[:, None], float("-inf"))
            other = last.argmax(-1)
        else:
            other = corrupt_answer[sl].to(dev)
        for name, logits in (("clean", clean_logits), ("corrupt", corrupt_logits)):
            p, ld = _answer_scores(logits, y, other)
            out[f"p_{name}"].append(p.cpu())
            out[f"ld_{name}"].append(ld.cpu())
        p_patched = torch.empty(L, len(sets), len(y), dtype=torch.float64)
        ld_patched = torch.empty_like(p_patched)
        for layer in range(L):
            for r, mask in enumerate(sets):
                logits = restored_logits(model, states[layer], xc, layer, mask.to(dev), resume[layer])
                p, ld = _answer_scores(logits, y, other)
                p_patched[layer, r], ld_patched[layer, r] = p.cpu(), ld.cpu()
        out["p_patched"].append(p_patched)
        out["ld_patched"].append(ld_patched)
    res = {k: torch.cat(v, dim=-1) if v else torch.zeros(0, dtype=torch.float64) for k, v in out.items()}
    res["positions"] = torch.tensor(positions + [ALL])
    return res


def _ratio(patched: float, low: float, high: float) -> float:
    span = high - low
    return (patched - low) / span + 0.0 if span != 0 else float("nan")  # + 0.0: no -0.0


def causal_trace(
    model: nn.Module,
    pairs: Pairs,
    groups: Sequence[str] | None = None,
    positions: Sequence[int] | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Causal tracing of `model` on the clean and corrupted inputs of `pairs`: see the module docstring.

    `groups` (N,): a label per fact (e.g. its split), "all" when None; `positions`: the positions
    restored one at a time (default all).

    One row per (group, layer, restore set), columns `COLUMNS`:
    - group; layer: 0 = embedding, l = after the l-th block application (`Backbone.hidden_states`);
    - position: the input position restored, or ALL (-1): every position of the layer at once;
    - n: facts; p_clean, p_corrupt, p_patched: mean probability of the clean answer in the clean, the
      corrupted and the patched run; recovery: (p_patched - p_corrupt) / (p_clean - p_corrupt);
    - ld_clean, ld_corrupt, ld_patched: mean logit(answer) - logit(corrupt answer); ld_recovery: the
      same ratio of them. NaN where the clean and corrupted means are equal.
    """
    s = trace_scores(model, pairs, positions, batch_size)
    N = len(s["p_clean"])
    g = group_labels(groups, N)
    records = []
    for name in sorted(set(g.tolist()), key=str):
        sel = torch.from_numpy(np.flatnonzero(g == name))
        p_c, p_x = s["p_clean"][sel].mean().item(), s["p_corrupt"][sel].mean().item()
        l_c, l_x = s["ld_clean"][sel].mean().item(), s["ld_corrupt"][sel].mean().item()
        p_patched = s["p_patched"][:, :, sel].mean(-1)  # (L, R)
        ld_patched = s["ld_patched"][:, :, sel].mean(-1)
        for layer in range(p_patched.shape[0]):
            for r, pos in enumerate(s["positions"].tolist()):
                pp, lp = p_patched[layer, r].item(), ld_patched[layer, r].item()
                records.append(
                    (
                        name,
                        layer,
                        pos,
                        len(sel),
                        p_c,
                        p_x,
                        pp,
                        _ratio(pp, p_x, p_c),
                        l_c,
                        l_x,
                        lp,
                        _ratio(lp, l_x, l_c),
                    )
                )
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))
