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

The optimizer is `torch.optim.AdamW` (fused where `trainer.use_fused`) on the stacked tensors. Per model
this is the same update as a separate AdamW: the AdamW update is elementwise, with per-element moments, and
its only non-elementwise inputs are the group's hyperparameters, the learning rate of the schedule and the
step count, which all seeds share because they all step at every step. Weight-decay groups are decided per
parameter name on one model's (unstacked) parameters, as `trainer.make_optimizer` decides them.

Divergence: a seed whose training loss is not finite at step k is marked diverged at k; it does not touch
the others, since no computation mixes the models (the summed loss gives each model the gradient of its
own loss, clipping and AdamW act per element or per model), so they train on exactly as they would have.
Its `Result` has `diverged_step` k and `diverged_loss`. Off CUDA, where reading the losses on the host
costs nothing, the rest is as `trainer.train` has it: its weights are those of step k (a copy taken
before the update of step k) and its metrics end with an evaluation at k (unless evaluated at k already).
On CUDA the check stays on the device (no host sync per step): its metrics end with its last evaluation
at or before k and its weights are not those of step k (it kept training on non-finite values). Packed
training stops at the first evaluation at which every seed has diverged or stopped early.

Early stop (`training.early_stop`, train/early_stop.py): each seed is judged on its own curve after each
evaluation, as `trainer.train` judges it; a seed that meets the criterion at step k is stopped there: its
metrics end with the evaluation at k and its `Result` holds its weights of step k (a copy taken then) and
`stopped_step` k, exactly as if trained alone. The pack trains on while any seed still trains (a stopped
seed's slice keeps being updated, unused), and stops at the first evaluation at which every seed has
stopped or diverged.

Not supported packed (`train_packed` raises ValueError naming the option; grokbench.study rejects these
for a study's packs before any job): the grokking accelerators (`training.accelerators`: their filters and
⊥Grad act on a module's own gradients) and dropout > 0 (random masks under vmap would not reproduce
separate runs). Weights across training (`training.checkpoints`) are kept per seed, from its slice.

Checkpoint/resume, as `trainer.train` (train/resume.py): with a `checkpoint`, the pack resumes from a saved
state of the same fingerprint, saves every `checkpoint.every` steps or minutes, and on SIGTERM / SIGUSR1
saves and raises `Interrupted`. The state holds the stacked weights, the optimizer and scheduler, every
seed's sampler generator and the batch indices drawn ahead, torch's RNG states, the metrics, divergence
and early-stop records so far: a resumed pack continues the same computation, so its results are bit for
bit those of an uninterrupted one (same device and software; `elapsed` is wall time).
`metrics["elapsed"]` is the wall time of the packed training, the same for every seed. With
`training.compile`, the training step's forward and loss are compiled (torch.compile, static
shapes); evaluation runs eagerly.
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

from .checkpoints import WeightCheckpoints
from .config import TrainConfig
from .data import IGNORE, Tensors
from .resume import Checkpointer, Interrupted, rng_states, set_rng_states
from .trainer import BatchSampler, Result, adamw, after_update, autocast, decays, pick_device

CLIP_EPS = 1e-6  # added to the gradient norm before dividing, as torch.nn.utils.clip_grad_norm_ does
INDEX_BLOCK = 64  # steps of batch indices drawn ahead and sent to a CUDA device in one copy


