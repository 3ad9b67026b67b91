"""Watching a study while it trains: the live progress file of a run (train/live.py) through a crash, a
stop signal and two resumptions, `grokbench status` on it (grokbench/status.py), and TensorBoard events."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pandas as pd
import pytest

from grokbench import cli, status, study
from grokbench.report.analysis import AnalysisConfig, analyze_run
from grokbench.train import run as run_module
from grokbench.train.live import PROGRESS, Progress, read_progress, tensorboard_writer
from grokbench.train.resume import Interrupted

from .conftest import TINY_MODEL, TINY_TRAINING

# evaluations at 0, 10, 20, 40; resumable states saved every 10 steps
TRAINING = {**TINY_TRAINING, "steps": 40}
CHECKPOINT_EVERY = 10
CELL = {"dataset": "a", "model": "gpt", "training": "default", "seed": 0}
RUN_ID = "a/gpt/default/seed0"
ROWS = ["step", "split", "loss", "accuracy", "elapsed"]


class Crash(Exception):
    pass


@pytest.fixture
def study_config(tiny_config, tmp_path):
    """The tiny study with two seeds, its results in tmp_path."""
    tiny_config["training"]["default"] = TRAINING
    tiny_config["grid"][0]["seeds"] = [0, 1]
    tiny_config["results"] = str(tmp_path)
    return study.validate(tiny_config)


def train_run(data, out_dir, monkeypatch, training=TRAINING, on_step=None, on_metrics=None):
    """run() of the tiny cell, with extra hooks into its train() (called after run's own)."""
    real = run_module.train

    def train(*args, **kwargs):
        own_step, own_metrics = kwargs["on_step"], kwargs["on_metrics"]

        def step_hook(step):
            own_step(step)
            if on_step:
                on_step(step)

        def metrics_hook(step, rows):
            own_metrics(step, rows)
            if on_metrics:
                on_metrics(step, rows)

        return real(*args, **{**kwargs, "on_step": step_hook, "on_metrics": metrics_hook})

    with monkeypatch.context() as m:
        m.setattr(run_module, "train", train)
        return run_module.run(data, TINY_MODEL, training, 0, out_dir, cell=CELL, progress=False,
                              checkpoint_every=CHECKPOINT_EVERY)  # fmt: skip


def live_rows(path) -> pd.DataFrame:
    return pd.DataFrame(read_progress(path)["metrics"], columns=ROWS)


def one(statuses, run_id=RUN_ID) -> status.RunStatus:
    (s,) = [s for s in statuses if s.run_id == run_id]
    return s


def test_live_progress_through_crash_stop_and_resume(tiny_dataset_path, tmp_path, study_config, monkeypatch):
    out = tmp_path / "runs" / RUN_ID
    live = out / PROGRESS
    seen = {}

    # 1. training: at 15 steps the file holds the evaluations so far; then the process crashes
    def crash_at_15(step):
        if step + 1 == 15:
            seen["rows"] = live_rows(live)
            seen["status"] = one(status.collect(tmp_path, study_config))
            raise Crash("simulated crash at step 15")

    with pytest.raises(Crash):
        train_run(tiny_dataset_path, out, monkeypatch, on_step=crash_at_15)
    assert sorted(seen["rows"]["step"].unique()) == [0, 10]
    s = seen["status"]
    assert s.state == "training" and s.step == 10 and s.total_steps == 40
    pd.testing.assert_frame_equal(s.metrics, seen["rows"])
    assert s.steps_per_second is not None and s.steps_per_second > 0 and s.seconds_left > 0
    assert one(status.collect(tmp_path, study_config), "a/gpt/default/seed1").state == "pending"
    crashed = one(status.collect(tmp_path, study_config))
    assert crashed.state == "failed" and "simulated crash" in crashed.note
    assert not (out / "run.json").exists() and (out / "resume.pt").exists()

    # 2. resumed from the state saved at step 10 (before its evaluation): the file holds exactly the
    # restored rows, then the new ones; a stop signal at 25 steps saves the state and exits
    def at_start(step, rows):
        if "resumed" not in seen:
            seen["resumed"] = (step, live_rows(live), [r["step"] for r in rows])

    def stop_at_25(step):
        if step + 1 == 25:
            os.kill(os.getpid(), signal.SIGUSR1)  # the checkpointer's handler: save and stop

    with pytest.raises(Interrupted):
        train_run(tiny_dataset_path, out, monkeypatch, on_step=stop_at_25, on_metrics=at_start)
    step, rows, restored = seen["resumed"]
    assert step == 10 and sorted(set(restored)) == [0]
    assert rows["step"].tolist() == restored  # the evaluation at 10 of the crashed process is gone
    stopped = one(status.collect(tmp_path, study_config))
    assert stopped.state == "stopped" and stopped.step == 25
    steps = stopped.metrics["step"].tolist()
    assert sorted(set(steps)) == [0, 10, 20]
    assert len(steps) == len(set(zip(steps, stopped.metrics["split"])))  # each (step, split) once

    # 3. resumed again to the end: status is read from the outputs, progress.json is gone
    info = train_run(tiny_dataset_path, out, monkeypatch)
    assert info["status"] == "completed" and info["n_segments"] == 3
    assert not live.exists()
    final = pd.read_parquet(out / "metrics.parquet")
    # every row the live file showed on the way is the final table's row (no duplicate, no gap)
    for partial in (seen["rows"], stopped.metrics):
        merged = partial.merge(final, on=["step", "split"], suffixes=("", "_final"), validate="1:1")
        assert len(merged) == len(partial)
        assert (merged["loss"] == merged["loss_final"]).all()
        assert (merged["accuracy"] == merged["accuracy_final"]).all()
    statuses = status.collect(tmp_path, study_config)
    done = one(statuses)
    assert done.state == "done" and done.step == done.total_steps == 40 and done.seconds_left == 0
    analysis = AnalysisConfig.from_dict(study_config["analysis"])
    last = final[final["step"] == final["step"].max()].set_index("split")["accuracy"]
    assert done.train == last[analysis.memorization_split]
    assert done.id == last[analysis.id_split]
    assert done.ood == last[analysis.ood_split]
    expected = analyze_run(final, analysis)
    assert done.memorized == expected["memorization_step"]
    assert done.generalized_id == expected["id_generalization_step"]
    assert done.generalized_ood == expected["ood_generalization_step"]
    line = status.summary("study", statuses)
    assert line == "study: 2 runs: 1 done, 0 training, 1 pending, 0 failed"
    text = status.table(statuses)
    assert RUN_ID in text and "done" in text and f"{done.ood:.3f}" in text


def write_live(out, total=100, step=20, rows=None) -> dict:
    """A progress.json as a training process writes it, with `rows`."""
    p = Progress(out / PROGRESS, RUN_ID, total)
    p.on_metrics(step, rows or [])
    return read_progress(out / PROGRESS)


def test_stale_progress_or_an_error_in_the_log_is_failed(tmp_path):
    out = tmp_path / "runs" / RUN_ID
    rows = [dict(step=0, split="test_inferred_ood", loss=2.0, accuracy=0.25, elapsed=0.1)]
    live = write_live(out, rows=rows)
    now = live["updated_unix"]
    fresh = one(status.collect(tmp_path, stale=60, now=now + 30))
    assert fresh.state == "training" and fresh.ood == 0.25 and fresh.step == 20 and fresh.in_config
    gone = one(status.collect(tmp_path, stale=60, now=now + 61))
    assert gone.state == "failed" and "no update for 1m01s" in gone.note
    # the Snakemake log of the run ends with a traceback written after the last update
    log = tmp_path / "logs" / "train" / f"{RUN_ID}.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 20\nTraceback (most recent call last):\n  File ...\ntorch.OutOfMemoryError: CUDA\n")
    os.utime(log, (now + 5, now + 5))
    failed = one(status.collect(tmp_path, stale=60, now=now + 10))
    assert failed.state == "failed" and failed.note == "torch.OutOfMemoryError: CUDA"
    # ... but one from before the last update (an earlier attempt's) does not count
    os.utime(log, (now - 5, now - 5))
    assert one(status.collect(tmp_path, stale=60, now=now + 10)).state == "training"
    # without progress.json (a state saved, the process gone) a log error is a failure all the same
    (out / PROGRESS).unlink()
    (out / "resume.pt").touch()
    assert one(status.collect(tmp_path, now=now)).state == "failed"
    # a stop signal's message is no error: the run waits for its rerun
    log.write_text("grokbench train: stopped at step 20 by a signal; rerun the same command to resume\n")
    pending = one(status.collect(tmp_path, now=now))
    assert pending.state == "pending" and pending.note == "a resumable state is saved"


