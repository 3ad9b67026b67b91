"""`python -m grokbench status`: every run of a study, how far it is and what it has learnt so far.

The runs are the study's grid (grokbench.grid.cells), so that runs not started yet are listed, plus any run
folder found under `<results>/runs/` that the study does not name. Each run's state is read from files
only (no process inspection: the trainer may run on another node of a cluster and the results folder be a
shared filesystem), first match wins:

- done: run.json says "completed" (a run that stopped early, train/early_stop.py, is done); diverged:
  run.json says "diverged". Its numbers then come from metrics.parquet, the authoritative output;
- failed: progress.json (train/live.py) says the process ended on an exception; or the run's Snakemake log
  (`<results>/logs/train/<run_id>.log`, or its pack's: `train_log`) ends with a Python traceback or an
  error line written after the last update of progress.json (a retry rewrites the log from its start, so
  an old error does not count);
  or progress.json has not been updated for longer than `stale` seconds (default 600) although the
  trainer rewrites it after every evaluation and at least every 30 s: its process was killed outright
  (SIGKILL, out of memory, a time limit without warning, a lost node). Snakemake may still retry it: the
  retry resumes from the last checkpoint and the run shows as training again. The clocks of the training
  node and of this one are assumed to agree to well within `stale`;
- stopped: a stop signal (SIGTERM / SIGUSR1 before a time limit, preemption) saved a resumable state and
  the process exited: it resumes when rerun (Snakemake's retries do);
- training: progress.json present and recently updated;
- pending: none of these files yet.

Per run: state, step of total, latest accuracy of the analysis's train (memorization_split), ID (id_split)
and OOD (ood_split) splits, the steps at which it memorized and generalized ID and OOD so far (first
evaluation from which the accuracy stays at or above the analysis's thresholds, within its tolerance, up
to now: grokbench.report.analysis's definitions applied to the curves so far), steps per second and time
left at that rate. Then one line per study: how many runs are in each state.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .curves import first_stable_step
from .grid import cells
from .report.analysis import AnalysisConfig
from .train.config import TrainConfig
from .train.live import FAILED, PROGRESS, STOPPED, read_progress

STALE_SECONDS = 600.0
STATES = ("done", "training", "pending", "failed", "diverged", "stopped")  # summary order
LOG_TAIL_BYTES = 8192
# a traceback's first line, an exception line (`ValueError: ...`, `torch.OutOfMemoryError: ...`), a CLI error
ERROR_LINE = re.compile(
    r"^(Traceback \(most recent call last\)|[\w.]*(Error|Exception)\b|grokbench \w+: error:)"
)


@dataclass
class RunStatus:
    run_id: str
    state: str = "pending"
    step: int | None = None
    total_steps: int | None = None
    train: float | None = None  # latest accuracy of the memorization split
    id: float | None = None
    ood: float | None = None
    memorized: int | None = None  # step, so far
    generalized_id: int | None = None
    generalized_ood: int | None = None
    steps_per_second: float | None = None
    seconds_left: float | None = None
    note: str = ""
    in_config: bool = True
    metrics: pd.DataFrame | None = field(default=None, repr=False)


def collect(
    results: str | Path,
    config: dict[str, Any] | None = None,
    stale: float = STALE_SECONDS,
    now: float | None = None,
) -> list[RunStatus]:
    """The status of every run of `config` (a validated study; None: only the runs found on disk) whose
    outputs are under `results`, then of the run folders there that the study does not name."""
    results = Path(results)
    now = time.time() if now is None else now
    analysis = AnalysisConfig.from_dict((config or {}).get("analysis", {}))
    listed: dict[str, int | None] = {}
    for cell in cells(config) if config else []:
        listed[cell.run_id] = TrainConfig.from_dict(config["training"][cell.training]).steps
    out = [run_status(results, rid, total, analysis, stale, now) for rid, total in listed.items()]
    for rid in runs_on_disk(results):
        if rid not in listed:
            status = run_status(results, rid, None, analysis, stale, now)
            status.in_config = config is None
            if config is not None:
                status.note = "; ".join(filter(None, [status.note, "not in the study"]))
            out.append(status)
    return out


def runs_on_disk(results: Path) -> list[str]:
    """Run ids of the folders under results/runs/ (<dataset>/<model>/<training>/seed<k>) with any run file."""
    runs = results / "runs"
    found = set()
    for name in ("run.json", "metrics.parquet", PROGRESS, "resume.pt"):
        for path in runs.glob(f"*/*/*/seed*/{name}"):
            found.add(path.parent.relative_to(runs).as_posix())
    return sorted(found)


def run_status(
    results: Path, run_id: str, total: int | None, analysis: AnalysisConfig, stale: float, now: float
) -> RunStatus:
    d = results / "runs" / run_id
    s = RunStatus(run_id, total_steps=total)
    live = read_progress(d / PROGRESS)
    info = read_json(d / "run.json")
    # run.json is written last, once the run's outputs are; without `status`: an older run.json, completed
    finished = info is not None and info.get("status", "completed") in ("completed", "diverged")
    # a progress.json newer than run.json: the run is being trained again (by hand, over its outputs)
    again = finished and live is not None and live.get("updated_unix", 0) > (d / "run.json").stat().st_mtime
    if finished and (d / "metrics.parquet").exists() and not again:
        return finished_status(s, d, info, analysis)
    if live is None:
        error = log_error(results, run_id)
        if error is not None:
            s.state, s.note = "failed", error
        elif (d / "resume.pt").exists():
            s.note = "a resumable state is saved"
        return s
    s.metrics = live_metrics(live)
    s.step, s.total_steps = live.get("step"), live.get("total_steps", total)
    fill_accuracies(s, analysis)
    age = now - float(live.get("updated_unix", 0))
    error = log_error(results, run_id, after=float(live.get("updated_unix", 0)))
    where = f"pid {live.get('pid')} on {live.get('host')}"
    if live.get("state") == FAILED:
        s.state, s.note = "failed", live.get("error") or "the training process ended on an error"
    elif live.get("state") == STOPPED:
        s.state, s.note = "stopped", f"state saved at step {s.step}; resumes when rerun"
    elif error is not None:
        s.state, s.note = "failed", error
    elif age > stale:
        s.state = "failed"
        s.note = f"no update for {duration(age)} ({where}; killed?)"
    else:
        s.state = "training"
        s.steps_per_second = live.get("steps_per_second")
        left = live.get("seconds_left")
        s.seconds_left = max(0.0, left - age) if left is not None else None
        s.note = where
    return s


def finished_status(s: RunStatus, d: Path, info: dict[str, Any], analysis: AnalysisConfig) -> RunStatus:
    s.metrics = pd.read_parquet(d / "metrics.parquet")
    training = info.get("config", {}).get("training", {})
    s.total_steps = training.get("steps", s.total_steps)
    fill_accuracies(s, analysis)
    if info.get("status") == "diverged":
        s.state, s.step = "diverged", info.get("diverged_step")
        s.note = f"training loss {info.get('diverged_loss')} at step {s.step}"
    else:
        s.state = "done"
        s.step = info.get("stopped_step") if info.get("stopped_early") else s.total_steps
        if info.get("stopped_early"):
            s.note = f"stopped early at step {s.step}"
    wall = info.get("wall_seconds") or 0
    trained = sum(seg["end_step"] - seg["start_step"] for seg in info.get("segments", []))
    s.steps_per_second = trained / wall if wall > 0 and trained > 0 else None
    s.seconds_left = 0.0
    return s


def live_metrics(live: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(live.get("metrics") or {}, columns=["step", "split", "loss", "accuracy", "elapsed"])


def fill_accuracies(s: RunStatus, analysis: AnalysisConfig) -> None:
    """Latest accuracies and the memorization / generalization steps so far, from `s.metrics`."""
    m = s.metrics
    if m is None or m.empty:
        return
    tol = analysis.tolerance
    for attr, split, threshold, reached in (
        ("train", analysis.memorization_split, analysis.memorization_threshold, "memorized"),
        ("id", analysis.id_split, analysis.threshold, "generalized_id"),
        ("ood", analysis.ood_split, analysis.threshold, "generalized_ood"),
    ):
        curve = m[m["split"] == split].sort_values("step")
        if curve.empty:
            continue
        setattr(s, attr, float(curve["accuracy"].iloc[-1]))
        setattr(s, reached, first_stable_step(curve["step"], curve["accuracy"], threshold, tol))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def train_log(results: Path, run_id: str) -> Path:
    """The Snakemake log of the job that trains `run_id`: its own (rule train), or, for a pack's member, the
    pack's (rule train_pack: `<dataset>/<model>/<training>/pack<first>-<last>.log`, grid.Pack.pack_id)
    whose seed range holds the run's seed."""
    logs = results / "logs" / "train"
    own = logs / f"{run_id}.log"
    cell, _, seed = run_id.rpartition("/seed")
    if own.exists() or not seed.isdigit():
        return own
    for path in sorted((logs / cell).glob("pack*-*.log")):
        first, _, last = path.stem.removeprefix("pack").partition("-")
        if first.isdigit() and last.isdigit() and int(first) <= int(seed) <= int(last):
            return path
    return own


