"""The cost of a study before it is submitted: per training run its parameters, FLOPs per step, steps and
estimated GPU-hours on a named GPU, and the SLURM runtime its job asks for.

- FLOPs per step: counted by `torch.utils.flop_counter.FlopCounterMode` over one forward and backward
  pass of the run's model at its batch size and sequence length, on the `meta` device (no memory, no
  compute): matrix products, attention and convolutions; the elementwise work of recurrent scans is not
  counted, so for RWKV and Mamba the figure is a lower bound.
- Throughput: `THROUGHPUT` holds measured training speeds (examples/s) with where they were measured. A
  run's speed is its GPU's peak (`PEAK_TFLOPS`) at the model-FLOPs utilization of the closest
  measurement (same GPU, family and preset: "measured, scaled by FLOPs"; else a measurement on that GPU,
  else the first: "from FLOPs"), divided by the run's FLOPs per example. An estimate either way:
  `python -m grokbench bench-train` measures the real thing on the GPU at hand.
- Runtime request: the estimate with a margin (`MARGIN`, plus evaluations' share `EVAL_SHARE`), capped
  at the partition's limit; a longer run needs ceil(estimate / cap) slots, each resuming from the state
  the previous one saved (README: "Running on a SLURM cluster").

`python -m grokbench plan --configfile config/paper.yaml --gpu H200` prints the table and the total.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from torch.utils.flop_counter import FlopCounterMode

from .grid import Cell, cells
from .models import build_model, count_params
from .train.config import TrainConfig

# Dense bf16 tensor-core peak, TFLOP/s (NVIDIA datasheets); the first key contained in a GPU's name wins.
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.5, "H100": 989.4, "A100": 312.0}

# Measured training throughput. ANCHORS.md §4 (one H200, torch 2.11, 2026-11-26): a plain-PyTorch GPT of
# the seed study's shape (8 layers, d=768, 12 heads, task vocabulary 1106, batch 512, sequence 8), bf16
# autocast, fused AdamW, eager: 31.3k examples/s. grokbench's own trainer has not run on a GPU yet.
THROUGHPUT = [
    {"gpu": "H200", "family": "gpt", "preset": "paper", "examples_per_s": 31_300, "batch": 512, "seq": 8,
     "vocab": 1106,
     "source": "ANCHORS.md §4: plain-PyTorch GPT, bf16, fused AdamW, eager (not grokbench's trainer)"},
]  # fmt: skip
# CPU training step, ms, at the `tiny` preset: batch 128, sequence 6, bf16 autocast, one thread, backend
# auto (scripts/bench-steps.py on the 2-core AMD EPYC VM, 2026-12-01: docs/benchmarks.md, "the recurrent
# families' training step"). Only for the order in which local jobs start (`cpu_seconds`).
CPU_STEP_MS = {
    "gpt": 26.4, "llama": 28.6, "rwkv7": 44.9, "mamba": 118.3, "mamba2": 48.7, "gla": 34.5,
    "retnet": 30.8, "deltanet": 52.0, "hgrn2": 40.9, "rwkv6": 48.1,
}  # fmt: skip
MARGIN = 1.25  # runtime request = estimate x MARGIN (+ EVAL_SHARE), rounded up to whole minutes
EVAL_SHARE = 0.05  # evaluations, checkpoints and start-up, as a share of the training time
MIN_RUNTIME = 10  # minutes: start-up (imports, data, first evaluation) of even the shortest run


@dataclass
class Shape:
    vocab_size: int
    block_size: int


def dataset_shape(path: str | Path) -> Shape:
    """Vocabulary size and sequence length (input + answer - 1) of a dataset file, from its Parquet
    metadata and its token columns, without building training tensors."""
    table = pq.read_table(path, columns=["input_ids", "answer_ids"])
    vocab = json.loads(table.schema.metadata[b"grokbench.vocab"])
    lengths = [
        len(a) + len(b) for a, b in zip(*(table.column(c).to_pylist() for c in ("input_ids", "answer_ids")))
    ]
    return Shape(vocab_size=len(vocab), block_size=max(lengths) - 1)


def shape_of(facts) -> Shape:
    """The same as `dataset_shape`, from a generated dataset's facts table."""
    lengths = [len(a) + len(b) for a, b in zip(facts["input_ids"], facts["answer_ids"])]
    return Shape(vocab_size=0, block_size=max(lengths) - 1)


def study_shapes(config: dict) -> dict[str, Shape]:
    """Each dataset's shape: from its file under `<results>/data/` where it exists, else generated in
    memory (seconds per dataset at the paper's size)."""
    from .tasks import generate

    shapes = {}
    for name in dict.fromkeys(c.dataset for c in cells(config)):
        path = Path(config["results"]) / "data" / f"{name}.parquet"
        if path.exists():
            shapes[name] = dataset_shape(path)
        else:
            spec = config["datasets"][name]
            ds = generate(spec["task"], {k: v for k, v in spec.items() if k != "task"})
            shapes[name] = Shape(vocab_size=len(ds.vocab), block_size=shape_of(ds.facts).block_size)
    return shapes