def test_a_pack_members_error_is_read_from_the_pack_log(tmp_path):
    """A run trained in a pack (rule train_pack) has no log of its own: its pack's log is read."""
    live = write_live(tmp_path / "runs" / "a/gpt/default/seed3", rows=[])
    now = live["updated_unix"]
    logs = tmp_path / "logs" / "train" / "a" / "gpt" / "default"
    logs.mkdir(parents=True)
    for name, text in (
        ("pack0-1", "ok\n"),
        ("pack2-3", "Traceback (most recent call last):\nValueError: x\n"),
    ):
        (logs / f"{name}.log").write_text(text)
        os.utime(logs / f"{name}.log", (now + 5, now + 5))
    assert status.train_log(tmp_path, "a/gpt/default/seed3") == logs / "pack2-3.log"
    assert status.train_log(tmp_path, "a/gpt/default/seed9") == logs / "seed9.log"  # none holds seed 9
    failed = one(status.collect(tmp_path, stale=60, now=now + 10), "a/gpt/default/seed3")
    assert (
        failed.run_id == "a/gpt/default/seed3" and failed.state == "failed" and failed.note == "ValueError: x"
    )


def test_cli_status_once_and_watch(tmp_path, study_config, monkeypatch, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(study_config))  # JSON is YAML
    write_live(tmp_path / "runs" / "a" / "gpt" / "default" / "seed1", total=40, step=10)
    write_live(tmp_path / "runs" / "b" / "gpt" / "default" / "seed0", total=40, step=10)  # not in the study
    assert cli.main(["status", str(tmp_path), "--configfile", str(config)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:4]}
    assert lines["a/gpt/default/seed0"][1:3] == ["pending", "-/40"]
    assert lines["a/gpt/default/seed1"][1:3] == ["training", "10/40"]
    assert lines["b/gpt/default/seed0"][1:3] == ["training", "10/40"]
    assert lines["b/gpt/default/seed0"][-4:] == ["not", "in", "the", "study"]
    assert out.rstrip().endswith(
        f"{config}: 2 runs: 0 done, 1 training, 1 pending, 0 failed (+1 found on disk, not in the study)"
    )
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    assert cli.main(["status", str(tmp_path), "--configfile", str(config), "--watch", "2"]) == 0
    out = capsys.readouterr().out
    assert naps == [2.0, 2.0] and out.count("1 training, 1 pending") == 2 and "Ctrl-C to stop" in out
    naps.clear()
    cli.main(["status", str(tmp_path), "--configfile", str(config), "--watch"])
    assert naps == [10.0, 10.0]


