"""Training-throughput benchmark: the reference setup against grokbench's trainer, in one process on one
device, on the same data and the same model shape.

- reference: transformers' `GPT2LMHeadModel` with GPT-2's BPE vocabulary (50257 tokens) plus the task's
  tokens, fp16 autocast with a GradScaler on CUDA (fp32 on CPU), `torch.optim.AdamW`, gradient clipping,
  batches drawn on the host and copied to the device at every step: the training setup of the seed study
  (OSU-NLP-Group/GrokkedTransformer, which trains GPT-2 with the task tokens added to its tokenizer).
  Dropout is 0, as in grokbench's GPT, so both sides compute the same function.
- grokbench, single run: `trainer.train` (bf16 autocast and fused AdamW on CUDA, data on the device).
- grokbench, packed: `packed.train_packed` with `--seeds` seeds trained together.

Each side trains `--warmup` untimed steps, then `--steps` timed steps (the device is synchronized at both
ends of the timed window; evaluations fall outside it). It prints examples/s, the ratio to the reference,
and the model-FLOPs utilization 6 * parameters * tokens/s / peak (each side's own parameter count; the
peak from `--peak-tflops`, by default the dense bf16 tensor-core peak of a known GPU, none on CPU).

    python -m grokbench bench-train                              # CUDA: paper GPT, batch 512, 4 seeds
    python -m grokbench bench-train --preset tiny --steps 20 --batch 64 --seeds 2   # the CPU default
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import PRESETS, build_model, count_params
from ..tasks import generate
from ..train.config import EvalSchedule, TrainConfig
from ..train.data import IGNORE, Tensors, build_tensors
from ..train.packed import train_packed
from ..train.trainer import train

GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary (transformers.GPT2Config().vocab_size)
GPT2_POSITIONS = 1024  # GPT-2's position table (transformers.GPT2Config().n_positions)
# The comparison dataset of the seed study (config/paper.yaml, dataset `cmp`) and a small one for CPUs.
PAPER_DATA = dict(n_entities=1000, n_attributes=20, value_range=20, phi=12.6, id_ratio=0.9, test_size=3000)
CPU_DATA = dict(n_entities=100, n_attributes=4, value_range=5, phi=10.0, id_ratio=0.9, test_size=200)
# Dense (no sparsity) bf16 / fp16 tensor-core peak, TFLOP/s, from NVIDIA's H100 and H200 datasheets;
# matched against torch.cuda.get_device_name() in this order (the first key contained in the name wins).
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.5, "H100": 989.4}
# Settings used where the command line leaves them out: (CUDA, CPU).
DEFAULTS = {
    "preset": ("paper", "tiny"),
    "batch": (512, 64),
    "steps": (100, 20),
    "warmup": (20, 5),
    "seeds": (4, 2),
}
TRAINING = dict(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1, grad_clip=1.0, atomic_fraction=None)
EVAL_SIZE = 256  # facts per evaluation split (evaluations are outside the timed window)


@dataclass
class Row:
    name: str
    params: int
    examples_per_s: float
    ratio: float | None = None
    mfu: float | None = None


def resolve(args: dict, cuda: bool) -> dict:
    """Fill each setting left None with its CUDA or CPU default."""
    return {k: (DEFAULTS[k][0 if cuda else 1] if v is None and k in DEFAULTS else v) for k, v in args.items()}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Window:
    """Times optimizer steps warmup .. warmup + steps - 1 through an `on_step(step)` callback."""

    def __init__(self, device: torch.device, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.t0 = self.t1 = None

    def __call__(self, step: int) -> None:
        if step == self.warmup - 1:
            sync(self.device)
            self.t0 = time.perf_counter()
        if step == self.warmup + self.steps - 1:
            sync(self.device)
            self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def reference(t: Tensors, shape: dict, vocab: int, batch: int, warmup: int, steps: int, seed: int) -> Row:
    """The reference setup's training loop (see the module docstring); t is on the device."""
    from transformers import GPT2Config, GPT2LMHeadModel

    device = t.x.device
    cuda = device.type == "cuda"
    config = GPT2Config(
        vocab_size=GPT2_VOCAB + vocab,
        n_positions=max(GPT2_POSITIONS, t.block_size),
        n_embd=shape["d_model"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).to(device).train()
    cfg = TrainConfig(**TRAINING)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm) if warm else 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=cuda)
    # the task's tokens come after GPT-2's own, as tokens added to GPT-2's tokenizer do
    x_all, y_all = t.x.cpu() + GPT2_VOCAB, torch.where(t.y.cpu() == IGNORE, IGNORE, t.y.cpu() + GPT2_VOCAB)
    pool = torch.cat([t.train_atomic, t.train_inferred]).cpu()
    gen = torch.Generator().manual_seed(seed)
    window = Window(device, warmup, steps)
    for step in range(warmup + steps):
        rows = pool[torch.randint(len(pool), (batch,), generator=gen)]  # drawn on the host every step
        x, y = x_all[rows].to(device), y_all[rows].to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        window(step)
    return Row("reference (HF GPT-2 + BPE vocab)", count_params(model), steps * batch / window.seconds)


