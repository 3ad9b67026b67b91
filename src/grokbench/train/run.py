"""One run end to end: read the dataset, build the model, train, write metrics, checkpoint, provenance."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from .. import provenance
from ..grid import Cell
from ..io import atomic_path, sha256_bytes, sha256_file, write_json
from ..models import backends, build_model, count_params
from ..tasks.base import Dataset, read_dataset
from . import checkpoints
from .checkpoints import WeightCheckpoints, save_weights, weights_state
from .config import TrainConfig
from .data import Tensors, build_tensors
from .live import PROGRESS, Loggers, Progress
from .resume import COMPLETED, DIVERGED, Checkpointer, Interrupted, Segment
from .trainer import Result, autocast, train

METRICS = "metrics.parquet"
CHECKPOINT = "model.pt"
RUN_INFO = "run.json"
RESUME = "resume.pt"  # the resumable state of an unfinished run (not a Snakemake output)


def ran_backends(model: nn.Module, t, cfg: TrainConfig, device: str | torch.device) -> dict[str, Any]:
    """run.json's `backends`: the model's backend option, the input length and operator -> "kernels" |
    "fast" | "torch", as the trained model's operators decide it (models/backends.py `resolved`: one
    forward pass on the device, under the run's autocast, at the training length)."""
    device = torch.device(device)
    return backends.resolved(model, t.x[:1].to(device), autocast(device, cfg.precision))


def run(
    data: str | Path,
    model_spec: dict[str, Any],
    training: dict[str, Any],
    seed: int,
    out_dir: str | Path,
    cell: dict[str, Any] | None = None,
    progress: bool = True,
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 10.0,
) -> dict[str, Any]:
    """Train one run and write its outputs into `out_dir`.

    `cell` names the run in the study grid ({dataset, model, training, seed} names); it is recorded in
    run.json so that analysis can group runs without parsing paths.

    run.json says how the run ended and what it cost, over all the processes that trained it:
    - `status`: "completed", or "diverged" when a training loss was not finite (the run stopped there;
      its outputs are written all the same, metrics ending with an evaluation at that step);
      `diverged_step` (int, else null) and `diverged_loss` (the loss as text, "nan" / "inf" / "-inf",
      else null);
    - `backends`: what the model's operators ran (`ran_backends`): {"backend": the model's option,
      "seq_len", "operators": {op: "kernels" | "fast" | "torch"}} ({} operators: attention only);
    - `segments`: one record per start of the training process on this run (the first, then each resume;
      see `resume.Segment.record`), `n_segments`, and `wall_seconds`, the sum of their wall seconds;
      `started` is the first segment's start.
    """
    segment = Segment()  # this process's part of the run, timed from here
    out_dir = Path(out_dir)
    cell = dict(cell or {"dataset": "data", "model": "model", "training": "default", "seed": seed})
    run_id = Cell(**cell).run_id  # the one spelling: <dataset>/<model>/<training>/seed<k>, its folder
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.from_dict(training)
    ds = read_dataset(data)
    t = build_tensors(ds, cfg.eval.max_size)
    vocab_size, block_size = len(ds.vocab), t.block_size

    def model_fn():
        return build_model(model_spec, vocab_size=vocab_size, block_size=block_size)

    what = {
        "model": model_spec,
        "training": cfg.to_dict(),
        "seed": seed,
        "data": ds.meta.get("content_hash"),
        "code": provenance.code_fingerprint("train"),
    }
    fingerprint = sha256_bytes(json.dumps(what, sort_keys=True, default=str).encode())
    checkpoint = Checkpointer(out_dir / RESUME, fingerprint, checkpoint_every, checkpoint_minutes, segment)
    # progress.json while it trains (train/live.py; deleted once the outputs are written), TensorBoard events
    live = Progress(out_dir / PROGRESS, run_id, cfg.steps)
    config = {"model": model_spec, "training": cfg.to_dict(), "seed": seed, "cell": cell}
    board = Loggers(out_dir, config, cfg.tensorboard, cfg.wandb)

    def on_metrics(step: int, rows: list[dict]) -> None:
        live.on_metrics(step, rows)
        if board is not None:
            board.on_metrics(step, rows)

    weights = checkpoints.for_run(cfg, out_dir, model_spec)  # weights across training, opt-in
    try:
        result = train(model_fn, t, cfg, seed, desc=run_id, progress=progress, checkpoint=checkpoint,
                       weights=weights, on_step=live.on_step, on_metrics=on_metrics)  # fmt: skip
    except Interrupted:
        live.stopped()
        raise
    except BaseException as e:
        live.failed(e)
        raise
    finally:
        if board is not None:
            board.close()
    info = write_outputs(out_dir, result, cfg, model_spec, seed, cell, run_id, data, ds, t,
                         weights, checkpoint.segments)  # fmt: skip
    checkpoint.remove()
    live.remove()
    return info


def write_outputs(
    out_dir: Path,
    result: Result,
    cfg: TrainConfig,
    model_spec: dict[str, Any],
    seed: int,
    cell: dict[str, Any],
    run_id: str,
    data: str | Path,
    ds: Dataset,
    t: Tensors,
    weights: WeightCheckpoints | None,
    segments_of: Callable[[int, str], list[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a trained run's metrics.parquet, model.pt, kept weights and run.json into `out_dir`; return
    run.json's record. `segments_of(end_step, ended)` gives the records of the processes that trained it
    (`Checkpointer.segments`); `extra`: more run.json fields (a pack's, train/pack.py)."""
    diverged = result.diverged_step is not None
    end_step = result.diverged_step if diverged else result.stopped_step or cfg.steps
    segments = segments_of(end_step, DIVERGED if diverged else COMPLETED)
    n_params = count_params(result.model)

    table = pa.Table.from_pandas(result.metrics, preserve_index=False)
    with atomic_path(out_dir / METRICS) as tmp:
        pq.write_table(table, tmp)
    save_weights(out_dir / CHECKPOINT, weights_state(result.model), model_spec, end_step)
    saved = checkpoints.finish(weights, out_dir, end_step, result.model, result.metrics)
    info = provenance.record(
        "train",
        config={"model": model_spec, "training": cfg.to_dict(), "seed": seed},
        cell=cell,
        run_id=run_id,
        inputs={str(data): sha256_file(data)},
        data_content_hash=ds.meta.get("content_hash"),
        n_params=n_params,
        vocab_size=len(ds.vocab),
        block_size=t.block_size,
        device=result.device,
        backends=ran_backends(result.model, t, cfg, result.device),
        status=DIVERGED if diverged else COMPLETED,
        diverged_step=result.diverged_step,
        stopped_early=result.stopped_step is not None,  # train/early_stop.py: memorized and generalized
        stopped_step=result.stopped_step,
        diverged_loss=None if result.diverged_loss is None else str(result.diverged_loss),
        wall_seconds=round(sum(s["wall_seconds"] for s in segments), 3),
        n_segments=len(segments),
        segments=segments,
        started=segments[0]["started"],
        finished=provenance.now(),
        **(extra or {}),
        # weights across training (train/checkpoints.py): step, file (in out_dir), sha256, reason(s)
        checkpoints=saved,
        outputs={
            **{str(out_dir / name): sha256_file(out_dir / name) for name in (METRICS, CHECKPOINT)},
            **{str(out_dir / c["file"]): c["sha256"] for c in saved},
        },
    )
    write_json(out_dir / RUN_INFO, info)
    return info
