"""Training tensors from a grokbench dataset: padded token matrices, answer-only targets, eval splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..tasks.base import Dataset

IGNORE = -100  # target value that the loss and the accuracy skip


@dataclass
class Tensors:
    """All facts of a dataset as next-token-prediction tensors.

    Fact i is the sequence s = input_ids + answer_ids, right-padded to length T + 1.
    x[i] = s[:-1] and y[i] = s[1:] with every position that does not predict an answer token set to
    IGNORE, so the loss and the accuracy are on the answer token(s) only.
    """

    x: torch.Tensor  # (N, T) int64
    y: torch.Tensor  # (N, T) int64
    train_atomic: torch.Tensor  # (Na,) indices of atomic training facts
    train_inferred: torch.Tensor  # (Ni,) indices of inferred training facts
    eval_sets: dict[str, torch.Tensor]  # split name -> indices

    @property
    def block_size(self) -> int:
        return self.x.shape[1]

    def to(self, device: torch.device) -> Tensors:
        return Tensors(
            self.x.to(device),
            self.y.to(device),
            self.train_atomic.to(device),
            self.train_inferred.to(device),
            {k: v.to(device) for k, v in self.eval_sets.items()},
        )


def build_tensors(ds: Dataset, eval_max_size: int, eval_seed: int = 0) -> Tensors:
    facts = ds.facts
    seqs = [list(a) + list(b) for a, b in zip(facts["input_ids"], facts["answer_ids"])]
    n_in = np.array([len(a) for a in facts["input_ids"]])
    length = max(map(len, seqs))
    s = np.zeros((len(seqs), length), dtype=np.int64)  # 0 is <pad>
    for i, seq in enumerate(seqs):
        s[i, : len(seq)] = seq
    y = s[:, 1:].copy()
    pos = np.arange(length - 1)[None, :]
    n_tot = np.array([len(q) for q in seqs])
    answer = (pos >= (n_in - 1)[:, None]) & (pos < (n_tot - 1)[:, None])
    y[~answer] = IGNORE

    split = facts["split"].to_numpy()
    kind = facts["kind"].to_numpy()
    group = facts["group"].to_numpy()
    train = split == "train"
    rng = np.random.default_rng(eval_seed)
    eval_sets: dict[str, torch.Tensor] = {}
    names = {
        f"train_{k}_{g}": train & (kind == k) & (group == g)
        for k, g in sorted(set(zip(kind[train], group[train])))
    }
    names |= {name: split == name for name in sorted(set(split) - {"train"})}
    for name, mask in names.items():
        idx = np.flatnonzero(mask)
        if len(idx) > eval_max_size:
            idx = np.sort(rng.choice(idx, size=eval_max_size, replace=False))
        eval_sets[name] = torch.from_numpy(idx)
    return Tensors(
        x=torch.from_numpy(s[:, :-1].copy()),
        y=torch.from_numpy(y),
        train_atomic=torch.from_numpy(np.flatnonzero(train & (kind == "atomic"))),
        train_inferred=torch.from_numpy(np.flatnonzero(train & (kind == "inferred"))),
        eval_sets=eval_sets,
    )
