"""One run end to end: read the dataset, build the model, train, write metrics, checkpoint, provenance."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .. import provenance
from ..io import atomic_path, sha256_bytes, sha256_file, write_json
from ..models import build_model, count_params
from ..tasks.base import read_dataset
from .config import TrainConfig
from .data import build_tensors
from .resume import Checkpointer
from .trainer import train

METRICS = "metrics.parquet"
CHECKPOINT = "model.pt"
RUN_INFO = "run.json"
RESUME = "resume.pt"  # the resumable state of an unfinished run (not a Snakemake output)


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
    """
    out_dir = Path(out_dir)
    cell = dict(cell or {"seed": seed})
    run_id = "/".join(str(v) for v in cell.values())
    out_dir.mkdir(parents=True, exist_ok=True)
    started = provenance.now()
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
    checkpoint = Checkpointer(out_dir / RESUME, fingerprint, checkpoint_every, checkpoint_minutes)
    t0 = time.perf_counter()
    result = train(model_fn, t, cfg, seed, desc=run_id, progress=progress, checkpoint=checkpoint)
    n_params = count_params(result.model)

    table = pa.Table.from_pandas(result.metrics, preserve_index=False)
    with atomic_path(out_dir / METRICS) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out_dir / CHECKPOINT) as tmp:
        state = {k: v.cpu() for k, v in result.model.state_dict().items()}
        torch.save({"model": state, "model_spec": model_spec, "step": cfg.steps}, tmp)
    info = provenance.record(
        "train",
        config={"model": model_spec, "training": cfg.to_dict(), "seed": seed},
        cell=cell,
        run_id=run_id,
        inputs={str(data): sha256_file(data)},
        data_content_hash=ds.meta.get("content_hash"),
        n_params=n_params,
        vocab_size=vocab_size,
        block_size=block_size,
        device=result.device,
        wall_seconds=round(time.perf_counter() - t0, 3),
        started=started,
        finished=provenance.now(),
        outputs={str(out_dir / name): sha256_file(out_dir / name) for name in (METRICS, CHECKPOINT)},
    )
    write_json(out_dir / RUN_INFO, info)
    checkpoint.remove()
    return info
