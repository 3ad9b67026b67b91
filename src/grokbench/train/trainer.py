"""The training loop: AdamW, warmup then constant learning rate, answer-token loss, scheduled evaluation.

One call trains one run (dataset x model x training settings x seed) and returns its metrics table.
Everything random (initialization, batch order) derives from the run seed, so a run is reproducible on
the same device and software.

A non-finite training loss (NaN, inf) stops the run at that step, before its update (`Divergence`): the
run is then evaluated once more at that step, unless it was just evaluated there, so its curves show where
it broke, and `Result.diverged_step` says where. The run is not an error: its outputs are written.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .accelerators import Accelerators
from .checkpoints import WeightCheckpoints
from .config import TrainConfig
from .data import IGNORE, Tensors
from .resume import Checkpointer, Interrupted, rng_states, set_rng_states


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device='cuda' but CUDA is not available on this machine")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def decays(p: torch.Tensor) -> bool:
    """Whether AdamW decays parameter `p`: matrices and embeddings yes; biases, norm gains and parameters a
    family marks `_no_weight_decay` (Mamba's A_log, D, dt bias, as its authors do) no."""
    return p.dim() >= 2 and not getattr(p, "_no_weight_decay", False)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW with decoupled weight decay on the parameters that `decays`, none on the others."""
    params = [p for p in model.parameters() if p.requires_grad]
    return adamw([p for p in params if decays(p)], [p for p in params if not decays(p)], cfg, device)


# devices on which AdamW runs fused. On the CPU, measured for the tiny GPT (0.41M parameters, 1 thread,
# CPU time, 2026-12): the optimizer step alone 4x faster (1,340 -> 340 us), a training step 3.8% faster at
# batch 128 (30.6 -> 29.4 ms), packed x2 2.6% (68.2 -> 66.4 ms); the same updates within fp32 rounding
# (tests/test_trainer.py, tests/test_packed.py).
FUSED_DEVICES = ("cuda", "cpu")


def use_fused(device: torch.device) -> bool:
    """Whether AdamW is fused on `device` (FUSED_DEVICES: CUDA and the CPU)."""
    return device.type in FUSED_DEVICES


def adamw(decay: list[torch.Tensor], no_decay: list[torch.Tensor], cfg: TrainConfig, device: torch.device):
    """AdamW (fused where `use_fused`) over two groups, `cfg.weight_decay` and none, with linear
    learning-rate warmup over `cfg.warmup_steps` steps, then constant."""
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = use_fused(device)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    warmup = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )
    return opt, sched


class BatchSampler:
    """Batches of training-fact indices: a fixed share of atomic facts, the rest inferred facts.

    With `atomic_fraction=None` a batch is drawn uniformly from all training facts. Draws are with
    replacement from a generator seeded by the run seed.
    """

    def __init__(self, t: Tensors, cfg: TrainConfig, seed: int):
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.atomic, self.inferred = t.train_atomic.cpu(), t.train_inferred.cpu()
        self.batch_size = cfg.batch_size
        if cfg.atomic_fraction is None:
            self.pools = [(torch.cat([self.atomic, self.inferred]), cfg.batch_size)]
        else:
            n_atomic = round(cfg.atomic_fraction * cfg.batch_size)
            self.pools = [(self.atomic, n_atomic), (self.inferred, cfg.batch_size - n_atomic)]
        for pool, n in self.pools:
            if n > 0 and len(pool) == 0:
                raise ValueError("training.atomic_fraction asks for facts the dataset does not have")

    def __call__(self) -> torch.Tensor:
        parts = [pool[torch.randint(len(pool), (n,), generator=self.gen)] for pool, n in self.pools if n]
        return torch.cat(parts)


@torch.no_grad()
def evaluate(model: nn.Module, t: Tensors, batch_size: int, amp) -> dict[str, tuple[float, float]]:
    """Per split: (mean answer-token loss, exact-match accuracy of the greedy answer).

    Teacher-forced argmax on every answer token equals greedy decoding's exact match: greedy decoding
    reproduces the answer iff each answer token is the argmax given the correct prefix.

    The sums stay on the model's device (the loss summed in float64, as Python floats would sum it) and
    are read back once per evaluation, so CUDA runs wait for the device once, not once per chunk.
    """
    was_training = model.training
    model.eval()
    stats = []  # per split: (loss sum, answer tokens, exact matches), float64 on the device
    for idx in t.eval_sets.values():
        loss_sum = torch.zeros((), dtype=torch.float64, device=t.x.device)
        n_tok = torch.zeros((), dtype=torch.int64, device=t.x.device)
        correct = torch.zeros((), dtype=torch.int64, device=t.x.device)
        for chunk in idx.split(batch_size):
            x, y = t.x[chunk], t.y[chunk]
            with amp:
                logits = model(x)
            mask = y != IGNORE
            loss = F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"
            )
            loss_sum += loss
            n_tok += mask.sum()
            hit = (logits.argmax(-1) == y) | ~mask
            correct += hit.all(dim=1).sum()
        stats.append(torch.stack([loss_sum, n_tok.double(), correct.double()]))
    model.train(was_training)
    values = torch.stack(stats).tolist() if stats else []  # the one host sync
    out = {}
    for (name, idx), (loss_sum, n_tok, correct) in zip(t.eval_sets.items(), values):
        out[name] = (loss_sum / max(n_tok, 1), correct / max(len(idx), 1))
    return out


class Divergence:
    """Watches the training loss: the first step whose loss is not finite ends the run before its update.

    Where the optimizer is not fused (`use_fused`), `observe` reads the loss on the host and returns True
    at once; the loop stops before the backward pass. With fused AdamW (CUDA, the CPU) the loop must not
    wait for the device at every step, so the check stays on the device (on the CPU, the same code): a
    flag, the first non-finite step and its loss. The flag is fused AdamW's `found_inf` input (the one
    torch's GradScaler uses), so from that step on every update is skipped on the device and the weights
    stay those of the divergence step however late the host notices. The host reads the flag after each
    step without blocking (pinned memory and an event) and, with `block`, before every evaluation and
    checkpoint, so none of them comes after the divergence.

    After the run: `step` (None while the loss stayed finite) and `loss` (the non-finite value).
    """

    def __init__(self, opt: torch.optim.Optimizer, device: torch.device):
        self.step: int | None = None
        self.loss: float | None = None
        self.on_device = bool(opt.defaults.get("fused"))
        if self.on_device:
            self.halted = torch.zeros((), device=device)  # 1.0 from the first non-finite loss on
            self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
            self.first_loss = torch.zeros((), device=device)
            opt.found_inf = self.halted  # read by fused Adam(W).step: skip the update while set
            cuda = device.type == "cuda"
            self.host = torch.zeros(()).pin_memory() if cuda else torch.zeros(())
            self.event = torch.cuda.Event() if cuda else None
            self.pending = False

    def observe(self, loss: torch.Tensor, step: int) -> bool:
        """The training loss of loop step `step` (computed from the weights after `step` updates). True:
        stop now (it is not finite; host check)."""
        if not self.on_device:
            if bool(torch.isfinite(loss)):
                return False
            self.step, self.loss = step, loss.item()
            return True
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss)
        new = bad & (self.halted == 0)  # the first non-finite loss
        self.first_step.masked_fill_(new, step)
        self.first_loss.copy_(torch.where(new, loss, self.first_loss))
        self.halted.masked_fill_(bad, 1.0)
        return False

    def after_step(self) -> None:
        """Start a non-blocking copy of the flag to the host, unless one is under way."""
        if self.on_device and not self.pending:
            self.host.copy_(self.halted, non_blocking=self.event is not None)
            if self.event is not None:
                self.event.record()
            self.pending = True

    def diverged(self, block: bool = False) -> bool:
        """Whether the loss has been non-finite; without `block`, as far as the host knows without waiting."""
        if self.step is not None or not self.on_device:
            return self.step is not None
        if block:
            halted = bool(self.halted.item())
        elif self.pending and (self.event is None or self.event.query()):
            self.pending = False
            halted = bool(self.host.item())
        else:
            return False
        if halted:
            self.step, self.loss = int(self.first_step.item()), float(self.first_loss.item())
        return halted


@dataclass
class Result:
    metrics: pd.DataFrame  # step, split, loss, accuracy, elapsed
    model: nn.Module
    wall_seconds: float
    device: str
    diverged_step: int | None = None  # the step whose training loss was not finite; None: completed
    diverged_loss: float | None = None  # that loss
    stopped_step: int | None = None  # where an early stop (cfg.early_stop) ended the run; None: it did not


def train(
    model_fn: Callable[[], nn.Module],
    t: Tensors,
    cfg: TrainConfig,
    seed: int,
    desc: str = "train",
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
    weights: WeightCheckpoints | None = None,
    on_step: Callable[[int], None] | None = None,
    on_metrics: Callable[[int, list[dict]], None] | None = None,
) -> Result:
    """Train one run. `model_fn` builds the model after the seed is set, so init follows the seed.

    With a `checkpoint`, the run resumes from a saved state of the same configuration, saves every
    `checkpoint.every` steps, and on SIGTERM / SIGUSR1 saves and raises `Interrupted`. `on_step(step)` is
    called after the optimizer step `step` (0-based; benchmarks time the loop with it).
    With `weights` (cfg.checkpoints), the weights are saved at its evaluation steps (train/checkpoints.py);
    what it saved is part of the resumable state.
    `on_metrics(step, rows)` is called with all the metrics rows so far (the list itself, not to be kept
    or changed): once when the loop starts, with the rows restored from a checkpoint (none on a fresh
    start) at the step it resumes from, then after each evaluation (the live progress file, run.py).

    A non-finite training loss at step k (the loss of the weights after k updates) stops the run there
    (`Divergence`), with a message on stderr naming `desc`, k and the loss; the metrics end with an
    evaluation at step k, and `Result.diverged_step` is k.

    On CUDA the loop does not wait for the device between steps: batch indices travel from pinned memory
    without blocking, the loss is read back only for the progress bar (every 50 steps), the divergence
    flag without blocking, and the metrics only at evaluations.
    """
    device = pick_device(cfg.device)
    torch.manual_seed(seed)
    model = model_fn().to(device)
    t = t.to(device)
    amp = autocast(device, cfg.precision)
    opt, sched = make_optimizer(model, cfg, device)
    accel = Accelerators(cfg.accelerators)  # Grokfast, perpendicular gradient, StableMax, wd schedule
    sampler = BatchSampler(t, cfg, seed)
    divergence = Divergence(opt, device)
    eval_steps = set(cfg.eval.steps(cfg.steps))
    rows: list[dict] = []
    first_step, spent = 0, 0.0  # where this process starts, and training time spent before it
    state = checkpoint.load() if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.gen.set_state(state["sampler"])
        accel.load_state_dict(state["accelerators"])
        set_rng_states(state["rng"])
        rows, first_step, spent = state["metrics"], state["step"], state["elapsed"]
        if weights is not None:
            weights.load_state_dict(state.get("weights"))
    start = time.perf_counter() - spent
    bar = tqdm(
        total=cfg.steps,
        initial=first_step,
        desc=desc,
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 30,
        file=sys.stderr,
    )
    postfix: dict[str, str] = {}
    model.train()
    # the compiled module shares the model's parameters; states are saved from `model` (plain names)
    forward = torch.compile(model, dynamic=True) if cfg.compile else model
    if checkpoint:
        checkpoint.install_signal_handlers()
    if on_metrics is not None:
        on_metrics(first_step, rows)
    stopped_step = None
    try:
        for step in range(first_step, cfg.steps + 1):
            save_due = checkpoint is not None and step > first_step and checkpoint.due(step)
            if divergence.diverged(block=save_due or step in eval_steps):
                break  # no evaluation or saved state after the divergence step
            if save_due:
                stopping = checkpoint.save(
                    dict(
                        model=model.state_dict(),
                        optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(),
                        sampler=sampler.gen.get_state(),
                        accelerators=accel.state_dict(),
                        rng=rng_states(),
                        metrics=rows,
                        step=step,
                        elapsed=time.perf_counter() - start,
                        weights=weights.state_dict() if weights is not None else None,
                    )
                )
                if stopping:
                    raise Interrupted(f"stopped at step {step} by a signal; state saved to {checkpoint.path}")
            if step in eval_steps:
                elapsed = time.perf_counter() - start
                for name, (loss, acc) in evaluate(forward, t, cfg.eval.batch_size, amp).items():
                    rows.append(dict(step=step, split=name, loss=loss, accuracy=acc, elapsed=elapsed))
                    postfix[name] = f"{acc:.2f}"
                if weights is not None:
                    weights.at_eval(step, rows, model)  # the weights just evaluated (train/checkpoints.py)
                if on_metrics is not None:
                    on_metrics(step, rows)
                if cfg.early_stop is not None and step < cfg.steps and cfg.early_stop.reached(rows):
                    stopped_step = step  # memorized, generalized OOD and stayed there (train/early_stop.py)
                    break
            if step == cfg.steps:
                break
            idx = to_device(sampler(), device)
            with amp:
                logits = forward(t.x[idx])
            loss = accel.loss_fn(logits, t.y[idx])
            if divergence.observe(loss, step):
                break  # before this step's update
            opt.zero_grad(set_to_none=True)
            loss.backward()
            accel.after_backward(model)  # gradient filter, then perpendicular projection
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            accel.before_step(opt, step)  # scheduled weight decay
            opt.step()
            sched.step()
            divergence.after_step()
            after_update(step, loss, bar, postfix, on_step, progress)
        if divergence.diverged(block=True):
            k = divergence.step
            print(
                f"{desc}: diverged: the training loss at step {k} is {divergence.loss} (not finite); "
                "the run stops there (no more steps)",
                file=sys.stderr,
            )
            if k not in eval_steps:  # else evaluated at k already, before its training step
                elapsed = time.perf_counter() - start
                for name, (loss, acc) in evaluate(forward, t, cfg.eval.batch_size, amp).items():
                    rows.append(dict(step=k, split=name, loss=loss, accuracy=acc, elapsed=elapsed))
                if on_metrics is not None:
                    on_metrics(k, rows)
    finally:
        bar.close()
        if checkpoint:
            checkpoint.restore_signal_handlers()
    metrics = pd.DataFrame(rows, columns=["step", "split", "loss", "accuracy", "elapsed"])
    result = Result(
        metrics, model, time.perf_counter() - start, str(device), divergence.step, divergence.loss
    )
    result.stopped_step = stopped_step
    return result


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to CUDA through pinned memory, so the host does not wait for the copy."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def after_update(
    step: int, loss: torch.Tensor, bar, postfix: dict[str, str], on_step, progress: bool
) -> None:
    """After step `step`'s update: the caller's `on_step` hook, then the progress bar, with the loss
    `loss` (a scalar tensor) and the latest accuracies `postfix`; the loss is read (a host sync) only as
    often as the bar shows it."""
    if on_step is not None:
        on_step(step)
    if progress and (step % 50 == 0):
        bar.set_postfix(loss=f"{loss.item():.3f}", **short(postfix), refresh=False)
    bar.update()


def short(postfix: dict[str, str]) -> dict[str, str]:
    """Progress-bar labels: train / ID / OOD accuracy of the inferred facts where present."""
    names = {"train_inferred_id": "train", "test_inferred_id": "id", "test_inferred_ood": "ood"}
    return {names[k]: v for k, v in postfix.items() if k in names}
