"""All three analyses on one checkpoint: logit lens, linear probes, causal tracing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..io import atomic_path, sha256_file
from ..models import build_model
from ..tasks.base import Dataset, read_dataset
from . import facts as F
from .common import hidden_stack
from .lens import logit_lens
from .probes import linear_probe
from .tracing import COLUMNS as TRACE_COLUMNS
from .tracing import Pairs, causal_trace

TABLES = ("logit_lens", "probes", "tracing")
TRACING_COLUMNS = ["corrupted", *TRACE_COLUMNS[:3], "role", *TRACE_COLUMNS[3:]]
RUN_INFO, FINAL = "run.json", "model.pt"  # train/run.py's names in a run folder


def block_size_of(ds: Dataset) -> int:
    """The block size a run trains this dataset with: the longest input + answer, minus one (the inputs of
    train/data.py's `Tensors`, `Tensors.block_size`)."""
    return max(len(a) + len(b) for a, b in zip(ds.facts["input_ids"], ds.facts["answer_ids"])) - 1


def load_model(checkpoint: str | os.PathLike | dict[str, Any], ds: Dataset, device: str = "cpu"):
    """(model in eval mode on `device`, step) from a checkpoint: a path to, or the dict of, the layout
    `{"model": state_dict, "model_spec": dict, "step": int}` that train/run.py writes (model.pt) and the
    intermediate checkpoints share; the model is rebuilt for the dataset's vocabulary and block size."""
    ckpt = checkpoint
    if not isinstance(ckpt, dict):
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build_model(ckpt["model_spec"], vocab_size=len(ds.vocab), block_size=block_size_of(ds))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model.to(device).eval(), int(ckpt.get("step", -1))


def _with(df: pd.DataFrame, first: dict[str, Any]) -> pd.DataFrame:
    for i, (name, value) in enumerate(first.items()):
        df.insert(i, name, value)
    return df


def _roles(df: pd.DataFrame, roles: list[str]) -> pd.DataFrame:
    """A column `role` after `position`: roles[position], "all" for -1, "" where unnamed."""
    names = {**dict(enumerate(roles)), -1: "all"}
    role = [names.get(p, "") for p in df["position"].tolist()]
    df.insert(df.columns.get_loc("position") + 1, "role", pd.Series(role, index=df.index, dtype=object))
    return df


@torch.no_grad()
def analyze_model(
    model: nn.Module,
    ds: Dataset,
    *,
    splits=F.EVAL_SPLITS,
    max_facts: int | None = 256,
    heldout_fraction: float = 0.2,
    probe_method: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, pd.DataFrame]:
    """The three tables of `model` (a Backbone) on dataset `ds`, keyed by `TABLES`.

    Facts: at most `max_facts` inferred facts per split of `splits` (seeded); `group` is their split.
    - logit_lens: `lens.logit_lens` per target ("answer"; composition also "bridge", the first hop's
      tail), columns target, group, layer, position, role, n, prob, log_prob, rank, top1;
    - probes: `probes.linear_probe` on `facts.probe_set` (comparison: attribute value at the entity;
      composition: bridge entity at the first relation; empty for other tasks), columns target,
      position, layer, split ("train", "test_id" held-out ID, "test_ood"), n, accuracy,
      control_accuracy, majority_accuracy;
    - tracing: `tracing.causal_trace` with `facts.corruptions` at each of `facts.corruption_positions`
      (comparison: e_a, then e_b; facts without a corruption left out), columns corrupted (the position
      changed), group, layer, position, role, n, p_clean, p_corrupt,
      p_patched, recovery, ld_clean, ld_corrupt, ld_patched, ld_recovery.
    `role` names the position ("2:<e_#>"; "all" for position -1, every position restored)."""
    F.check_plain(ds)
    facts = F.sample_inferred(ds, splits, max_facts, seed)
    idx, lengths = F.fact_inputs(facts)
    groups = facts["split"].to_numpy()
    roles = F.position_roles(ds, facts) if len(facts) and (lengths == lengths[0]).all() else []

    lens = []
    for target, tokens in F.lens_targets(ds, facts).items():
        keep = tokens >= 0
        table = logit_lens(
            model, idx[keep], torch.from_numpy(tokens[keep]), lengths[keep], groups[keep], batch_size
        )
        lens.append(_with(table, {"target": target}))
    lens_df = pd.concat(lens, ignore_index=True)
    lens_df = _roles(lens_df, roles)

    ps = F.probe_set(ds, heldout_fraction, seed)
    if ps is None:
        probes_df = linear_probe(torch.zeros(1, 0, 1), torch.zeros(0), [])
        probes_df = _with(probes_df, {"target": pd.Series(dtype=object), "position": pd.Series(dtype=int)})
    else:
        features = hidden_stack(model, ps.inputs, batch_size, ps.position)  # (L, N, C)
        probes_df = linear_probe(
            features, torch.from_numpy(ps.labels), ps.split, ps.keys, method=probe_method, seed=seed
        )
        probes_df = _with(probes_df, {"target": ps.target, "position": ps.position})

    traces = []
    for position in F.corruption_positions(ds, facts) if roles else []:
        c = F.corruptions(ds, facts, seed, position)
        if not c.ok.any():
            continue
        ok = torch.from_numpy(c.ok)
        known = c.answer[c.ok]
        corrupt_answer = torch.from_numpy(known) if (known >= 0).all() else None
        answer = torch.from_numpy(F.lens_targets(ds, facts)["answer"])[ok]
        pairs = Pairs(idx[ok], c.inputs[ok], answer, corrupt_answer)
        trace = causal_trace(model, pairs, groups[c.ok], batch_size=batch_size)
        traces.append(_roles(_with(trace, {"corrupted": c.position}), roles))
    # no rows where the facts differ in length (no common positions to restore) or none has a corruption
    trace_df = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame(columns=TRACING_COLUMNS)
    return {"logit_lens": lens_df, "probes": probes_df, "tracing": trace_df}


def analyze_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Any],
    data: str | os.PathLike | Dataset,
    *,
    device: str = "cpu",
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """`analyze_model` on the model of `checkpoint` (see `load_model`) and the dataset `data` (a Parquet
    path or a Dataset); every table gets a first column `step`, the checkpoint's training step."""
    ds = data if isinstance(data, Dataset) else read_dataset(Path(data))
    model, step = load_model(checkpoint, ds, device)
    tables = analyze_model(model, ds, **options)
    return {name: _with(df, {"step": step}) for name, df in tables.items()}