def log_error(results: Path, run_id: str, after: float = 0.0) -> str | None:
    """The error a run's Snakemake training log ends with (its last error line), if the log was written
    after `after` (seconds since the epoch) and its last lines hold a traceback or an error line."""
    path = train_log(results, run_id)
    try:
        if path.stat().st_mtime <= after:
            return None
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line.rstrip() for line in tail.splitlines() if line.strip()][-30:]
    errors = [line for line in lines if ERROR_LINE.match(line.lstrip("\r"))]
    if not errors:
        return None
    last = [line for line in errors if not line.startswith("Traceback")]
    return (last[-1] if last else errors[-1]).strip()[:200]


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


COLUMNS = ("run", "state", "step", "train", "ID", "OOD", "memorized", "ID gen", "OOD gen", "steps/s",
           "left", "note")  # fmt: skip


def table(statuses: list[RunStatus]) -> str:
    """The runs as an aligned text table."""

    def acc(x):
        return "-" if x is None else f"{x:.3f}"

    def at(x):
        return "-" if x is None else str(x)

    rows = []
    for s in statuses:
        step = f"{at(s.step)}/{at(s.total_steps)}"
        rate = "-" if s.steps_per_second is None else f"{s.steps_per_second:.1f}"
        left = "-" if s.state != "training" else duration(s.seconds_left)
        rows.append((s.run_id, s.state, step, acc(s.train), acc(s.id), acc(s.ood), at(s.memorized),
                     at(s.generalized_id), at(s.generalized_ood), rate, left, s.note))  # fmt: skip
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    text_columns = {0, 1, len(COLUMNS) - 1}

    def line(r):
        cells = [str(v).ljust(w) if i in text_columns else str(v).rjust(w) for i, (v, w) in
                 enumerate(zip(r, widths))]  # fmt: skip
        return "  ".join(cells).rstrip()

    return "\n".join(line(r) for r in [COLUMNS, *rows])


