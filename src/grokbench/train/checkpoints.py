"""Weights across training, opt-in: compact checkpoints at log-spaced steps and at the run's transitions.

`training.<name>.checkpoints: {log_spaced: 8, initial: true, transitions: true, dtype: fp32}` (default
null: none saved) writes the model's weights, nothing else, into `<run_dir>/checkpoints/step{step:08d}.pt`:
`{"model": state_dict on the CPU, "model_spec": ..., "step": int}`, the layout of the final `model.pt`, so
that one loader (`load_model`) reads both. Every checkpoint is taken at an evaluation step, before that
step's update, so the metrics hold the accuracies of exactly those weights. run.json lists them
(`checkpoints`: step, file relative to the run folder, sha256, reason, reasons) and names each file among
its `outputs`, so that `grokbench audit` rehashes them.

When (`reasons`; `reason` is the first of memorization, id, ood, final, log that applies):
- log: `log_spaced` evaluation steps spread evenly on a log scale from the first evaluation after step 0
  to the last one scheduled (each target rounded to the nearest evaluation step on that scale; targets
  that round to the same step count once, so a short schedule may give fewer), and step 0, the
  initialization, with `initial`;
- memorization / id / ood, with `transitions`: the memorization, ID and OOD generalization steps as the
  analysis defines them (grokbench.report.analysis): the first evaluation from which the split's
  accuracy stays >= its threshold, "stays" within `tolerance`. They are detected online: at each
  evaluation the analysis's step of the curve so far (`grokbench.curves.first_stable_step`) is computed;
  an evaluation reaching the threshold becomes that step and is saved at once (the first evaluation that
  reaches it, when the curve never falls back). If the curve later falls below threshold - tolerance, the
  analysis's step moves to a later evaluation, which is saved when it comes; the earlier candidate is no
  longer a transition and its file is deleted when the run ends (not at once: a resumed state saved
  before the fall lists it). So a finished run's transition checkpoints are at exactly its summary's
  memorization / ID / OOD generalization steps. The splits, thresholds and tolerance default to the
  analysis's defaults; a study's validation requires them to equal its `analysis` section;
- final: the weights the run ended with (those of model.pt), at its last step (a stopped or diverged
  run's too).

`dtype`: fp32 (the default) saves the weights as trained (the parameters are float32 also under bf16
autocast), so a loaded checkpoint reproduces the recorded evaluation; bf16 halves the files, rounding
every floating tensor to bfloat16 (`load_model` casts it back; the accuracies then differ slightly).

Resuming: the list is part of the resumable state (grokbench.train.resume), so a resumed run keeps the
files saved before it; files written after the state was saved are written again as the run replays
those steps. When the run ends, every `step*.pt` in the folder that the list does not name (an earlier
configuration's, a dropped candidate's) is deleted, so the folder holds exactly what run.json lists.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..curves import Transitions, first_stable_step
from ..io import atomic_path, sha256_bytes

CHECKPOINT_DIR = "checkpoints"  # in the run folder
REASONS = ("memorization", "id", "ood", "final", "log")  # `reason`: the first that applies
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def checkpoint_file(step: int) -> str:
    """A checkpoint's path relative to the run folder."""
    return f"{CHECKPOINT_DIR}/step{step:08d}.pt"


@dataclass(frozen=True)
class Checkpoints(Transitions):
    """Where to keep weights; the transitions are detected with the splits and thresholds (Transitions),
    which must equal the analysis's."""

    log_spaced: int = 8  # evaluation steps spread on a log scale (0: none)
    initial: bool = True  # also step 0, the initialization
    transitions: bool = True  # at the memorization, ID and OOD generalization steps
    dtype: str = "fp32"  # fp32 (exact) | bf16 (half the size)

    def check(self, where: str) -> None:
        if self.log_spaced < 0:
            raise ValueError(f"{where}.log_spaced={self.log_spaced}: expected an integer >= 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}.dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        for key in ("memorization_threshold", "threshold", "tolerance"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{where}.{key}={getattr(self, key)}: expected a number in [0, 1]")

    def transition_splits(self) -> dict[str, tuple[str, float]]:
        """reason -> (split, threshold)."""
        return {
            "memorization": (self.memorization_split, self.memorization_threshold),
            "id": (self.id_split, self.threshold),
            "ood": (self.ood_split, self.threshold),
        }


def log_steps(eval_steps: list[int], n: int, initial: bool) -> list[int]:
    """The `log` checkpoint steps among `eval_steps` (see the module docstring)."""
    positive = np.array(sorted(s for s in set(eval_steps) if s > 0))
    out = {0} if initial and 0 in eval_steps else set()
    if n > 0 and len(positive):
        logs = np.log(positive)
        for target in np.linspace(logs[0], logs[-1], n):
            out.add(int(positive[np.argmin(np.abs(logs - target))]))
    return sorted(out)


def transition_steps(rows: list[dict] | pd.DataFrame, cfg: Checkpoints) -> dict[str, int | None]:
    """reason -> the analysis's step of that transition on the evaluations so far (None: not reached)."""
    df = pd.DataFrame(rows, columns=["step", "split", "accuracy"]) if isinstance(rows, list) else rows
    out: dict[str, int | None] = {}
    for reason, (split, threshold) in cfg.transition_splits().items():
        curve = df[df["split"] == split].sort_values("step")
        steps, acc = curve["step"].to_numpy(), curve["accuracy"].to_numpy(dtype=float)
        out[reason] = first_stable_step(steps, acc, threshold, cfg.tolerance)
    return out


