"""torch.compile on the CPU: its one-off cost and the step time it buys, per family at the tiny preset.

    .venv/bin/python scripts/bench-compile.py [FAMILY ...] [--backend auto|torch|fast]

Per family, in this one process: an eager model and a torch.compile(dynamic=True) copy of it (the
trainer's call), each trained on the same batches (B=128, T=6, vocab 230, bf16 autocast, AdamW, one
thread). Prints the compiled model's first two steps (tracing and compiling; run with an empty
TORCHINDUCTOR_CACHE_DIR for the newcomer's case), the median of 40 steps after warm-up of each, their
ratio, and the number of steps after which compiling pays for itself.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from grokbench.models import build_model


def stepper(model: torch.nn.Module, compiled: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = torch.compile(model, dynamic=True) if compiled else model
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        t0 = time.perf_counter()
        idx = torch.randint(230, (128, 6), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = forward(idx)
        loss = F.cross_entropy(logits.float().flatten(0, 1), idx.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("families", nargs="*", default=["gpt", "llama", "rwkv7", "mamba"])
    p.add_argument("--backend", default=None, help="the recurrent families' backend (default: auto)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, tiny preset, B=128, T=6, bf16 autocast")
    header = ("family", "compile s", "eager ms", "compiled ms", "ratio", "pays after")
    print(" ".join(f"{h:>{w}s}" for h, w in zip(header, (8, 9, 9, 11, 6, 10))))
    for family in args.families:
        spec = {"family": family, "preset": "tiny"}
        if args.backend and family not in ("gpt", "llama"):
            spec["backend"] = args.backend
        torch.manual_seed(0)
        model = build_model(spec, 230, 6)
        eager, compiled = stepper(model, False), stepper(copy.deepcopy(model), True)
        first = compiled() + compiled()
        for _ in range(3):
            eager()
        times = {"eager": [], "compiled": []}
        for _ in range(40):  # interleaved, so a load change hits both alike
            times["eager"].append(eager())
            times["compiled"].append(compiled())
        e, c = (statistics.median(times[k]) for k in ("eager", "compiled"))
        pays = f"{first / (e - c):10.0f}" if e > c else f"{'never':>10s}"
        print(f"{family:8s} {first:9.1f} {1e3 * e:9.1f} {1e3 * c:11.1f} {c / e:6.2f} {pays}", flush=True)


if __name__ == "__main__":
    main()
