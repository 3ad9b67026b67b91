"""Packed training: the runs of several seeds of one cell trained together, as one vectorized model.

`train_packed(model_fn, t, cfg, seeds)` returns what `train(model_fn, t, cfg, seed)` returns for each seed,
up to floating-point rounding, while running every step of all seeds as one batched computation, so that
one GPU is busy with small models. Per seed, exactly as `trainer.train`:

- initialization: `torch.manual_seed(seed)` then `model_fn()`;
- data order: its own `BatchSampler(t, cfg, seed)`;
- AdamW with its weight-decay groups (`trainer.decays`), the warmup schedule, and its own moments;
- gradient clipping on the norm of that model's gradient alone;
- evaluation at the same steps, on the same splits.

How (torch.func, as in PyTorch's "model ensembling" tutorial,
https://pytorch.org/tutorials/intermediate/ensembling.html; read, not copied): the models' parameters and
buffers are stacked along a new leading dimension (`stack_module_state`) and the forward is
`vmap(functional_call(base, ...))` over that dimension, `base` being a weightless (meta-device) copy of the
architecture. The per-model losses are summed and back-propagated once: model m's parameters receive only
the gradient of model m's loss (the models share nothing), so each slice of a stacked gradient is that
model's own gradient.

The optimizer is `torch.optim.AdamW` (fused on CUDA) on the stacked tensors. Per model this is the same
update as a separate AdamW: the AdamW update is elementwise, with per-element moments, and its only
non-elementwise inputs are the group's hyperparameters, the learning rate of the schedule and the step
count, which all seeds share because they all step at every step. Weight-decay groups are decided per
parameter name on one model's (unstacked) parameters, as `trainer.make_optimizer` decides them.

Divergence: a seed whose training loss is not finite at step k is marked diverged at k (on the device,
no host sync per step); it does not touch the others, since no computation mixes the models (the summed
loss gives each model the gradient of its own loss, clipping and AdamW act per element or per model), so
they train on exactly as they would have. Its `Result` has `diverged_step` k and `diverged_loss`, its
metrics end with its last evaluation at or before k (unlike `trainer.train`, no extra evaluation at k),
and its weights are not those of step k: it kept training on non-finite values. Packed training stops at
the first evaluation at which every seed has diverged.

Not supported packed (`train_packed` raises ValueError naming the option): the grokking accelerators
(`training.accelerators`: their filters and ⊥Grad act on a module's own gradients), checkpoint/resume,
and dropout > 0 (random masks under vmap would not reproduce separate runs). `metrics["elapsed"]` is the
wall time of the packed training, the same for every seed. With `training.compile`, the training step's
forward and loss are compiled (torch.compile, static shapes); evaluation runs eagerly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from .config import TrainConfig
from .data import IGNORE, Tensors
from .trainer import BatchSampler, Result, adamw, autocast, decays, pick_device, short

CLIP_EPS = 1e-6  # added to the gradient norm before dividing, as torch.nn.utils.clip_grad_norm_ does
INDEX_BLOCK = 64  # steps of batch indices drawn ahead and sent to a CUDA device in one copy


def check_packable(cfg: TrainConfig, seeds: Sequence[int], checkpoint: object = None) -> None:
    """Raise ValueError, naming the option, for what packed training does not support."""
    if len(seeds) == 0:
        raise ValueError("train_packed: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"train_packed: seeds {list(seeds)} repeat a seed")
    if cfg.accelerators.active:
        raise ValueError(
            "training.accelerators is not supported by packed training (Grokfast, perp_grad, StableMax and "
            "wd_schedule act on one model's gradients and optimizer); train these runs one at a time"
        )
    if checkpoint is not None:
        raise ValueError(
            "checkpoint/resume is not supported by packed training; train these runs one at a time"
        )


def check_no_dropout(model: nn.Module) -> None:
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    rates.append(getattr(getattr(model, "config", None), "dropout", 0.0))
    if any(r > 0 for r in rates):
        raise ValueError(
            "model dropout > 0 is not supported by packed training (random masks under vmap would not "
            "match separate runs); train these runs one at a time"
        )


class IndexStream:
    """Each step's batch indices of every seed, (n_seeds, batch) int64 on `device`.

    Every seed draws from its own `BatchSampler` in the same order as a single run does. On CUDA, `block`
    steps are drawn ahead and copied from pinned memory without blocking, so the host does not wait for
    the device at each step (the draws do not depend on training, so drawing ahead changes nothing).
    """

    def __init__(self, samplers: list[BatchSampler], device: torch.device, block: int = INDEX_BLOCK):
        self.samplers, self.device = samplers, device
        self.block = block if device.type == "cuda" else 1
        self.buffer: list[torch.Tensor] = []

    def __call__(self) -> torch.Tensor:
        if not self.buffer:
            steps = torch.stack([torch.stack([s() for s in self.samplers]) for _ in range(self.block)])
            if self.device.type == "cuda":
                steps = steps.pin_memory().to(self.device, non_blocking=True)
            self.buffer = list(steps.unbind(0))[::-1]
        return self.buffer.pop()


@torch.no_grad()
def clip_grad_norms_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Per model m (dimension 0 of every stacked gradient), scale model m's gradients by
    min(1, max_norm / (|g_m| + CLIP_EPS)), |g_m| the 2-norm over all of model m's gradients: what
    `torch.nn.utils.clip_grad_norm_` does to one model. Returns the norms before clipping, (n_models,)."""
    norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads], dim=1)  # (M, n_tensors)
    total = norms.norm(2, dim=1)  # (M,)
    coef = (max_norm / (total + CLIP_EPS)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype).view(-1, *[1] * (g.dim() - 1)))
    return total