def weights_state(model: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's state_dict on the CPU, floating tensors in `dtype`, tied tensors (a head sharing the
    embedding) still one tensor, so a file stores them once. On the CPU in float32 these are the model's
    own tensors: save them before the next update."""
    out, seen = {}, {}
    for k, v in model.state_dict().items():
        key = (v.device, v.data_ptr(), v.dtype, tuple(v.shape), v.stride())
        if key not in seen:
            v = v.detach()
            # a view of a larger tensor (a pack member's slice): torch.save would store all of it
            if v.untyped_storage().nbytes() > v.numel() * v.element_size():
                v = v.clone()
            seen[key] = v.to("cpu", dtype=dtype) if v.is_floating_point() else v.to("cpu")
        out[k] = seen[key]
    return out


def save_weights(path: str | Path, state: dict[str, torch.Tensor], model_spec: dict, step: int) -> str:
    """Write a weights file (the layout of model.pt and of every checkpoint) atomically; its sha256.
    Serialized in memory first: torch.save names the archive inside after the file it writes, which
    here would be a random temporary name, so the same weights always give the same bytes."""
    buffer = io.BytesIO()
    torch.save({"model": state, "model_spec": model_spec, "step": int(step)}, buffer)
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return sha256_bytes(data)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A weights file (a checkpoint or model.pt): {"model": state_dict, "model_spec": ..., "step": int}."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path, vocab_size: int, block_size: int) -> nn.Module:
    """The model of a weights file, in float32 and eval mode; `vocab_size` and `block_size` are the run's
    (run.json has both)."""
    from ..models import build_model

    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_spec"], vocab_size=vocab_size, block_size=block_size)
    model.load_state_dict(ckpt["model"])  # copies into the float32 parameters (bf16 files are cast)
    return model.eval()


def prune(run_dir: str | Path, keep: set[str]) -> None:
    """Delete every checkpoint file of the run folder but those named in `keep` (paths as listed), and the
    folder if that leaves it empty."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    for path in folder.glob("step*.pt"):
        if f"{CHECKPOINT_DIR}/{path.name}" not in keep:
            path.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def finish(
    weights: WeightCheckpoints | None, run_dir: str | Path, end_step: int, model: nn.Module, metrics
) -> list[dict[str, Any]]:
    """The checkpoint list of a run that ended (run.json's `checkpoints`); without checkpoints none, and
    the files an earlier configuration of the run left are deleted."""
    if weights is None:
        prune(run_dir, set())
        return []
    return weights.finish(end_step, model, metrics)


def for_run(cfg, run_dir: str | Path, model_spec: dict) -> WeightCheckpoints | None:
    """The WeightCheckpoints of one run trained with `cfg` (a TrainConfig) into `run_dir`; None without
    `cfg.checkpoints` (opt-in). Single runs (train/run.py) and each pack member (train/pack.py)."""
    if cfg.checkpoints is None:
        return None
    return WeightCheckpoints(cfg.checkpoints, run_dir, model_spec, cfg.eval.steps(cfg.steps))


class WeightCheckpoints:
    """Saves one run's checkpoints as it trains (`at_eval`) and settles the list at its end (`finish`)."""

    def __init__(self, cfg: Checkpoints, run_dir: str | Path, model_spec: dict, eval_steps: list[int]):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.model_spec = model_spec
        self.log = set(log_steps(eval_steps, cfg.log_spaced, cfg.initial))
        self.saved: dict[int, dict[str, Any]] = {}  # step -> {"step", "file", "sha256"}

    def save(self, step: int, model: nn.Module) -> dict[str, Any]:
        file = checkpoint_file(step)
        state = weights_state(model, DTYPES[self.cfg.dtype])
        sha = save_weights(self.run_dir / file, state, self.model_spec, step)
        self.saved[step] = {"step": int(step), "file": file, "sha256": sha}
        return self.saved[step]

    def at_eval(self, step: int, rows: list[dict], model: nn.Module) -> None:
        """After the evaluation at `step` (its rows appended): save if it is a log step or has just become
        a transition step of the curve so far."""
        due = step in self.log
        if self.cfg.transitions and not due:
            due = step in transition_steps(rows, self.cfg).values()
        if due:
            self.save(step, model)

    def finish(self, end_step: int, model: nn.Module, metrics: pd.DataFrame) -> list[dict[str, Any]]:
        """The run ended at `end_step` with `model`: save the final weights (unless that step is saved
        already: the same weights), give every checkpoint its reasons from the whole curve, drop
        those with none, delete every file the list does not name. The list, by step, for run.json."""
        if end_step not in self.saved:
            self.save(end_step, model)
        transitions = transition_steps(metrics, self.cfg) if self.cfg.transitions else {}
        entries = []
        for step in sorted(self.saved):
            reasons = {reason for reason, s in transitions.items() if s == step}
            reasons |= {"log"} if step in self.log else set()
            reasons |= {"final"} if step == end_step else set()
            if reasons:
                ordered = [r for r in REASONS if r in reasons]
                entries.append({**self.saved[step], "reason": ordered[0], "reasons": ordered})
        self.saved = {e["step"]: self.saved[e["step"]] for e in entries}
        prune(self.run_dir, {e["file"] for e in entries})
        return entries

    # the resumable state (grokbench.train.resume): what was saved before it
    def state_dict(self) -> dict[str, Any]:
        return {"saved": [self.saved[s] for s in sorted(self.saved)]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.saved = {int(e["step"]): dict(e) for e in (state or {}).get("saved", [])}
