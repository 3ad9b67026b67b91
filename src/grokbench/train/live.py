"""A run's progress while it trains: `progress.json` in its folder, and optional TensorBoard event files.

`progress.json` (`Progress`) is rewritten atomically (grokbench.io.atomic_path: a temporary file renamed
into place, so a reader never sees half a file) when the training loop starts or resumes, after every
evaluation, and at least every `HEARTBEAT_SECONDS` while the loop runs (a clock check per step, no device
sync). It holds:

- `format` (1), `run_id`, `state`: "training"; "stopped" once a stop signal saved a resumable state
  (the process then exits; rerunning resumes it); "failed" when the process ended on an exception, with
  `error` (its type and message); a process killed outright (SIGKILL, out of memory, a lost node) leaves
  "training", and the file then stops being updated;
- `step` (optimizer steps done), `total_steps`, `start_step` (where this process began: 0, or the step of
  the state it resumed), `steps_per_second` (this process's steps over its time since its first step,
  evaluations and checkpoints included; null before there is a measure) and `seconds_left` (the steps
  left at that rate; an early stop may end the run sooner);
- `started` (this process), `updated` (ISO 8601, UTC) and `updated_unix` (seconds since the epoch),
  `heartbeat_seconds`, `pid`, `host`, `slurm_job_id`;
- `metrics`: every metrics row so far, as columns (`step`, `split`, `loss`, `accuracy`, `elapsed`, the
  columns of metrics.parquet): on a resume the rows restored from the checkpoint, then the new ones, so
  the file never has a row twice nor misses one (rows evaluated after the last checkpoint by a process
  that was killed are dropped at the resume and evaluated again).

It is not an output: metrics.parquet and run.json are, and once they are written the run deletes
progress.json (`Progress.remove`). `python -m grokbench status` (grokbench.status) reads it.

TensorBoard (`training.tensorboard: true`; the `tensorboard` extra): event files in the run folder, so
that `tensorboard --logdir results/runs` shows every run by its run id: `accuracy/<split>` and
`loss/<split>` at each evaluation, and the run's config (model, training, seed, cell) as hparams. A resumed
run's writer purges the events at and after the step it resumes from (`purge_step`), which the killed
process may have logged past its last checkpoint, so the curves have each step once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import provenance
from ..grid import Cell
from ..io import write_text

PROGRESS = "progress.json"
FORMAT = 1
HEARTBEAT_SECONDS = 30.0  # the longest the file goes without a rewrite while the loop runs
COLUMNS = ("step", "split", "loss", "accuracy", "elapsed")
TRAINING, STOPPED, FAILED = "training", "stopped", "failed"


class Progress:
    """Writes `progress.json` for one process of one run; `on_metrics` and `on_step` are train()'s hooks."""

    def __init__(
        self,
        path: str | Path,
        run_id: str,
        total_steps: int,
        heartbeat: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self.run_id = run_id
        self.total_steps = total_steps
        self.heartbeat = heartbeat
        self.clock = clock
        self.started = provenance.now()
        self.rows: list[dict] = []
        self.step = self.start_step = 0
        self.mark: tuple[int, float] | None = None  # (steps done, clock) at this process's first step
        self.written = clock()

    def on_metrics(self, step: int, rows: list[dict]) -> None:
        if self.mark is None:
            self.start_step = step
        self.step, self.rows = step, rows
        self.write()

    def on_step(self, step: int) -> None:
        """After optimizer step `step` (0-based): step + 1 steps done."""
        self.step = step + 1
        now = self.clock()
        if self.mark is None:
            self.mark = (self.step, now)
        elif now - self.written >= self.heartbeat:
            self.write()

    def steps_per_second(self) -> float | None:
        if self.mark is None:
            return None
        steps, seconds = self.step - self.mark[0], self.clock() - self.mark[1]
        return steps / seconds if steps > 0 and seconds > 0 else None

    def write(self, state: str = TRAINING, error: str | None = None) -> None:
        rate = self.steps_per_second()
        record: dict[str, Any] = {
            "format": FORMAT,
            "run_id": self.run_id,
            "state": state,
            "step": self.step,
            "total_steps": self.total_steps,
            "start_step": self.start_step,
            "steps_per_second": rate,
            "seconds_left": (self.total_steps - self.step) / rate if rate else None,
            "started": self.started,
            "updated": provenance.now(),
            "updated_unix": time.time(),
            "heartbeat_seconds": self.heartbeat,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "error": error,
            "metrics": {c: [r[c] for r in self.rows] for c in COLUMNS},
        }
        write_text(self.path, json.dumps(record) + "\n")
        self.written = self.clock()

    def stopped(self) -> None:
        """A stop signal saved the state; the process exits and a rerun resumes the run."""
        self.write(STOPPED)

    def failed(self, error: BaseException) -> None:
        """The process ends on `error`."""
        self.write(FAILED, f"{type(error).__name__}: {error}")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """A progress.json as written, or None if there is none or it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class TensorBoard:
    """TensorBoard event files of one run in its folder, fed the rows each evaluation adds."""

    def __init__(self, out_dir: str | Path, config: dict[str, Any]):
        self.out_dir, self.config = Path(out_dir), config
        self.writer = None
        self.seen = 0  # rows already logged

    def on_metrics(self, step: int, rows: list[dict]) -> None:
        if self.writer is None:  # the loop's start: `rows` are those restored from a checkpoint
            self.writer = tensorboard_writer(self.out_dir, step)
            write_hparams(self.writer, hparams(self.config))
            self.seen = len(rows)  # logged by the process that evaluated them
        new, self.seen = rows[self.seen :], len(rows)
        for r in new:
            self.writer.add_scalar(f"accuracy/{r['split']}", r["accuracy"], r["step"])
            self.writer.add_scalar(f"loss/{r['split']}", r["loss"], r["step"])
        if new:
            self.writer.flush()  # visible now, not at the writer's next timed flush

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandB:
    """An offline Weights & Biases run in the run folder (`<run>/wandb/offline-run-*`), fed the same rows
    as TensorBoard, with the run's config. Offline unless WANDB_MODE says otherwise: nothing goes over the
    network; `wandb sync <run>/wandb/offline-run-*` uploads it later. Each training process (the first,
    each resume) writes one offline run under the same id, logging only the rows it evaluated."""

    def __init__(self, out_dir: str | Path, config: dict[str, Any]):
        self.out_dir, self.config = Path(out_dir), config
        self.run = None
        self.seen = 0

    def on_metrics(self, step: int, rows: list[dict]) -> None:
        if self.run is None:  # the loop's start: `rows` are those restored from a checkpoint
            try:
                import wandb
            except ImportError as e:
                raise ImportError(
                    "training.wandb: true needs Weights & Biases: pip install 'grokbench[wandb]' "
                    f"(or pip install wandb) ({e})"
                ) from None
            name = Cell(**self.config["cell"]).run_id  # <dataset>/<model>/<training>/seed<k>
            self.run = wandb.init(
                dir=str(self.out_dir), project="grokbench", name=name, id=re.sub(r"[^\w.-]", "-", name),
                config=hparams(self.config), mode=os.environ.get("WANDB_MODE", "offline"), resume="allow",
                reinit="create_new",  # a pack's members: one W&B run each, open side by side
                settings=wandb.Settings(silent=True, x_disable_stats=True),
            )  # fmt: skip
            self.seen = len(rows)
        new, self.seen = rows[self.seen :], len(rows)
        by_step: dict[int, dict[str, float]] = {}
        for r in new:
            by_step.setdefault(int(r["step"]), {}).update(
                {f"accuracy/{r['split']}": r["accuracy"], f"loss/{r['split']}": r["loss"]}
            )
        for s, values in sorted(by_step.items()):
            self.run.log(values, step=s)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Loggers:
    """The run's optional metric loggers, as its training options ask: TensorBoard (`tensorboard`), W&B
    offline (`wandb`); none by default."""

    def __init__(self, out_dir: str | Path, config: dict[str, Any], tensorboard: bool, wandb: bool):
        self.items = [TensorBoard(out_dir, config)] if tensorboard else []
        self.items += [WandB(out_dir, config)] if wandb else []

    def on_metrics(self, step: int, rows: list[dict]) -> None:
        for logger in self.items:
            logger.on_metrics(step, rows)

    def close(self) -> None:
        for logger in self.items:
            logger.close()


def tensorboard_writer(out_dir: Path, step: int):
    """A SummaryWriter into the run folder, purging earlier events at and after `step` (0: a fresh start
    hides every event of an earlier attempt)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "training.tensorboard: true needs TensorBoard: pip install 'grokbench[tensorboard]' "
            f"(or pip install tensorboard) ({e})"
        ) from None
    return SummaryWriter(log_dir=str(out_dir), purge_step=step)


def hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config as flat TensorBoard hparams: `model.*`, `training.*` (dotted), `seed`, `cell.*`;
    lists and None as text (hparams take numbers, text and booleans)."""
    out: dict[str, Any] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, bool | int | float | str):
            out[prefix] = value
        else:
            out[prefix] = json.dumps(value, default=str)

    put("", config)
    return out


def write_hparams(writer, values: dict[str, Any]) -> None:
    """The hparams plugin's summaries in the writer's own run (torch's `add_hparams` would write them to
    a new subfolder), so the hparams table links each run's config to its scalars."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = {"accuracy/test_inferred_ood": 0.0, "accuracy/test_inferred_id": 0.0}  # columns shown
    for summary in hparams_summaries(values, metrics):
        writer.file_writer.add_summary(summary)
