"""Weight norms across training: the L2 norm of a run's parameters at every checkpoint, per module, per
top-level module group and in total.

Weight decay pulls the norm down while the gradient of the training loss pushes it where memorization
needs it; grokking has been tied to the weights shrinking after memorization towards a lower-norm solution
that generalizes (Liu et al. 2023, "Omnigrok"; Nanda et al. 2023). The table lets a study see whether a
family's norm falls around its OOD generalization step, and whether a family that never generalizes keeps
a high norm.

`weight_norms(run_dir)` reads a run's checkpoints (grokbench.train.checkpoints; listed in its run.json,
each file's sha256 checked against the list) and returns one row per (checkpoint, level, module):

- identity: run_id, dataset, model, training, seed (the run's cell), family;
- step, reason: the checkpoint's step and first reason (log, memorization, id, ood, final);
- level: "module" (the parameters a module holds itself, e.g. `transformer.h.0.attn.c_attn`: its weight
  and bias), "group" (a top-level module group: the embedding, the block stack, the final norm, the head,
  named as in the model, e.g. `transformer.wte`, `transformer.h`, `transformer.ln_f`) or "total";
- module, group: the module's name and its group's (for groups both are the group, for the total
  "total");
- norm: sqrt of the sum of the squared parameters of that module, group or model (computed in float64);
- n_params: how many numbers that is.

The parameters are the model's (`named_parameters`): buffers (rotary tables) are left out and a tied or
shared parameter (a head tied to the embedding, blocks shared across depth) counts once, under the first
module that holds it. Groups: the model's top-level modules, looking through a module that holds the block
stack (a `ModuleList`) with other modules, such as GPT's `transformer` or Mamba's `backbone`; a parameter
held by such a module itself (memory tokens) is a group of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..io import sha256_file
from ..train.checkpoints import load_model

RUN_INFO = "run.json"
NORMS = "weight_norms.parquet"
COLUMNS = [
    *("run_id", "dataset", "model", "training", "seed", "family"),
    *("step", "reason", "level", "module", "group", "norm", "n_params"),
]


def _holds_stack(module: nn.Module) -> bool:
    """A module that holds the block stack together with other modules (looked through for groups)."""
    children = list(module.children())
    return not isinstance(module, nn.ModuleList) and any(isinstance(c, nn.ModuleList) for c in children)


def group_of(model: nn.Module, name: str) -> str:
    """The top-level module group of parameter `name` (module docstring)."""
    *path, _ = name.split(".")
    module, prefix = model, []
    for part in path:
        module = module.get_submodule(part)
        prefix.append(part)
        if not _holds_stack(module):
            return ".".join(prefix)
    return name  # held by a wrapper itself


def norms(model: nn.Module) -> list[dict[str, Any]]:
    """Rows (level, module, group, norm, n_params) of one model: per module, per group, total."""
    sums: dict[tuple[str, str, str], list[float]] = {}  # (level, module, group) -> [sum of squares, n]

    def add(key: tuple[str, str, str], p: torch.Tensor) -> None:
        acc = sums.setdefault(key, [0.0, 0])
        acc[0] += float(p.detach().double().pow(2).sum())
        acc[1] += p.numel()

    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0] if "." in name else name
        group = group_of(model, name)
        add(("module", module, group), p)
        add(("group", group, group), p)
        add(("total", "total", "total"), p)
    order = {"module": 0, "group": 1, "total": 2}
    return [
        {"level": level, "module": module, "group": group, "norm": total**0.5, "n_params": n}
        for (level, module, group), (total, n) in sorted(sums.items(), key=lambda kv: order[kv[0][0]])
    ]


def checkpoints(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run's run.json and its checkpoint list, each file checked against its recorded sha256."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / RUN_INFO).read_text())
    listed = info.get("checkpoints") or []
    if not listed:
        raise ValueError(
            f"{run_dir / RUN_INFO}: no checkpoints; train the run with `checkpoints` set in its training "
            "settings (grokbench/train/checkpoints.py)"
        )
    for entry in listed:
        path = run_dir / entry["file"]
        if not path.exists():
            raise ValueError(f"{path}: listed in {run_dir / RUN_INFO} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"{path}: sha256 differs from {run_dir / RUN_INFO}'s (changed after training)")
    return info, listed


def weight_norms(run_dir: str | Path) -> pd.DataFrame:
    """The weight-norm table of one run (module docstring), by step."""
    run_dir = Path(run_dir)
    info, listed = checkpoints(run_dir)
    cell = info.get("cell", {})
    identity = {
        "run_id": info.get("run_id"),
        **{k: cell.get(k) for k in ("dataset", "model", "training", "seed")},
        "family": info["config"]["model"].get("family"),
    }
    rows = []
    for entry in sorted(listed, key=lambda e: e["step"]):
        model = load_model(run_dir / entry["file"], info["vocab_size"], info["block_size"])
        for row in norms(model):
            rows.append({**identity, "step": int(entry["step"]), "reason": entry["reason"], **row})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"step": "int64", "n_params": "int64", "seed": "int64", "norm": "float64"})


def inputs(run_dir: str | Path) -> list[Path]:
    """The files a weight-norm table is made from: run.json and the checkpoints it lists."""
    run_dir = Path(run_dir)
    listed = json.loads((run_dir / RUN_INFO).read_text()).get("checkpoints") or []
    return [run_dir / RUN_INFO, *(run_dir / e["file"] for e in listed)]
