"""Grokking accelerators: gradient filters, perpendicular gradients, StableMax loss, weight-decay schedules.

Every accelerator is OFF by default; `AcceleratorConfig()` leaves training exactly as it was (its loss is
the trainer's softmax cross-entropy). The trainer drives them through one object, `Accelerators`:

    acc = Accelerators(cfg.accelerators)
    loss = acc.loss_fn(logits, y)            # softmax or StableMax cross-entropy on the answer tokens
    loss.backward()
    acc.after_backward(model)                # Grokfast filter, then ⊥Grad, on the gradients in place
    acc.before_step(opt, step)               # weight decay of step `step` into the optimizer's groups
    opt.step()
    state = acc.state_dict()                 # the filter's state, for resumable training

Sources (definitions reimplemented here, no code taken):
- Grokfast: Lee et al. 2024, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients",
  https://github.com/ironjr/grokfast (`gradfilter_ema`, `gradfilter_ma`).
- StableMax and ⊥Grad: Prieto et al. 2025, "Grokking at the Edge of Numerical Stability",
  https://github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability.
- Weight decay and grokking: larger decay groks sooner (Nanda et al. 2023; Wang et al. 2024, App. E.1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..params import from_dict
from .data import IGNORE

GROKFAST_KINDS = ("ema", "ma")
LOSSES = ("softmax", "stablemax")
WD_KINDS = ("constant", "warmup", "step", "cosine")
DEFAULT_LAM = {"ema": 2.0, "ma": 5.0}  # the Grokfast paper's settings for modular arithmetic


# --- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrokfastConfig:
    """Grokfast gradient filter. `alpha` is used by kind 'ema' only, `window` by kind 'ma' only."""

    kind: str = "ema"  # ema | ma
    alpha: float = 0.98  # EMA momentum
    lam: float | None = None  # amplification of the slow gradient; None: 2.0 for ema, 5.0 for ma
    window: int = 100  # MA window, in steps

    @property
    def amplification(self) -> float:
        return DEFAULT_LAM.get(self.kind, 0.0) if self.lam is None else self.lam


@dataclass(frozen=True)
class WDSchedule:
    """A multiplier m(step) of the configured weight decay (see `wd_multiplier`).

    `steps` is the ramp length for 'warmup' and 'cosine' and the change step for 'step'; it is required
    for those kinds and unused by 'constant'. `start` and `end` are multipliers (>= 0).
    """

    kind: str | None = None  # constant | warmup | step | cosine (required)
    steps: int | None = None
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class AcceleratorConfig:
    """Which accelerators a run uses; the defaults use none.

    grokfast: null, or a Grokfast filter ({kind: ema|ma, alpha, lam, window}).
    perp_grad: replace each parameter's gradient by its ⊥Grad (see `perp_grad_`).
    loss: "softmax" (the usual cross-entropy) or "stablemax" (see `stablemax_cross_entropy`).
    wd_schedule: null, or a schedule of the weight decay ({kind, steps, start, end}).
    """

    grokfast: GrokfastConfig | None = None
    perp_grad: bool = False
    loss: str = "softmax"
    wd_schedule: WDSchedule | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "accelerators") -> AcceleratorConfig:
        cfg = from_dict(cls, d, where)  # nested mappings become GrokfastConfig / WDSchedule there
        cfg.check(where)
        return cfg

    def check(self, where: str = "accelerators") -> None:
        def need(ok: bool, key: str, value: Any, what: str) -> None:
            if not ok:
                raise ValueError(f"{where}.{key}={value!r}: expected {what}")

        need(self.loss in LOSSES, "loss", self.loss, "one of " + ", ".join(LOSSES))
        need(isinstance(self.perp_grad, bool), "perp_grad", self.perp_grad, "true or false")
        g = self.grokfast
        if g is not None:
            need(g.kind in GROKFAST_KINDS, "grokfast.kind", g.kind, "one of ema, ma")
            need(0 <= g.alpha < 1, "grokfast.alpha", g.alpha, "a number in [0, 1)")
            need(g.lam is None or g.lam >= 0, "grokfast.lam", g.lam, "null or a number >= 0")
            need(g.window >= 1, "grokfast.window", g.window, "an integer >= 1")
        s = self.wd_schedule
        if s is not None:
            need(s.kind in WD_KINDS, "wd_schedule.kind", s.kind, "one of " + ", ".join(WD_KINDS))
            if s.kind != "constant":
                need(
                    s.steps is not None and s.steps >= 1,
                    "wd_schedule.steps",
                    s.steps,
                    f"an integer >= 1 for kind {s.kind!r}",
                )
            need(s.start >= 0, "wd_schedule.start", s.start, "a number >= 0")
            need(s.end >= 0, "wd_schedule.end", s.end, "a number >= 0")

    @property
    def active(self) -> bool:
        """Whether any accelerator is on."""
        return (
            self.grokfast is not None
            or self.perp_grad
            or self.loss != "softmax"
            or self.wd_schedule is not None
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- Grokfast gradient filters --------------------------------------------------------------------------


def _grads(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """(name, gradient) of every trainable parameter that has a gradient this step."""
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is not None:
            yield name, p.grad


class GradFilter:
    """A filter of the gradients, applied in place between `loss.backward()` and `optimizer.step()`.

    Its state is keyed by parameter name (`model.named_parameters()`, so pass the plain module, not a
    `torch.compile` wrapper) and saved with `state_dict()` (a detached copy); `load_state_dict` accepts
    tensors on any device (checkpoints are loaded on the CPU) and moves them to the gradient's device at
    the next `apply`.
    """

    kind = ""

    def apply(self, model: nn.Module) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _check_kind(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(
                f"a {state.get('kind')!r} filter state cannot be loaded into a {self.kind!r} filter"
            )


class EMAFilter(GradFilter):
    """Grokfast-EMA: mu <- alpha * mu + (1 - alpha) * g, then g <- g + lam * mu, per parameter.

    mu starts at the first gradient a parameter receives (as in ironjr/grokfast `gradfilter_ema`, where
    the first update gives mu = alpha * g + (1 - alpha) * g = g), so the first step's gradient is
    (1 + lam) g. mu is the filter of the raw gradients, never of the amplified ones. No bias correction.
    """

    kind = "ema"

    def __init__(self, alpha: float = 0.98, lam: float = 2.0):
        self.alpha, self.lam = alpha, lam
        self.mu: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for name, g in _grads(model):
            mu = self.mu.get(name)
            if mu is None:
                mu = self.mu[name] = g.detach().clone()
            else:
                if mu.device != g.device:
                    mu = self.mu[name] = mu.to(g.device)
                mu.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
            g.add_(mu, alpha=self.lam)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mu": {k: v.detach().clone() for k, v in self.mu.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_kind(state)
        self.mu = {k: v.detach().clone() for k, v in state["mu"].items()}


class MAFilter(GradFilter):
    """Grokfast-MA: g <- g + lam * mean(last `window` gradients, this one included), per parameter.

    Until a parameter has received `window` gradients the gradient is left unchanged (ironjr/grokfast
    `gradfilter_ma` with its default warmup=True, filter_type='mean'). The last `window` raw gradients are
    kept in a ring buffer with their running sum, which is re-summed from the buffer each time the ring
    wraps, so rounding does not drift. Memory: `window` copies of the model's gradients (100 by default).
    """

    kind = "ma"

    def __init__(self, window: int = 100, lam: float = 5.0):
        self.window, self.lam = window, lam
        self.buf: dict[str, torch.Tensor] = {}  # (window, *shape) raw gradients, ring order
        self.sum: dict[str, torch.Tensor] = {}  # sum of the gradients in buf
        self.seen: dict[str, int] = {}  # gradients received so far

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        w = self.window
        for name, g in _grads(model):
            if name not in self.buf:
                self.buf[name] = torch.zeros((w, *g.shape), dtype=g.dtype, device=g.device)
                self.sum[name] = torch.zeros_like(g)
                self.seen[name] = 0
            buf, total = self.buf[name], self.sum[name]
            if buf.device != g.device:
                buf, total = self.buf[name], self.sum[name] = buf.to(g.device), total.to(g.device)
            n = self.seen[name]
            i = n % w
            if n >= w:
                total.sub_(buf[i])
            buf[i].copy_(g)
            total.add_(g)
            self.seen[name] = n = n + 1
            if i == w - 1:
                torch.sum(buf, dim=0, out=total)
            if n >= w:
                g.add_(total, alpha=self.lam / w)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "window": self.window,
            "buf": {k: v.detach().clone() for k, v in self.buf.items()},
            "sum": {k: v.detach().clone() for k, v in self.sum.items()},
            "seen": dict(self.seen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_kind(state)
        if state["window"] != self.window:
            raise ValueError(
                f"an MA filter state of window {state['window']} cannot be loaded into window {self.window}"
            )
        self.buf = {k: v.detach().clone() for k, v in state["buf"].items()}
        self.sum = {k: v.detach().clone() for k, v in state["sum"].items()}
        self.seen = dict(state["seen"])


def make_filter(cfg: GrokfastConfig | None) -> GradFilter | None:
    if cfg is None:
        return None
    if cfg.kind == "ema":
        return EMAFilter(cfg.alpha, cfg.amplification)
    if cfg.kind == "ma":
        return MAFilter(cfg.window, cfg.amplification)
    raise ValueError(f"grokfast.kind={cfg.kind!r}: expected one of ema, ma")


# --- ⊥Grad ----------------------------------------------------------------------------------------------


@torch.no_grad()
def perp_grad_(params: Iterable[torch.Tensor]) -> None:
    """⊥Grad (Prieto et al. 2025), in place, separately for each parameter tensor w with gradient g:

        g_perp = g - (w.g / w.w) w        (dot products over all entries of the tensor)
        g     <- g_perp * |g| / |g_perp|  (Euclidean norms of the whole tensor)

    So the new gradient is orthogonal to w and has the norm of the old one, per tensor; the model's total
    gradient norm is therefore unchanged too (gradient clipping acts the same with or without ⊥Grad).
    Special cases: w == 0 (e.g. a zero-initialized bias): no direction to remove, g is left unchanged;
    g_perp == 0 (g parallel to w, or g == 0): the gradient becomes 0 (nothing orthogonal to rescale).
    Every trainable parameter is treated, matrices and vectors alike. Scalars are computed in float32
    at least; no host synchronization.
    """
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        dtype = torch.promote_types(g.dtype, torch.float32)
        w, gf = p.detach().reshape(-1).to(dtype), g.reshape(-1).to(dtype)
        ww = torch.dot(w, w)
        coef = torch.where(ww > 0, torch.dot(w, gf) / ww, 0.0)  # 0/0 in the unused branch is discarded
        g_perp = gf - coef * w
        norm_perp = torch.linalg.vector_norm(g_perp)
        scale = torch.where(norm_perp > 0, torch.linalg.vector_norm(gf) / norm_perp, 0.0)
        g.copy_((g_perp * scale).view_as(g))


# --- losses ---------------------------------------------------------------------------------------------


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0: positive, increasing, continuous with s' continuous."""
    pos = x >= 0
    return torch.where(pos, torch.where(pos, x, 0.0) + 1, 1 / (1 - torch.where(pos, 0.0, x)))


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(s(x_i) / sum_j s(x_j)): the StableMax log-probabilities (Prieto et al. 2025).

    Computed as log s - logsumexp(log s) with log s = log1p(x) for x >= 0 and -log1p(-x) for x < 0: no
    overflow or underflow for any finite logits, and finite gradients everywhere (each branch of the
    `where` sees only inputs valid for it, so the unused branch contributes no NaN).
    """
    pos = x >= 0
    log_s = torch.where(pos, torch.log1p(torch.where(pos, x, 0.0)), -torch.log1p(torch.where(pos, 0.0, -x)))
    return log_s - torch.logsumexp(log_s, dim=dim, keepdim=True)


def stablemax_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with StableMax in place of softmax, on the answer tokens.

    logits (..., V), targets y (...) with IGNORE (-100) where there is no answer token. Like the
    softmax loss (F.cross_entropy with ignore_index): computed in float32 (bf16 logits are upcast),
    reduction 'mean' averages over the non-ignored tokens (NaN when there are none, as F.cross_entropy),
    'sum' sums them, 'none' gives per-token losses with 0 at ignored positions.

    s is strictly increasing, so StableMax preserves the order of the logits: its argmax equals the
    softmax's and the logits' argmax, and accuracy (argmax of the logits) needs no change.
    """
    logp = log_stablemax(logits.float(), dim=-1)
    mask = y != IGNORE
    picked = logp.gather(-1, torch.where(mask, y, 0).unsqueeze(-1)).squeeze(-1)
    nll = torch.where(mask, -picked, 0.0)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.sum() / mask.sum()
    raise ValueError(f"reduction={reduction!r}: expected one of mean, sum, none")


