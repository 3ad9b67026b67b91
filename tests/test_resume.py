"""Resumable training: a run killed (SIGKILL) or stopped (SIGTERM) at random points and rerun ends with
exactly the metrics of an uninterrupted run, and a killed run leaves no output that looks complete."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from grokbench.train.resume import EXIT_INTERRUPTED

from .conftest import TINY_MODEL, TINY_TRAINING

TRAINING = {**TINY_TRAINING, "steps": 600, "eval": {**TINY_TRAINING["eval"], "every": 50}}
OUTPUTS = ("metrics.parquet", "model.pt", "run.json")


def command(data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "grokbench", "train", "--data", str(data), "--out-dir", str(out),
        "--model", json.dumps(TINY_MODEL), "--training", json.dumps(TRAINING), "--seed", "0",
        "--threads", "1", "--checkpoint-every", "20", "--no-progress",
    ]  # fmt: skip


def saved_at(out: Path) -> int:
    path = out / "resume.pt"
    return path.stat().st_mtime_ns if path.exists() else 0


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, after: int, timeout: float = 60) -> None:
    """Wait until this process has written a checkpoint (one newer than `after`)."""
    deadline = time.monotonic() + timeout
    while saved_at(out) <= after:
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.02)


def interrupt(data: Path, out: Path, sig: signal.Signals, rng: random.Random) -> int:
    """Start the run, let it pass a checkpoint and a random extra delay, send `sig`; its exit status."""
    before = saved_at(out)
    proc = subprocess.Popen(command(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_checkpoint(proc, out, before)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return proc.returncode


def metrics(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "metrics.parquet")[["step", "split", "loss", "accuracy"]]


@pytest.fixture(scope="module")
def reference(tiny_dataset_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(command(tiny_dataset_path, out), check=True, capture_output=True, timeout=300)
    assert not (out / "resume.pt").exists(), "the checkpoint is removed once the run is complete"
    return metrics(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_interrupted_runs_resume_to_identical_metrics(tiny_dataset_path, tmp_path, reference, sig):
    rng = random.Random(sig.value)
    for _ in range(2):  # interrupted twice, at different points
        status = interrupt(tiny_dataset_path, tmp_path, sig, rng)
        if status == 0:  # finished before the signal arrived: nothing to resume
            break
        expected = -signal.SIGKILL if sig == signal.SIGKILL else EXIT_INTERRUPTED
        assert status == expected
        assert (tmp_path / "resume.pt").exists()
        assert not [name for name in OUTPUTS if (tmp_path / name).exists()], "no complete-looking output"
    subprocess.run(command(tiny_dataset_path, tmp_path), check=True, capture_output=True, timeout=300)
    pd.testing.assert_frame_equal(metrics(tmp_path), reference, check_exact=True)
    assert not (tmp_path / "resume.pt").exists()


def test_checkpoint_of_another_configuration_is_ignored(tiny_dataset_path, tmp_path, reference):
    proc = subprocess.Popen(
        command(tiny_dataset_path, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_checkpoint(proc, tmp_path, 0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    other = command(tiny_dataset_path, tmp_path)
    other[other.index("--seed") + 1] = "1"
    done = subprocess.run(other, check=True, capture_output=True, text=True, timeout=300)
    assert "ignoring checkpoint" in done.stderr
    assert not metrics(tmp_path).equals(reference)