def check_packable(cfg: TrainConfig, seeds: Sequence[int]) -> None:
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
    checkpoint: Checkpointer | None = None,
    on_step: Callable[[int], None] | None = None,
    on_metrics: Callable[[int, int, list[dict]], None] | None = None,
    weights: Sequence[WeightCheckpoints | None] | None = None,
) -> list[Result]:
    """Train one run per seed, all together; returns each seed's `Result`, in the order of `seeds`.

    See the module docstring for what matches `trainer.train` and what raises ValueError.
    `on_step(step)` is called after every optimizer step (0-based). `on_metrics(m, step, rows)` is called
    for seed number m (its index in `seeds`) with all its metrics rows so far (the list itself, not to be
    kept or changed): once when the loop starts (no rows), then after each evaluation that adds rows of it.
    `weights[m]` (cfg.checkpoints; one per seed) saves seed m's weights at its evaluation steps, as
    `trainer.train` does for a single run (train/checkpoints.py).
    """
    seeds = list(seeds)
    check_packable(cfg, seeds)
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
    samplers = [BatchSampler(t, cfg, seed) for seed in seeds]
    host_check = device.type != "cuda"  # divergence read on the host at every step (free off CUDA)
    indices = IndexStream(samplers, device)
    eval_steps = set(cfg.eval.steps(cfg.steps))
    rows: list[list[dict]] = [[] for _ in seeds]
    # per seed, on the device: the first step whose training loss was not finite (-1: none yet), that loss
    bad_step = torch.full((len(seeds),), -1, dtype=torch.int64, device=device)
    bad_loss = torch.zeros(len(seeds), device=device)
    diverged: list[int] = [-1] * len(seeds)  # bad_step as the host last read it
    stopped: list[int | None] = [None] * len(seeds)  # early stop (cfg.early_stop): the step it stopped at
    kept: dict[int, dict[str, torch.Tensor]] = {}  # a stopped seed's weights of its stop step
    first_step, spent = 0, 0.0  # where this process starts, and training time spent before it
    state = checkpoint.load() if checkpoint else None
    if state is not None:
        with torch.no_grad():
            for name, p in packed.params.items():
                p.copy_(state["params"][name])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        for sampler, gen_state in zip(samplers, state["samplers"]):
            sampler.gen.set_state(gen_state)
        indices.buffer = [b.to(device) for b in state["indices"]]
        set_rng_states(state["rng"])
        rows, first_step, spent = state["metrics"], state["step"], state["elapsed"]
        bad_step.copy_(state["bad_step"])
        bad_loss.copy_(state["bad_loss"])
        stopped = state["stopped"]
        kept = {m: {n: w.to(device) for n, w in ws.items()} for m, ws in state["kept"].items()}
        for w, saved in zip(weights or [], state.get("weights") or []):
            if w is not None:
                w.load_state_dict(saved)
    if on_metrics is not None:
        for m in range(len(seeds)):
            on_metrics(m, first_step, rows[m])
    start = time.perf_counter() - spent
    if checkpoint:
        checkpoint.install_signal_handlers()
    bar = tqdm(
        total=cfg.steps,
        initial=first_step,
        desc=f"{desc} x{len(seeds)}",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 30,
        file=sys.stderr,
    )
    postfix: dict[str, str] = {}
    try:
        for step in range(first_step, cfg.steps + 1):
            if checkpoint is not None and step > first_step and checkpoint.due(step):
                stopping = checkpoint.save(
                    dict(
                        params={n: p.detach() for n, p in packed.params.items()},
                        optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(),
                        samplers=[sampler.gen.get_state() for sampler in samplers],
                        indices=[b.cpu() for b in indices.buffer],  # drawn ahead, not yet used
                        rng=rng_states(),
                        metrics=rows,
                        step=step,
                        elapsed=time.perf_counter() - start,
                        bad_step=bad_step.cpu(),
                        bad_loss=bad_loss.cpu(),
                        stopped=stopped,
                        kept={m: {n: w.cpu() for n, w in ws.items()} for m, ws in kept.items()},
                        weights=[w.state_dict() if w is not None else None for w in weights or []],
                    )
                )
                if stopping:
                    raise Interrupted(f"stopped at step {step} by a signal; state saved to {checkpoint.path}")
            if step in eval_steps:
                diverged = bad_step.tolist()  # a host sync, as the evaluation's own
                if all(0 <= k < step or s is not None for k, s in zip(diverged, stopped)):
                    break  # every seed has diverged or stopped early
                elapsed = time.perf_counter() - start
                for m, result in enumerate(evaluate_packed(packed, t, cfg.eval.batch_size, amp)):
                    if 0 <= diverged[m] < step or stopped[m] is not None:
                        continue  # diverged before this evaluation, or stopped early
                    for name, (loss, acc) in result.items():
                        rows[m].append(dict(step=step, split=name, loss=loss, accuracy=acc, elapsed=elapsed))
                        if m == 0:
                            postfix[name] = f"{acc:.2f}"
                    if weights is not None and weights[m] is not None:
                        weights[m].at_eval(step, rows[m], models[m])  # its slice: a view of the pack's
                    if on_metrics is not None:
                        on_metrics(m, step, rows[m])
                    if cfg.early_stop is not None and step < cfg.steps and cfg.early_stop.reached(rows[m]):
                        stopped[m] = step  # as trainer.train: memorized, generalized OOD and stayed there
                        kept[m] = {n: p.detach()[m].clone() for n, p in packed.params.items()}
                if all(0 <= k <= step or s is not None for k, s in zip(diverged, stopped)):
                    break  # no seed trains on
            if step == cfg.steps:
                break
            idx = indices()  # (n, B)
            losses = step_fn(t.x[idx], t.y[idx])
            finite = torch.isfinite(losses.detach())
            first = ~finite & (bad_step < 0)
            bad_step.copy_(torch.where(first, step, bad_step))
            bad_loss.copy_(torch.where(first, losses.detach().float(), bad_loss))
            if host_check and bool(first.any()):  # off CUDA: end a diverged seed as trainer.train does
                newly = [m for m, f in enumerate(first.tolist()) if f and stopped[m] is None]
                if newly and step not in eval_steps:  # its evaluation at k, unless it was just evaluated
                    elapsed = time.perf_counter() - start
                    result = evaluate_packed(packed, t, cfg.eval.batch_size, amp)
                    for m in newly:
                        for name, (loss, acc) in result[m].items():
                            row = dict(step=step, split=name, loss=loss, accuracy=acc, elapsed=elapsed)
                            rows[m].append(row)
                        if on_metrics is not None:
                            on_metrics(m, step, rows[m])
                for m in newly:  # its weights of step k: those before this step's update
                    kept[m] = {n: p.detach()[m].clone() for n, p in packed.params.items()}
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # model m's parameters get the gradient of model m's loss only
            if cfg.grad_clip:
                clip_grad_norms_([p.grad for p in trainable if p.grad is not None], cfg.grad_clip)
            opt.step()
            sched.step()
            after_update(step, losses[0], bar, postfix, on_step, progress)  # the bar: the first seed's
    finally:
        bar.close()
        if checkpoint:
            checkpoint.restore_signal_handlers()
    wall = time.perf_counter() - start
    diverged, losses_at = bad_step.tolist(), bad_loss.tolist()
    results = []
    for m, model in enumerate(models):
        with torch.no_grad():
            for name, p in model.named_parameters():
                # its own storage again; a seed stopped early gets its weights of the stop step
                p.data = kept[m][name] if m in kept else packed.params[name].detach()[m].clone()
        metrics = pd.DataFrame(rows[m], columns=["step", "split", "loss", "accuracy", "elapsed"])
        # a seed stopped early ended there: what its unused slice did later does not count
        k = diverged[m] if diverged[m] >= 0 and stopped[m] is None else None
        if k is not None:
            print(
                f"{desc} seed {seeds[m]}: diverged: the training loss at step {k} is {losses_at[m]} "
                "(not finite); its results end there",
                file=sys.stderr,
            )
        result = Result(metrics, model, wall, str(device), k, None if k is None else losses_at[m])
        result.stopped_step = stopped[m]
        results.append(result)
    return results