def grokbench_rows(
    t: Tensors, spec: dict, vocab: int, batch: int, warmup: int, steps: int, seeds: int, compile: bool
) -> list[Row]:
    total = warmup + steps
    eval_once = EvalSchedule(dense_every=total, dense_until=0, every=total, max_size=EVAL_SIZE)
    cfg = TrainConfig(
        **TRAINING, steps=total, batch_size=batch, warmup_steps=warmup, eval=eval_once, compile=compile
    )

    def model_fn():
        return build_model(spec, vocab, t.block_size)

    n_params = count_params(model_fn())
    window = Window(t.x.device, warmup, steps)
    train(model_fn, t, cfg, 0, progress=False, on_step=window)
    rows = [Row("grokbench single run", n_params, steps * batch / window.seconds)]
    window = Window(t.x.device, warmup, steps)
    train_packed(model_fn, t, cfg, list(range(seeds)), progress=False, on_step=window)
    rows.append(Row(f"grokbench packed x{seeds}", n_params, seeds * steps * batch / window.seconds))
    return rows


def bench_train(
    preset: str | None = None,
    batch: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    seeds: int | None = None,
    family: str = "gpt",
    data: dict | None = None,
    peak: float | None = None,
    compile: bool = False,
    print_fn: Callable[[str], None] = print,
) -> list[Row]:
    """Run the three setups and print the table; returns its rows."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    s = resolve(dict(preset=preset, batch=batch, steps=steps, warmup=warmup, seeds=seeds), cuda)
    if s["warmup"] < 1 or s["steps"] < 1 or s["batch"] < 1 or s["seeds"] < 1:
        raise ValueError("--warmup, --steps, --batch and --seeds must be >= 1")
    if family != "gpt":
        raise ValueError(f"--family {family!r}: the reference is GPT-2, so only gpt compares like with like")
    shape = PRESETS[s["preset"]][family] if s["preset"] in PRESETS else None
    if shape is None:
        raise ValueError(f"--preset {s['preset']!r}: known presets are {', '.join(PRESETS)}")
    peak = peak if peak is not None else peak_tflops(device)
    params = {**(PAPER_DATA if cuda else CPU_DATA), **(data or {}), "seed": 0}
    ds = generate("comparison", params)
    t = build_tensors(ds, EVAL_SIZE).to(device)
    vocab = len(ds.vocab)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print_fn(
        f"device: {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
        f"gpt preset {s['preset']} {shape}; task vocab {vocab}, seq {t.block_size}, batch {s['batch']}, "
        f"{s['steps']} timed steps after {s['warmup']} warmup; peak "
        + (f"{peak} TFLOP/s" if peak else "unknown (no MFU)")
    )
    args = (s["batch"], s["warmup"], s["steps"])
    rows = [reference(t, shape, vocab, *args, seed=0)]
    rows += grokbench_rows(t, {"family": family, **shape}, vocab, *args, s["seeds"], compile)
    base = rows[0].examples_per_s
    for row in rows:
        row.ratio = row.examples_per_s / base
        if peak:
            row.mfu = 6 * row.params * row.examples_per_s * t.block_size / (peak * 1e12)
    print_fn(format_table(rows))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'setup':36s} {'params':>12s} {'examples/s':>12s} {'ratio':>7s} {'MFU':>7s}"]
    for r in rows:
        mfu = f"{100 * r.mfu:6.2f}%" if r.mfu is not None else "      -"
        lines.append(f"{r.name:36s} {r.params:12,d} {r.examples_per_s:12.1f} {r.ratio:7.2f} {mfu}")
    return "\n".join(lines)
