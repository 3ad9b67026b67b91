"""Resumable training: periodic atomic checkpoints and save-and-exit on SIGTERM / SIGUSR1.

A checkpoint holds everything the rest of a run depends on: model, optimizer and scheduler states, the
batch sampler's generator, torch's RNG states, the metrics so far and the training time spent. Resuming
from it continues the exact computation, so a run interrupted any number of times ends with the metrics
of an uninterrupted one (on the same device and software; `elapsed` is wall time and differs).

The checkpoint carries a fingerprint of what the run is (model, training settings, seed, data hash): a
checkpoint of another configuration is ignored, never resumed from. It is not a Snakemake output, so an
interrupted job leaves no file that Snakemake takes as complete; it is deleted when the run finishes.

Cluster schedulers send SIGTERM (or a configurable signal, e.g. `--signal=TERM@120` in SLURM) before
a time limit or preemption: the trainer then saves at the end of the current step and exits with
status `EXIT_INTERRUPTED`, so the job can be requeued or rerun and will resume.

Segments: each start of the training process on a run is a segment. The state carries the records of the
earlier segments (`Segment.record`: start and finish times, wall seconds, the steps done when it began and
ended, how it ended, host and SLURM job), so the finished run's run.json lists them all and its wall time is
their sum: the whole cost of the run, not only of its last process. A process killed outright (SIGKILL, a
hard time limit, a crash) is recorded as of its last checkpoint (`ended: "killed"`): its time after that
checkpoint, and a process killed before its first checkpoint, leave no record.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import provenance
from ..io import atomic_path

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: "try again" — the run saved its state and can be resumed
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Interrupted(Exception):
    """Raised after the state was saved because a stop signal arrived."""


# How a segment ended (`Segment.record`'s "ended").
COMPLETED = "completed"  # the run finished in it
DIVERGED = "diverged"  # the run stopped in it at a non-finite training loss (its outputs are written)
STOPPED = "stopped"  # a stop signal arrived: the state was saved at end_step and the process exited
KILLED = "killed"  # the process ended without saving after its checkpoint at end_step (SIGKILL, crash)


@dataclass
class Segment:
    """This process's part of a run: when it started (wall clock and `time.perf_counter`) and the number
    of steps done when it began (`start_step`, 0 or the resumed state's step)."""

    started: str = field(default_factory=provenance.now)
    clock: float = field(default_factory=time.perf_counter)
    start_step: int = 0

    def record(self, end_step: int, ended: str) -> dict[str, Any]:
        """The segment as run.json lists it: it trained the steps start_step+1 .. end_step (the metrics'
        step numbering: step k is the state after k optimizer steps)."""
        return {
            "started": self.started,
            "finished": provenance.now(),
            "wall_seconds": round(time.perf_counter() - self.clock, 3),
            "start_step": self.start_step,
            "end_step": end_step,
            "ended": ended,
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }


class Checkpointer:
    def __init__(
        self,
        path: str | Path,
        fingerprint: str,
        every: int = 0,
        minutes: float = 0.0,
        segment: Segment | None = None,
    ):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every = every  # steps between periodic checkpoints (0: not by steps)
        self.seconds = 60.0 * minutes  # wall time between periodic checkpoints (0: not by time)
        self.last_save = time.monotonic()
        self.stop_requested = False
        self._previous: dict[int, Any] = {}
        self.segment = segment or Segment()  # this process
        self.earlier: list[dict[str, Any]] = []  # the records of the earlier segments, from the state

    # --- signals ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def request_stop(signum, frame):
            self.stop_requested = True

        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, request_stop)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    # --- state ---------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Save now? On a stop signal, every `every` steps, or after `minutes` of wall time. When a
        state is saved does not change the results: resuming from any step continues exactly."""
        by_steps = self.every > 0 and step > 0 and step % self.every == 0
        by_time = self.seconds > 0 and time.monotonic() - self.last_save >= self.seconds
        return self.stop_requested or by_steps or by_time

    def save(self, state: dict[str, Any]) -> bool:
        """Save `state` (which has the `step` it was taken at) with the records of all segments so far,
        this one's as of now. True: a stop signal had arrived, so the process is to stop now (this record
        says "stopped"). A signal that arrives during the save is acted on at the next one."""
        stopping = self.stop_requested
        ended = STOPPED if stopping else KILLED  # KILLED: unless a later save replaces it
        segments = [*self.earlier, self.segment.record(state["step"], ended)]
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, **state, "segments": segments}, tmp)
        self.last_save = time.monotonic()
        return stopping

    def segments(self, end_step: int, ended: str) -> list[dict[str, Any]]:
        """Every segment's record, this one ending now at `end_step` (COMPLETED or DIVERGED)."""
        return [*self.earlier, self.segment.record(end_step, ended)]

    def load(self) -> dict[str, Any] | None:
        """The saved state if there is one for this run's fingerprint, else None."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a checkpoint that cannot be read is not resumed from
            print(f"ignoring unreadable checkpoint {self.path}: {e}", file=sys.stderr)
            return None
        if state.get("fingerprint") != self.fingerprint:
            print(f"ignoring checkpoint {self.path} of another configuration", file=sys.stderr)
            return None
        self.earlier = list(state.get("segments", []))
        self.segment.start_step = state["step"]
        print(
            f"resuming from {self.path} at step {state['step']} (segment {len(self.earlier) + 1})",
            file=sys.stderr,
        )
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
