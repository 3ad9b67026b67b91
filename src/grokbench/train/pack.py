"""A pack end to end: several runs of one dataset x model x training setting trained in one process, as one
vectorized model (train/packed.py), each run's outputs written into its own run folder.

Which runs form a pack is the grid's business (grokbench.grid.packs: the seeds of one block of
`pack.size` consecutive seeds); the Snakemake rule of a pack (workflow/rules/train.smk) has every member's
metrics.parquet, model.pt and run.json as its outputs, so a pack job is complete when each member is.

Each member's files are those `run.run` writes for it alone (same names, same folder, same run.json
fields), with what packed training guarantees (train/packed.py): its initialization, batch order,
optimizer and clipping are its own, so its results equal a separate run's up to floating-point rounding
(float64: to ~1e-13; fp32 / bf16: the rounding of batched kernels, which grows over training as any two
reductions in another order do). Its run.json adds `pack`: {"id": the pack's id, "size": the study's
pack.size, "members": the run ids trained together, "seeds": theirs}; `wall_seconds` and `segments` are
the pack's (one process trained every member, so each member's cost is the whole pack's).

Early stop: a member meeting its criterion stops at that evaluation (its metrics and model.pt are those of
that step) while the others train on; the pack ends when every member has stopped or diverged, or at the
last step. A member whose training loss is not finite is marked diverged at that step; off CUDA it ends as
a single run does (evaluated there, its weights of that step); on CUDA its metrics end at its last
evaluation before the divergence and its model.pt holds the weights the pack ended with (train/packed.py,
"Divergence").

Checkpoint/resume, as for a single run (train/resume.py): the pack's resumable state is `PACK_RESUME` in
its first member's folder (not a Snakemake output), saved periodically and on SIGTERM / SIGUSR1, after
which the process exits 75 and a rerun of the same pack resumes it, bit for bit (train/packed.py). Its
fingerprint covers the model, training settings, the pack's seeds, the data and the training code: the
state of another pack or configuration is ignored. `segments` in each member's run.json are the pack's.

Not supported in a pack (rejected by grokbench.study before any job): training.accelerators, model
dropout > 0, a model's backend "kernels". Weights across training (training.checkpoints) are kept for
each member in its own folder, as for a single run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .. import provenance
from ..grid import Cell
from ..io import sha256_bytes
from ..models import build_model
from ..tasks.base import read_dataset
from . import checkpoints
from .config import TrainConfig
from .data import build_tensors
from .live import PROGRESS, Loggers, Progress
from .packed import train_packed
from .resume import Checkpointer, Interrupted, Segment
from .run import RESUME, write_outputs

PACK_RESUME = "pack-resume.pt"  # a pack's resumable state, in its first member's folder


def run_pack(
    data: str | Path,
    model_spec: dict[str, Any],
    training: dict[str, Any],
    seeds: list[int],
    out_dirs: list[str | Path],
    cells: list[dict[str, Any]],
    pack_id: str,
    pack_size: int,
    progress: bool = True,
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 10.0,
) -> list[dict[str, Any]]:
    """Train the runs of `seeds` together; write run k's outputs into `out_dirs[k]`, named `cells[k]`
    ({dataset, model, training, seed}) in its run.json. Returns each run's run.json record."""
    if not (len(seeds) == len(out_dirs) == len(cells)):
        raise ValueError("run_pack: seeds, out_dirs and cells must have one entry per run")
    segment = Segment()
    out_dirs = [Path(d) for d in out_dirs]
    run_ids = [Cell(**c).run_id for c in cells]
    cfg = TrainConfig.from_dict(training)
    ds = read_dataset(data)
    t = build_tensors(ds, cfg.eval.max_size)

    def model_fn():
        return build_model(model_spec, vocab_size=len(ds.vocab), block_size=t.block_size)

    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
    what = {
        "model": model_spec,
        "training": cfg.to_dict(),
        "seeds": list(seeds),
        "data": ds.meta.get("content_hash"),
        "code": provenance.code_fingerprint("train"),
        "packed": True,
    }
    fingerprint = sha256_bytes(json.dumps(what, sort_keys=True, default=str).encode())
    resume = out_dirs[0] / PACK_RESUME
    checkpoint = Checkpointer(resume, fingerprint, checkpoint_every, checkpoint_minutes, segment)
    lives = [Progress(d / PROGRESS, rid, cfg.steps) for d, rid in zip(out_dirs, run_ids)]
    boards = [
        Loggers(
            d,
            {"model": model_spec, "training": cfg.to_dict(), "seed": s, "cell": c},
            cfg.tensorboard,
            cfg.wandb,
        )
        for d, s, c in zip(out_dirs, seeds, cells)
    ]

    def on_step(step: int) -> None:
        for live in lives:
            live.on_step(step)

    def on_metrics(m: int, step: int, rows: list[dict]) -> None:
        lives[m].on_metrics(step, rows)
        if boards[m] is not None:
            boards[m].on_metrics(step, rows)

    # weights across training, opt-in (train/checkpoints.py), in each member's folder
    weights = [checkpoints.for_run(cfg, d, model_spec) for d in out_dirs]
    try:
        results = train_packed(model_fn, t, cfg, seeds, desc=pack_id, progress=progress,
                               checkpoint=checkpoint, on_step=on_step, on_metrics=on_metrics,
                               weights=weights)  # fmt: skip
    except Interrupted:
        for live in lives:
            live.stopped()
        raise
    except BaseException as e:
        for live in lives:
            live.failed(e)
        raise
    finally:
        for board in boards:
            if board is not None:
                board.close()
    pack = {"id": pack_id, "size": pack_size, "members": run_ids, "seeds": list(seeds)}
    infos = []
    for m, result in enumerate(results):
        info = write_outputs(
            out_dirs[m], result, cfg, model_spec, seeds[m], cells[m], run_ids[m], data, ds, t, weights[m],
            checkpoint.segments, extra={"pack": pack},
        )  # fmt: skip
        (out_dirs[m] / RESUME).unlink(missing_ok=True)  # a single run's state from an earlier attempt
        lives[m].remove()
        infos.append(info)
    checkpoint.remove()
    print(f"{pack_id}: {len(seeds)} runs trained together: {', '.join(run_ids)}", file=sys.stderr)
    return infos