def test_tensorboard_events_match_the_metrics(tiny_dataset_path, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    training = {**TRAINING, "tensorboard": True}

    def crash_at_15(step):  # after the evaluation at 10, which the resumed process evaluates again
        if step + 1 == 15:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        train_run(tiny_dataset_path, out, monkeypatch, training, on_step=crash_at_15)
    train_run(tiny_dataset_path, out, monkeypatch, training)
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # one file per process
    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    final = pd.read_parquet(out / "metrics.parquet")
    tags = set(events.Tags()["scalars"])
    assert tags == {f"{kind}/{split}" for kind in ("accuracy", "loss") for split in final["split"].unique()}
    for split, m in final.groupby("split"):
        for kind in ("accuracy", "loss"):
            scalars = events.Scalars(f"{kind}/{split}")
            assert [e.step for e in scalars] == m["step"].tolist()  # each step once, in order
            assert [e.value for e in scalars] == pytest.approx(m[kind].tolist(), rel=1e-6)
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["training.lr"].number_value == pytest.approx(TRAINING["lr"])
    assert hparams["model.family"].string_value == TINY_MODEL["family"]
    assert hparams["cell.dataset"].string_value == CELL["dataset"]


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if TensorBoard were not installed
    with pytest.raises(ImportError, match=r"pip install 'grokbench\[tensorboard\]'"):
        tensorboard_writer(tmp_path, 0)


@pytest.mark.parametrize(
    "info, state, step, note",
    [
        (
            {"status": "diverged", "diverged_step": 10, "diverged_loss": "nan"},
            "diverged",
            10,
            "nan at step 10",
        ),
        ({"status": "completed", "stopped_early": True, "stopped_step": 20}, "done", 20, "stopped early at"),
        ({"status": "completed"}, "done", 40, ""),
    ],
)
def test_finished_runs_read_their_outputs(tmp_path, info, state, step, note):
    out = tmp_path / "runs" / RUN_ID
    out.mkdir(parents=True)
    splits = ("train_inferred_id", "test_inferred_ood")
    rows = [dict(step=s, split=split, loss=1.0, accuracy=a, elapsed=0.0)
            for s, a in ((0, 0.1), (10, 0.995), (20, 1.0)) for split in splits]  # fmt: skip
    pd.DataFrame(rows, columns=ROWS).to_parquet(out / "metrics.parquet")
    segments = [{"start_step": 0, "end_step": step}]
    record = {**info, "config": {"training": {"steps": 40}}, "wall_seconds": 2.0, "segments": segments}
    (out / "run.json").write_text(json.dumps(record))
    s = one(status.collect(tmp_path))
    assert (s.state, s.step, s.total_steps) == (state, step, 40) and note in s.note
    assert s.train == s.ood == 1.0 and s.memorized == 10 and s.generalized_ood == 10 and s.id is None
    assert s.steps_per_second == step / 2.0


def test_progress_heartbeat_between_evaluations(tmp_path):
    clock = [100.0]
    p = Progress(tmp_path / PROGRESS, RUN_ID, total_steps=1000, heartbeat=30, clock=lambda: clock[0])
    p.on_metrics(0, [])
    for step in range(400):  # 10 steps per second
        clock[0] += 0.1
        p.on_step(step)
        live = read_progress(tmp_path / PROGRESS)
        if clock[0] - 100.0 < 29.9:
            assert live["step"] == 0  # no rewrite before the heartbeat is due
    assert live["step"] > 0 and live["steps_per_second"] == pytest.approx(10.0)
    assert live["seconds_left"] == pytest.approx((1000 - live["step"]) / 10.0)
    assert live["state"] == "training" and live["pid"] == os.getpid() and live["total_steps"] == 1000
