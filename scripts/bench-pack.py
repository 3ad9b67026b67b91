"""Examples/s of single and packed training at the default study's GPT (config.yaml: `tiny` preset, batch
128, bf16, 1 torch thread, the comparison dataset), the measurement behind the default `pack.size: 1`
(README, "Packs"). Each configuration trains 10 untimed steps, then 60 timed ones (no evaluation inside).

    .venv/bin/python scripts/bench-pack.py           # eager
    .venv/bin/python scripts/bench-pack.py compile   # training.compile: true, as config.yaml
"""

import sys

import torch

from grokbench.bench.train import Window
from grokbench.models import build_model
from grokbench.tasks import generate
from grokbench.train.config import EvalSchedule, TrainConfig
from grokbench.train.data import build_tensors
from grokbench.train.packed import train_packed
from grokbench.train.trainer import train

torch.set_num_threads(1)
compile_ = sys.argv[1:] == ["compile"]
data = dict(n_entities=200, n_attributes=4, value_range=5, phi=45.0, id_ratio=0.9, test_size=500, seed=0)
ds = generate("comparison", data)
t = build_tensors(ds, 256)
warm, steps, batch = 10, 60, 128
total = warm + steps
once = EvalSchedule(dense_every=total, dense_until=0, every=total, max_size=256)
cfg = TrainConfig(steps=total, batch_size=batch, precision="bf16", compile=compile_, warmup_steps=5,
                  eval=once, device="cpu")  # fmt: skip


def model_fn():
    return build_model({"family": "gpt", "preset": "tiny"}, len(ds.vocab), t.block_size)


for rep in range(2):
    w = Window(torch.device("cpu"), warm, steps)
    train(model_fn, t, cfg, 0, progress=False, on_step=w)
    print(f"rep{rep} compile={compile_} single     {steps * batch / w.seconds:8.0f} examples/s", flush=True)
    for n in (2, 4):
        w = Window(torch.device("cpu"), warm, steps)
        train_packed(model_fn, t, cfg, list(range(n)), progress=False, on_step=w)
        rate = n * steps * batch / w.seconds
        print(f"rep{rep} compile={compile_} packed x{n} {rate:8.0f} examples/s", flush=True)