def plan_study(config: dict, gpu: str, limit_minutes: int) -> list[dict[str, Any]]:
    """The plan of every training run of a validated study."""
    shapes, cache = study_shapes(config), {}
    return [plan_run(config, c, shapes[c.dataset], gpu, limit_minutes, cache) for c in cells(config)]


def flops_per_step(spec: dict[str, Any], shape: Shape, batch_size: int) -> tuple[int, int]:
    """(parameters, FLOPs of one forward + backward at `batch_size`). Counted on the meta device; where a
    family's op has no meta kernel, on the CPU at batch 1, times `batch_size` (FLOPs are linear in it)."""
    try:
        return _count(spec, shape, batch_size, "meta")
    except (RuntimeError, NotImplementedError):
        n_params, flops = _count(spec, shape, 1, "cpu")
        return n_params, flops * batch_size


def _count(spec: dict[str, Any], shape: Shape, batch_size: int, device: str) -> tuple[int, int]:
    with torch.device(device):
        model = build_model(spec, vocab_size=shape.vocab_size, block_size=shape.block_size)
        x = torch.zeros(batch_size, shape.block_size, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).float().sum().backward()
    return count_params(model), int(counter.get_total_flops())


def cpu_seconds(model: dict[str, Any], training: dict[str, Any]) -> float:
    """A rough CPU cost of one run, for ordering jobs only: its steps at its family's `CPU_STEP_MS` (the
    slowest family's for one not measured), whatever its preset, early stop or evaluations. The workflow
    starts the costliest training jobs first (workflow/rules/train.smk, `priority`), so that on a few
    local cores no long run starts last and runs alone at the end."""
    ms = CPU_STEP_MS.get(model.get("family"), max(CPU_STEP_MS.values()))
    return TrainConfig.from_dict(training).steps * ms / 1000


def peak_tflops(gpu: str) -> float:
    for key, value in PEAK_TFLOPS.items():
        if key.lower() in gpu.lower():
            return value
    raise ValueError(f"plan: no peak known for GPU {gpu!r}; known: {sorted(PEAK_TFLOPS)}")


@functools.cache
def _reference_flops(family: str, preset: str, vocab: int, seq: int) -> int:
    """FLOPs per example of a THROUGHPUT row's model (counted once per process: half a second each)."""
    return flops_per_step({"family": family, "preset": preset}, Shape(vocab_size=vocab, block_size=seq), 1)[1]


def throughput(gpu: str, family: str, preset: str | None, flops_per_example: float) -> tuple[float, str]:
    """(examples/s, how it was obtained) for a model of `flops_per_example` training FLOPs per example:
    the model-FLOPs utilization of the closest measurement (same GPU, family and preset; else same GPU;
    else the first), applied to this GPU's peak and this model's FLOPs."""
    on_gpu = [r for r in THROUGHPUT if r["gpu"].lower() in gpu.lower()]
    same = [r for r in on_gpu if r["family"] == family and r["preset"] == preset]
    ref = (same or on_gpu or THROUGHPUT)[0]
    ref_flops = _reference_flops(ref["family"], ref["preset"], ref["vocab"], ref["seq"])
    mfu = ref["examples_per_s"] * ref_flops / (peak_tflops(ref["gpu"]) * 1e12)
    speed = mfu * peak_tflops(gpu) * 1e12 / flops_per_example
    how = (
        "measured, scaled by FLOPs"
        if same
        else f"from FLOPs at the MFU of the {ref['gpu']} {ref['family']} run"
    )
    return speed, f"{how}: {mfu:.1%} of peak ({ref['source']})"


def runtime_minutes(hours: float, limit_minutes: int) -> tuple[int, int]:
    """(minutes to request per slot, slots needed) for an estimate of `hours` under a partition limit."""
    need = max(MIN_RUNTIME, math.ceil(hours * 60 * (MARGIN + EVAL_SHARE)))
    per_slot = min(need, limit_minutes)
    return per_slot, math.ceil(need / per_slot)


def plan_run(
    config: dict, cell: Cell, shape: Shape, gpu: str, limit_minutes: int, cache: dict | None = None
) -> dict[str, Any]:
    """One row of the plan: the cost of training `cell` on `gpu`."""
    spec = config["models"][cell.model]
    train = TrainConfig.from_dict(config["training"][cell.training])
    key = (json.dumps(spec, sort_keys=True), shape.vocab_size, shape.block_size, train.batch_size)
    cache = {} if cache is None else cache
    if key not in cache:
        n_params, flops = flops_per_step(spec, shape, train.batch_size)
        speed, source = throughput(gpu, spec["family"], spec.get("preset"), flops / train.batch_size)
        cache[key] = (n_params, flops, speed, source)
    n_params, flops, speed, source = cache[key]
    hours = train.steps * train.batch_size / speed / 3600
    per_slot, slots = runtime_minutes(hours, limit_minutes)
    return {
        "run_id": cell.run_id,
        "family": spec["family"],
        "params": n_params,
        "flops_per_step": flops,
        "steps": train.steps,
        "gpu_hours": hours,
        "runtime_min": per_slot,
        "slots": slots,
        "throughput": source,
    }
