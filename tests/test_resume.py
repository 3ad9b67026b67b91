"""Resumable training: a run killed (SIGKILL) or stopped (SIGTERM) at random points and rerun ends with
exactly the metrics of an uninterrupted run, and a killed run leaves no output that looks complete; its
run.json lists every process that trained it (segments) and counts their time."""

from __future__ import annotations

import json
import os
import random
import shutil
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
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "grokbench"


@pytest.fixture(scope="module", autouse=True)
def frozen_sources(tmp_path_factory):
    """The training processes import a copy of the package taken now, so that an edit of the sources while
    the tests run does not change the code between an interrupted process and its resumption (a state
    carries a fingerprint of the training code; one of other code is not resumed from)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(PACKAGE, src / "grokbench", ignore=shutil.ignore_patterns("__pycache__"))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), *([before] if before else [])])
    yield
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


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


def interrupt(data: Path, out: Path, sig: signal.Signals, rng: random.Random) -> tuple[int, float]:
    """Start the run, let it pass a checkpoint and a random extra delay, send `sig`; its exit status and
    how long the process lived (seconds)."""
    before = saved_at(out)
    started = time.perf_counter()
    proc = subprocess.Popen(command(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_checkpoint(proc, out, before)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, time.perf_counter() - started


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
    lifetimes = []  # of the interrupted processes
    finished = False
    for _ in range(2):  # interrupted twice, at different points
        status, lifetime = interrupt(tiny_dataset_path, tmp_path, sig, rng)
        if status == 0:  # finished before the signal arrived: nothing to resume
            finished = True
            break
        expected = -signal.SIGKILL if sig == signal.SIGKILL else EXIT_INTERRUPTED
        assert status == expected
        assert (tmp_path / "resume.pt").exists()
        assert not [name for name in OUTPUTS if (tmp_path / name).exists()], "no complete-looking output"
        lifetimes.append(lifetime)
    if not finished:
        subprocess.run(command(tiny_dataset_path, tmp_path), check=True, capture_output=True, timeout=300)
    pd.testing.assert_frame_equal(metrics(tmp_path), reference, check_exact=True)
    assert not (tmp_path / "resume.pt").exists()
    check_segments(json.loads((tmp_path / "run.json").read_text()), sig, lifetimes)


def check_segments(info: dict, sig: signal.Signals, lifetimes: list[float]) -> None:
    """run.json lists each process that trained the run, in order, and wall_seconds is their sum."""
    segments = info["segments"]
    assert info["n_segments"] == len(segments) == len(lifetimes) + 1
    assert info["status"] == "completed" and segments[-1]["ended"] == "completed"
    # stopped by a signal: saved and exited; killed: recorded as of its last checkpoint
    assert [s["ended"] for s in segments[:-1]] == ["killed" if sig == signal.SIGKILL else "stopped"] * len(
        lifetimes
    )
    assert segments[0]["start_step"] == 0 and segments[-1]["end_step"] == TRAINING["steps"]
    for before, after in zip(segments, segments[1:]):
        assert after["start_step"] == before["end_step"] > before["start_step"]  # resumed where it saved
        assert before["started"] <= before["finished"] <= after["started"]
    for segment, lifetime in zip(segments, lifetimes):
        assert 0 < segment["wall_seconds"] <= lifetime  # counted within the process's life
    assert info["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in segments), abs=1e-6)
    assert info["wall_seconds"] > segments[-1]["wall_seconds"]  # more than the last process's time
    assert info["started"] == segments[0]["started"]


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