def checkpoint_files(run_dir: str | os.PathLike) -> list[Path]:
    """A run folder's weight files, by step: the checkpoints its run.json lists (training `checkpoints`,
    grokbench.train.checkpoints), each checked against the sha256 listed with it (ValueError if it
    differs), else the final model.pt alone."""
    run_dir = Path(run_dir)
    info = run_dir / RUN_INFO
    listed = (json.loads(info.read_text()).get("checkpoints") or []) if info.exists() else []
    if not listed:
        if not (run_dir / FINAL).exists():
            raise FileNotFoundError(f"{run_dir}: no checkpoints listed in {RUN_INFO} and no {FINAL}")
        return [run_dir / FINAL]
    files = []
    for entry in sorted(listed, key=lambda e: e["step"]):
        path = run_dir / entry["file"]
        if "sha256" in entry and sha256_file(path) != entry["sha256"]:
            raise ValueError(f"{path}: sha256 differs from the one {info} lists")
        files.append(path)
    return files


IDENTITY = ("run_id", "dataset", "model", "training", "seed", "family")  # as mech/weights.py's tables


def run_identity(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's identity from its run.json (train/run.py): run_id, its cell (dataset, model, training,
    seed) and model family; empty where run.json does not name the run."""
    info = Path(run_dir) / RUN_INFO
    info = json.loads(info.read_text()) if info.exists() else {}
    if "run_id" not in info:
        return {}
    cell = info.get("cell", {})
    return {
        "run_id": info["run_id"],
        **{k: cell.get(k) for k in ("dataset", "model", "training", "seed")},
        "family": info.get("config", {}).get("model", {}).get("family"),
    }


def checkpoint_reasons(run_dir: str | os.PathLike) -> dict[str, str]:
    """Checkpoint file (relative to the run folder) -> the `reason` run.json lists with it."""
    info = Path(run_dir) / RUN_INFO
    listed = (json.loads(info.read_text()).get("checkpoints") or []) if info.exists() else []
    return {e["file"]: e.get("reason", "") for e in listed}


def analyze_run(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | Dataset,
    *,
    device: str = "cpu",
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """`analyze_checkpoint` on every file of `checkpoint_files(run_dir)`, the tables concatenated; a
    second column `checkpoint` names the file (relative to the run folder) and a third its `reason` in
    run.json (grokbench.train.checkpoints; "final" for a model.pt alone). Where run.json names the run,
    its identity (`IDENTITY`: run_id, dataset, model, training, seed, family) comes first."""
    ds = data if isinstance(data, Dataset) else read_dataset(Path(data))
    identity, reasons = run_identity(run_dir), checkpoint_reasons(run_dir)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for path in checkpoint_files(run_dir):
        tables = analyze_checkpoint(path, ds, device=device, **options)
        file = path.relative_to(run_dir).as_posix()
        for name, df in tables.items():
            df.insert(1, "checkpoint", file)
            df.insert(2, "reason", reasons.get(file, "final" if file == FINAL else ""))
            parts[name].append(_with(df, identity))
    return {name: pd.concat(dfs, ignore_index=True) for name, dfs in parts.items()}


def write_tables(tables: dict[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Each table as `<out_dir>/<name>.parquet` (written atomically); the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        path = out_dir / f"{name}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        paths.append(path)
    return paths
