"""Backend benchmark: each family's training step (forward + backward) with the `torch` reference and
with the `kernels` backend, at a training shape, on the current device.

This grounds the `auto` backend's choice (models/backends.py): it prints, per family, milliseconds per
step for each backend that can run here and the ratio torch / kernels. On a machine without CUDA or the
kernel packages only the torch column is measured (so CI exercises the command on a tiny shape).

    python -m grokbench bench-backends --preset paper --batch 512 --seq 6
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..models import PRESETS, build_model


def time_step(model: torch.nn.Module, idx: torch.Tensor, repeats: int, amp: bool) -> float:
    """Median seconds of one forward + backward."""

    def step():
        with torch.autocast(idx.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(idx)
        F.cross_entropy(logits.float().flatten(0, 1), idx.flatten()).backward()

    def sync():
        if idx.is_cuda:
            torch.cuda.synchronize()

    step()  # first call: kernel compilation / autotuning, not timed
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench_backends(
    preset: str, batch: int, seq: int, vocab: int, repeats: int, families: list[str] | None = None
) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for family, size in PRESETS[preset].items():
        if families and family not in families:
            continue
        row = {"family": family}
        idx = torch.randint(vocab, (batch, seq), device=device)
        for backend in ("torch", "kernels"):
            spec = {"family": family, **size}
            with torch.device("meta"):
                probe = build_model(spec, vocab, seq)
            if not hasattr(probe.config, "backend"):
                if backend == "kernels":
                    continue  # attention families: one implementation (SDPA picks its own kernel)
            else:
                spec["backend"] = backend
            torch.manual_seed(0)
            model = build_model(spec, vocab, seq).to(device)
            try:
                row[f"{backend}_ms"] = 1e3 * time_step(model, idx, repeats, amp=device.type == "cuda")
            except RuntimeError as e:  # kernels unavailable here (no CUDA / package): not measured
                row[f"{backend}_ms"] = None
                row["note"] = str(e).splitlines()[0][:80]
        if row.get("torch_ms") and row.get("kernels_ms"):
            row["torch/kernels"] = row["torch_ms"] / row["kernels_ms"]
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    def ms(v):
        return f"{v:9.2f}" if v is not None else "        -"

    ratio = row.get("torch/kernels")
    return (
        f"{row['family']:8s} torch {ms(row.get('torch_ms'))} ms   kernels {ms(row.get('kernels_ms'))} ms"
        + (f"   torch/kernels {ratio:5.2f}" if ratio else "")
        + (f"   ({row['note']})" if row.get("note") else "")
    )
