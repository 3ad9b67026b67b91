"""How long saving (and loading) a run's resumable state takes: the figure behind the SLURM signal time.

    python -m grokbench.train.bench_save --preset paper --family gpt --dir results/.bench-save

builds the model of the preset for the seed study's comparison vocabulary (config/paper.yaml's `cmp`:
1000 entities, 20 attributes, 20 values), makes one AdamW step so the optimizer holds both moments, and
saves the state that `trainer.train` saves (model, optimizer, scheduler, sampler, accelerators, RNG, a
metrics list of a long run) with `Checkpointer.save` `--repeats` times into `--dir` (put it on the file
system the runs write to), then loads it back once. Prints the state's size and each time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..models import build_model, count_params
from .accelerators import Accelerators
from .config import TrainConfig
from .resume import Checkpointer, rng_states
from .trainer import make_optimizer

# the comparison task's vocabulary at config/paper.yaml's `cmp`: entities, attributes, values, and the
# task's few special tokens (a few more or less change the state by a few kB)
PAPER_VOCAB = 1000 + 20 + 20 + 8
BLOCK = 8


def build_state(preset: str, family: str, vocab: int) -> tuple[dict, int]:
    """The resumable state of a run of `family` at `preset` after one step, and its parameter count."""
    torch.manual_seed(0)
    model = build_model({"family": family, "preset": preset}, vocab_size=vocab, block_size=BLOCK)
    cfg = TrainConfig()
    opt, sched = make_optimizer(model, cfg, torch.device("cpu"))
    x = torch.randint(vocab, (4, BLOCK))
    model(x).float().logsumexp(-1).mean().backward()
    opt.step()
    sched.step()
    rows = [  # a long run's metrics: 70 evaluations of 8 splits
        dict(step=s, split=f"split{i}", loss=1.0, accuracy=0.5, elapsed=1.0)
        for s in range(70)
        for i in range(8)
    ]
    state = dict(
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        sampler=torch.Generator().manual_seed(0).get_state(),
        accelerators=Accelerators(cfg.accelerators).state_dict(),
        rng=rng_states(),
        metrics=rows,
        step=1,
        elapsed=1.0,
    )
    return state, count_params(model)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--family", default="gpt")
    p.add_argument("--vocab", type=int, default=PAPER_VOCAB)
    p.add_argument("--dir", type=Path, help="where to write the state (default: a temporary folder)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    state, n_params = build_state(args.preset, args.family, args.vocab)
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-save-", dir=args.dir))
    try:
        ckpt = Checkpointer(folder / "resume.pt", "bench")
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ckpt.save(state)
            times.append(time.perf_counter() - t0)
        size = ckpt.path.stat().st_size
        t0 = time.perf_counter()
        ckpt.load()
        load = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    where = folder.parent
    print(f"{args.family} {args.preset}: {n_params:,} parameters, state {size / 1e6:.0f} MB in {where}")
    print("save: " + ", ".join(f"{t:.2f} s" for t in times) + f" (max {max(times):.2f} s); load {load:.2f} s")


if __name__ == "__main__":
    main()