def summary(name: str, statuses: list[RunStatus]) -> str:
    """`<name>: N runs: a done, b training, c pending, d failed` (and diverged, stopped where any)."""
    listed = [s for s in statuses if s.in_config]
    counts = {state: sum(s.state == state for s in listed) for state in STATES}
    shown = [f"{counts[k]} {k}" for k in STATES if k in STATES[:4] or counts[k]]
    extra = len(statuses) - len(listed)
    tail = f" (+{extra} found on disk, not in the study)" if extra else ""
    return f"{name}: {len(listed)} runs: {', '.join(shown)}{tail}"


def report(results: Path, config: dict[str, Any] | None, name: str, stale: float) -> str:
    statuses = collect(results, config, stale)
    if not statuses:
        return f"{name}: no runs (no study config and nothing under {results / 'runs'})"
    return f"{table(statuses)}\n\n{summary(name, statuses)}"


def show(results: Path, config: dict[str, Any] | None, name: str, stale: float, watch: float | None) -> None:
    """Print the report once, or with `watch` every `watch` seconds until interrupted (Ctrl-C)."""
    if watch is None:
        print(report(results, config, name, stale))
        return
    clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
    try:
        while True:
            text = report(results, config, name, stale)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{clear}{stamp}  (every {watch:g} s; Ctrl-C to stop)\n\n{text}", flush=True)
            time.sleep(watch)
    except KeyboardInterrupt:
        pass