def softmax_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The usual cross-entropy on the answer tokens: the training loss when no accelerator changes it."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE, reduction=reduction
    ).reshape(y.shape if reduction == "none" else ())


LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": softmax_cross_entropy,
    "stablemax": stablemax_cross_entropy,
}


# --- weight-decay schedules -----------------------------------------------------------------------------


def wd_multiplier(schedule: WDSchedule | None, step: int) -> float:
    """The factor applied to the configured weight decay at optimizer step `step` (0-based).

    None: 1. constant: `end` at every step. warmup: linear from `start` at step 0 to `end` at step
    `steps`, then `end` (defaults: decay warms up from 0). step: `start` before step `steps`, `end` from
    it on. cosine: start + (end - start) * (1 - cos(pi * t / steps)) / 2 with t = min(step, steps), i.e. a
    half cosine from `start` to `end` over `steps` steps, then `end`.
    """
    if schedule is None:
        return 1.0
    kind, start, end = schedule.kind, schedule.start, schedule.end
    if kind == "constant":
        return end
    n = schedule.steps
    if kind == "warmup":
        return start + (end - start) * min(step, n) / n
    if kind == "step":
        return start if step < n else end
    if kind == "cosine":
        return start + (end - start) * (1 - math.cos(math.pi * min(step, n) / n)) / 2
    raise ValueError(f"wd_schedule.kind={kind!r}: expected one of " + ", ".join(WD_KINDS))