class Packed:
    """n models of one architecture as stacked parameters; `forward(x)` gives every model's logits."""

    def __init__(self, models: list[nn.Module], model_fn: Callable[[], nn.Module]):
        params, self.buffers = stack_module_state(models)
        self.params: dict[str, torch.Tensor] = params
        with torch.device("meta"):
            self.base = model_fn()  # the architecture only; weights come from `params`
        self.base.train()

    def forward(self, x: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        """x: (n, B, T), or (B, T) for every model with `shared_input`. Returns (n, B, T, V) logits."""

        def one(params, buffers, xi):
            return functional_call(self.base, (params, buffers), (xi,))

        return vmap(one, in_dims=(0, 0, None if shared_input else 0))(self.params, self.buffers, x)

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)


def answer_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per model, the mean cross-entropy over its answer tokens (the trainer's softmax loss). logits
    (n, B, T, V), y (n, B, T) -> (n,)."""
    n = logits.shape[0]
    tok = F.cross_entropy(
        logits.float().flatten(0, 2), y.flatten(), ignore_index=IGNORE, reduction="none"
    ).view(n, -1)
    return tok.sum(1) / (y != IGNORE).view(n, -1).sum(1)


@torch.no_grad()
def evaluate_packed(packed: Packed, t: Tensors, batch_size: int, amp) -> list[dict[str, tuple[float, float]]]:
    """`trainer.evaluate` for every model at once (each chunk of facts goes through all models); the
    sums stay on the device and are read back once."""
    packed.train(False)
    n = len(next(iter(packed.params.values())))
    stats = []  # per split: (n, 3) loss sum, exact matches, answer tokens
    for idx in t.eval_sets.values():
        acc = torch.zeros((n, 3), dtype=torch.float64, device=t.x.device)
        for chunk in idx.split(batch_size):
            x, y = t.x[chunk], t.y[chunk]
            with amp:
                logits = packed.forward(x, shared_input=True)  # (n, b, T, V)
            mask = y != IGNORE
            loss = F.cross_entropy(
                logits.float().flatten(0, 2), y.repeat(n, 1).flatten(), ignore_index=IGNORE, reduction="none"
            ).view(n, -1)
            hit = (logits.argmax(-1) == y) | ~mask
            acc[:, 0] += loss.sum(1)
            acc[:, 1] += hit.all(dim=2).sum(1)
            acc[:, 2] += mask.sum()
        stats.append(acc)
    packed.train(True)
    values = torch.stack(stats, dim=1).tolist() if stats else [[] for _ in range(n)]  # the one host sync
    return [
        {
            name: (loss_sum / max(n_tok, 1), correct / max(len(idx), 1))
            for (name, idx), (loss_sum, correct, n_tok) in zip(t.eval_sets.items(), per_model)
        }
        for per_model in values
    ]


def train_packed(
    model_fn: Callable[[], nn.Module],
    t: Tensors,
    cfg: TrainConfig,
    seeds: Sequence[int],
    desc: str = "train",
    progress: bool = True,
    checkpoint: object = None,
    on_step: Callable[[int], None] | None = None,
) -> list[Result]:
    """Train one run per seed, all together; returns each seed's `Result`, in the order of `seeds`.

    See the module docstring for what matches `trainer.train` and what raises ValueError.
    `on_step(step)` is called after every optimizer step (0-based).
    """
    seeds = list(seeds)
    check_packable(cfg, seeds, checkpoint)
    device = pick_device(cfg.device)
    models = []
    for seed in seeds:  # exactly as `train` initializes each run
        torch.manual_seed(seed)
        models.append(model_fn().to(device))
    check_no_dropout(models[0])
    packed = Packed(models, model_fn)
    # the per-seed modules become views of the stacked weights: no second copy while training
    for m, model in enumerate(models):
        for name, p in model.named_parameters():
            p.data = packed.params[name].detach()[m]
    t = t.to(device)
    amp = autocast(device, cfg.precision)
    named = [(n, p) for n, p in models[0].named_parameters() if p.requires_grad]
    trainable = [packed.params[n] for n, _ in named]
    opt, sched = adamw(
        [packed.params[n] for n, p in named if decays(p)],
        [packed.params[n] for n, p in named if not decays(p)],
        cfg,
        device,
    )

    def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each model's training loss, (n,); x, y (n, B, T)."""
        with amp:
            logits = packed.forward(x)
        return answer_losses(logits, y)

    # `compile`: the training forward and loss as one graph (fixed shapes); evaluation stays eager
    step_fn = torch.compile(step_loss) if cfg.compile else step_loss
    indices = IndexStream([BatchSampler(t, cfg, seed) for seed in seeds], device)
    eval_steps = set(cfg.eval.steps(cfg.steps))
    rows: list[list[dict]] = [[] for _ in seeds]
    # per seed, on the device: the first step whose training loss was not finite (-1: none yet), that loss
    bad_step = torch.full((len(seeds),), -1, dtype=torch.int64, device=device)
    bad_loss = torch.zeros(len(seeds), device=device)
    diverged: list[int] = [-1] * len(seeds)  # bad_step as the host last read it
    start = time.perf_counter()
    bar = tqdm(
        total=cfg.steps,
        desc=f"{desc} x{len(seeds)}",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 30,
        file=sys.stderr,
    )
    postfix: dict[str, str] = {}
    try:
        for step in range(cfg.steps + 1):
            if step in eval_steps:
                diverged = bad_step.tolist()  # a host sync, as the evaluation's own
                if all(0 <= k < step for k in diverged):
                    break  # every seed has diverged
                elapsed = time.perf_counter() - start
                for m, result in enumerate(evaluate_packed(packed, t, cfg.eval.batch_size, amp)):
                    if 0 <= diverged[m] < step:
                        continue  # diverged before this evaluation
                    for name, (loss, acc) in result.items():
                        rows[m].append(dict(step=step, split=name, loss=loss, accuracy=acc, elapsed=elapsed))
                        if m == 0:
                            postfix[name] = f"{acc:.2f}"
            if step == cfg.steps:
                break
            idx = indices()  # (n, B)
            losses = step_fn(t.x[idx], t.y[idx])
            finite = torch.isfinite(losses.detach())
            first = ~finite & (bad_step < 0)
            bad_step.copy_(torch.where(first, step, bad_step))
            bad_loss.copy_(torch.where(first, losses.detach().float(), bad_loss))
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # model m's parameters get the gradient of model m's loss only
            if cfg.grad_clip:
                clip_grad_norms_([p.grad for p in trainable if p.grad is not None], cfg.grad_clip)
            opt.step()
            sched.step()
            if on_step is not None:
                on_step(step)
            if progress and (step % 50 == 0):
                # a host sync: only as often as the bar shows it (first seed's numbers)
                bar.set_postfix(loss=f"{losses[0].item():.3f}", **short(postfix), refresh=False)
            bar.update()
    finally:
        bar.close()
    wall = time.perf_counter() - start
    diverged, losses_at = bad_step.tolist(), bad_loss.tolist()
    results = []
    for m, model in enumerate(models):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.data = packed.params[name].detach()[m].clone()  # its own storage again
        metrics = pd.DataFrame(rows[m], columns=["step", "split", "loss", "accuracy", "elapsed"])
        k = diverged[m] if diverged[m] >= 0 else None
        if k is not None:
            print(
                f"{desc} seed {seeds[m]}: diverged: the training loss at step {k} is {losses_at[m]} "
                "(not finite); its results end there",
                file=sys.stderr,
            )
        results.append(Result(metrics, model, wall, str(device), k, None if k is None else losses_at[m]))
    return results
