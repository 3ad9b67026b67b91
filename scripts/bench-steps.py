"""Training-step time per model family, as ratios to GPT measured in this one process.

One step = bf16-autocast forward (or fp32 with --fp32), cross-entropy on every position, backward, AdamW
step, zero_grad; eager, on the CPU, one thread unless --threads. The families are timed in rounds, each
round timing every family back to back (so a load change on a shared machine hits all of them alike);
per family the minimum over rounds of the median step of a round is kept, and printed with its ratio to
GPT's, for two clocks: wall time, and this thread's CPU time (time.thread_time: with one thread the whole
step runs on it), which on a loaded machine leaves out the time other processes held the core.

    .venv/bin/python scripts/bench-steps.py                                  # tiny preset, B=128, T=6
    .venv/bin/python scripts/bench-steps.py --families gpt mamba --backend torch fast
    .venv/bin/python scripts/bench-steps.py --profile mamba --backend torch  # torch.profiler table

--backend runs each recurrent family once per backend named (the model key `backend`: auto, torch,
fast, kernels); families without one (gpt, llama) run once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from grokbench.models import PRESETS, build_model

DEFAULT_FAMILIES = ["gpt", "llama", "rwkv7", "mamba", "mamba2", "gla", "retnet", "deltanet", "hgrn2", "rwkv6"]


def make_step(family: str, backend: str | None, args):
    spec = {"family": family, "preset": args.preset}
    if backend is not None:
        spec["backend"] = backend
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(spec, args.vocab, args.seq).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(args.vocab, (args.batch, args.seq), generator=gen).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.fp32):
            logits = model(idx)
        loss = F.cross_entropy(logits.float().flatten(0, 1), idx.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def has_backend(family: str, preset: str) -> bool:
    with torch.device("meta"):
        model = build_model({"family": family, "preset": preset}, 16, 8)
    return hasattr(model.config, "backend")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=DEFAULT_FAMILIES)
    p.add_argument("--backend", nargs="+", default=["auto"])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=6)
    p.add_argument("--vocab", type=int, default=230)
    p.add_argument("--steps", type=int, default=10, help="timed steps per family and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--profile", metavar="FAMILY", help="print torch.profiler's table for FAMILY and stop")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (synchronized around each step)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.profile:
        step = make_step(
            args.profile, args.backend[0] if has_backend(args.profile, args.preset) else None, args
        )
        for _ in range(3):
            step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
        return

    runs = {}  # label -> step
    for family in args.families:
        for backend in args.backend if has_backend(family, args.preset) else [None]:
            label = family if backend is None or len(args.backend) == 1 else f"{family}[{backend}]"
            runs.setdefault(label, make_step(family, backend, args))
    for step in runs.values():  # warm up (allocator, first-call costs)
        for _ in range(3):
            step()
    clocks = (time.perf_counter, time.thread_time)
    best = {label: [float("inf")] * len(clocks) for label in runs}
    for _ in range(args.rounds):
        for label, step in runs.items():
            times = []
            for _ in range(args.steps):
                t0 = [clock() for clock in clocks]
                step()
                times.append([clock() - t for clock, t in zip(clocks, t0)])
            best[label] = [min(b, statistics.median(ts)) for b, ts in zip(best[label], zip(*times))]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), preset {args.preset}, "
        f"batch {args.batch}, seq {args.seq}, vocab {args.vocab}, "
        f"{'fp32' if args.fp32 else 'bf16 autocast'}, "
        f"min over {args.rounds} rounds of the median of {args.steps} steps"
    )
    ref = best.get("gpt")
    print(f"{'':20s} {'wall ms':>8s} {'x GPT':>6s}   {'CPU ms':>8s} {'x GPT':>6s}")
    for label, ts in best.items():
        cols = [
            f"{1e3 * t:8.1f} {t / r:6.2f}" if ref else f"{1e3 * t:8.1f}      -" for t, r in zip(ts, ref or ts)
        ]
        print(f"{label:20s} {cols[0]}   {cols[1]}", flush=True)


if __name__ == "__main__":
    main()