def set_weight_decay(opt: torch.optim.Optimizer, multiplier: float) -> None:
    """weight_decay = multiplier * base for every parameter group.

    The base is the group's weight decay when first seen, kept in the group as 'base_weight_decay' (like
    the learning-rate schedulers' 'initial_lr'), so it travels with `opt.state_dict()` and a resumed run
    scales the same base. Groups without decay (base 0: biases, norm gains) stay at 0.
    """
    for group in opt.param_groups:
        base = group.setdefault("base_weight_decay", group["weight_decay"])
        group["weight_decay"] = base * multiplier


# --- the trainer's entry point ----------------------------------------------------------------------------


class Accelerators:
    """The accelerators of one run, as the training loop calls them (see the module docstring).

    With the default config every call is a no-op and `loss_fn` is the trainer's softmax cross-entropy,
    so a loop that always calls them trains exactly as before.
    """

    def __init__(self, cfg: AcceleratorConfig | None = None):
        self.cfg = cfg = cfg if cfg is not None else AcceleratorConfig()
        cfg.check()
        self.loss_fn: Callable[..., torch.Tensor] = LOSS_FUNCTIONS[cfg.loss]
        self.filter = make_filter(cfg.grokfast)

    def after_backward(self, model: nn.Module) -> None:
        """Between backward and the optimizer step: the Grokfast filter, then ⊥Grad, in place.

        The filter sees the raw gradients; ⊥Grad then acts on the gradient the optimizer will use.
        """
        if self.filter is not None:
            self.filter.apply(model)
        if self.cfg.perp_grad:
            perp_grad_(p for p in model.parameters() if p.requires_grad)

    def before_step(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Before `opt.step()` of the 0-based step `step`: that step's weight decay, when scheduled."""
        if self.cfg.wd_schedule is not None:
            set_weight_decay(opt, wd_multiplier(self.cfg.wd_schedule, step))

    def state_dict(self) -> dict[str, Any]:
        return {"grokfast": self.filter.state_dict() if self.filter is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("grokfast")
        if self.filter is not None and saved is not None:
            self.filter.load_state_dict(saved)
        elif (self.filter is None) != (saved is None):
            raise ValueError(
                "accelerator state of another configuration (Grokfast filter on in one, off in the other)"
            )
