"""Resumable training: periodic atomic checkpoints and save-and-exit on SIGTERM / SIGUSR1.

A checkpoint holds everything the rest of a run depends on: model, optimizer and scheduler states, the
batch sampler's generator, torch's RNG states, the metrics so far and the training time spent. Resuming
from it continues the exact computation, so a run interrupted any number of times ends with the metrics
of an uninterrupted one (on the same device and software; `elapsed` is wall time and differs).

The checkpoint carries a fingerprint of what the run is (model, training settings, seed, data hash): a
checkpoint of another configuration is ignored, never resumed from. It is not a Snakemake output, so an
interrupted job leaves no file that Snakemake takes as complete; it is deleted when the run finishes.

Cluster schedulers send SIGTERM (or a configurable signal, e.g. `--signal=B:USR1@120` in SLURM) before
a time limit or preemption: the trainer then saves at the end of the current step and exits with
status `EXIT_INTERRUPTED`, so the job can be requeued or rerun and will resume.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_path

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: "try again" — the run saved its state and can be resumed
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Interrupted(Exception):
    """Raised after the state was saved because a stop signal arrived."""


class Checkpointer:
    def __init__(self, path: str | Path, fingerprint: str, every: int = 0, minutes: float = 0.0):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every = every  # steps between periodic checkpoints (0: not by steps)
        self.seconds = 60.0 * minutes  # wall time between periodic checkpoints (0: not by time)
        self.last_save = time.monotonic()
        self.stop_requested = False
        self._previous: dict[int, Any] = {}

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

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, **state}, tmp)
        self.last_save = time.monotonic()

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
