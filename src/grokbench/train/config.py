"""Training settings: one dataclass, the single source of their names, types and defaults.

This module is the one owner of the training options: their names, types, defaults and bounds. The config
schema only says that `training` maps names to mappings; `TrainConfig.from_dict` rejects unknown keys,
wrong types and out-of-range values by name, and a grid's `hparams` may sweep any scalar field here
(grokbench.study.hparam_keys).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..params import from_dict
from .accelerators import AcceleratorConfig
from .checkpoints import Checkpoints
from .early_stop import EarlyStop


@dataclass(frozen=True)
class EvalSchedule:
    """Evaluate every `dense_every` steps up to `dense_until`, then every `every` steps (and at the end)."""

    dense_every: int = 50
    dense_until: int = 1000
    every: int = 250
    max_size: int = 1000  # facts per evaluation split (a fixed, seeded subsample of larger splits)
    batch_size: int = 4096

    def steps(self, total: int) -> list[int]:
        dense = range(0, min(self.dense_until, total) + 1, self.dense_every)
        sparse = range(self.dense_until, total + 1, self.every)
        return sorted({*dense, *sparse, total})


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 200
    grad_clip: float = 1.0
    # share of each batch drawn from the atomic facts; None samples uniformly over all training facts
    atomic_fraction: float | None = 0.3
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    # torch.compile the model (dynamic shapes): ~2.5x faster recurrent families on CPU (RWKV, Mamba: their
    # elementwise scans fuse), no gain for attention models; costs ~15-50 s of compilation per run
    compile: bool = False
    eval: EvalSchedule = field(default_factory=EvalSchedule)
    accelerators: AcceleratorConfig = field(default_factory=AcceleratorConfig)  # all off by default
    # null: train every step; {evals: k}: stop once memorized and OOD-generalized for k evaluations
    early_stop: EarlyStop | None = None
    # null: no weights kept but the final model.pt; {log_spaced: 8, transitions: true, ...}: weights at
    # log-spaced evaluation steps and at memorization / ID / OOD generalization (train/checkpoints.py)
    checkpoints: Checkpoints | None = None
    # TensorBoard event files in the run folder (accuracy and loss per split, the config as hparams; train/
    # live.py): `tensorboard --logdir results/runs`. Needs the `tensorboard` extra; the results do not change
    tensorboard: bool = False
    # an offline Weights & Biases run in the run folder (the same values; train/live.py): `wandb sync` later.
    # Needs the `wandb` extra; the results do not change
    wandb: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "training") -> TrainConfig:
        cfg = from_dict(cls, d, where)
        cfg.check(where)
        return cfg

    def check(self, where: str = "training") -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ValueError(f"{where}.{key}={getattr_path(self, key)!r}: expected {what}")

        need(self.steps >= 1, "steps", "an integer >= 1")
        need(self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.lr > 0, "lr", "a positive number")
        need(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            "two numbers in [0, 1)",
        )
        need(self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        need(self.grad_clip >= 0, "grad_clip", "a number >= 0 (0 disables clipping)")
        need(
            self.atomic_fraction is None or 0 <= self.atomic_fraction < 1,
            "atomic_fraction",
            "null or a number in [0, 1)",
        )
        need(self.device in ("auto", "cpu", "cuda"), "device", "one of auto, cpu, cuda")
        need(self.precision in ("auto", "fp32", "bf16"), "precision", "one of auto, fp32, bf16")
        for key in ("dense_every", "every", "max_size", "batch_size"):
            need(getattr(self.eval, key) >= 1, f"eval.{key}", "an integer >= 1")
        need(self.eval.dense_until >= 0, "eval.dense_until", "an integer >= 0")
        self.accelerators.check(f"{where}.accelerators")
        if self.early_stop is not None:
            self.early_stop.check(f"{where}.early_stop")
        if self.checkpoints is not None:
            self.checkpoints.check(f"{where}.checkpoints")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def getattr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
