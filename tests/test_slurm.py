"""`snakemake --profile slurm` on a real single-node SLURM cluster (scripts/slurm-cluster.sh).

The cluster is real: munged, slurmctld and slurmd on this machine, jobs submitted with sbatch by
snakemake-executor-plugin-slurm and run by slurmd; nothing is mocked. The module starts it (root
needed; the script installs the Debian packages when missing) and stops what it started.

Four snakemake runs share the cluster at once (each spends most of its time waiting for status checks;
the node's 2 CPUs queue their jobs), each with the repository's `slurm/` profile:
- the tiny study (one dataset, one seed) with the workflow profile `profiles/default/`: it completes,
  and SLURM's own records show every stage as a job of its own that completed;
- the GPU request path: the node declares two fake GPUs (type `fake`, gres.conf with placeholder
  devices), so the training job's request is neither skipped nor zeroed on this GPU-less machine but
  scheduled for real: SLURM holds the job with `gpu:fake:1` requested, and its log shows one of the two
  GPU indices allocated to it, in the partition asked for, while the CPU stages got no GPU. (sbatch
  refuses a request the node cannot meet, e.g. more GPUs than it has, so this is no formality.) The
  model and the partition come from the documented overrides, GROKBENCH_GPU_MODEL and
  GROKBENCH_GPU_PARTITION;
- packing (GROKBENCH_RUNS_PER_JOB=2): two training runs go to SLURM as one job asking for one run's GPU
  and twice its wall time; they are two settings of a learning-rate grid, so a `+` in the training name
  (`default+lr0.01`) also goes through sbatch, job comments and log paths;
- a rule that fails inside its SLURM job: snakemake exits 1 (reported, not hung), SLURM has it FAILED;
- time limits: a training run longer than its job's time limit (GROKBENCH_TRAIN_RUNTIME=1, SLURM's
  minimum: one minute) gets SIGTERM from SLURM shortly before it (`--signal`, from the workflow profile),
  saves its state and fails the job; snakemake resubmits it (the train rule's `retries`) and the next job
  resumes, with nobody doing anything, until the run is complete: SLURM has several jobs for it, all
  FAILED but the last, run.json one segment per job that trained, and the metrics are bit for bit those
  of the same run trained in one go outside SLURM.

Every snakemake call runs under `timeout -s KILL`: a status check that hangs must fail the test, not
the CI run. Skipped only where the cluster cannot be started (e.g. not root) and CI is not set; with
CI set, a cluster that does not start fails the test.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from grokbench.models import build_model
from grokbench.tasks.base import read_dataset
from grokbench.train.config import TrainConfig
from grokbench.train.data import build_tensors
from grokbench.train.trainer import train

from .conftest import TINY_CONFIG, TINY_DATA, TINY_MODEL

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
STATE = Path(os.environ.get("GROKBENCH_SLURM_DIR", "/tmp/grokbench-slurm"))
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Test-only options. The plugin checks job status S s after a submission, then backs off by 10 s while
# nothing finishes: checks at S, 2S+10, 3S+30 s. Each job here takes 10-25 s (two Snakemake start-ups
# inside the job), so S=8 (checks at 8 and 26 s) notices most of them at the second check, where the
# profile's 10 (10, 30 s) or 1 (1, 12, 33 s) wait longer: about 120 s for the three runs instead of 145.
# And the plugin's logs of successful jobs are kept for the checks below.
FAST = ["--slurm-init-seconds-before-status-checks", "8", "--slurm-keep-successful-logs"]
TIMEOUT = 400  # seconds, per snakemake run (SIGKILL)
# The time-limit run. A job of one minute (GROKBENCH_TRAIN_RUNTIME=1, SLURM's minimum) gets SIGTERM 29-59 s
# after it starts (GROKBENCH_TRAIN_SIGNAL_SECONDS=1: slurmctld checks time limits every 30 s and sends the
# signal at the first check within 1 + 30 s of the end; the kill at the limit comes a check later), and
# its start-up (two Snakemake start-ups, torch) takes 12-20 s: it trains for 10-45 s. The run trains for
# LONG_SECONDS at the speed measured here just before: more than any one job can train (at most ~45 s),
# so it takes at least 2 jobs even on an idle machine (in the jobs, beside the other runs' jobs, it runs
# 1.5-2.5 times slower: then 3-5 jobs). Each failed job is noticed at the plugin's next status check (they
# back off by 10 s while no job completes): 1-1.5 min from one job to the next.
LONG_SECONDS = 75
LONG_TIMEOUT = 900
FAILING_SNAKEFILE = """\
rule fail:
    output:
        "never.txt",
    shell:
        "echo failing on purpose; exit 1"
"""


def cluster_cmd(action: str, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, GROKBENCH_SLURM_DIR=str(STATE))
    return subprocess.run(
        ["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster():
    """The path of a running cluster's slurm.conf; the cluster is stopped afterwards if this started it."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if os.geteuid() != 0 and not in_ci:
        pytest.skip("starting a SLURM cluster needs root")
    already_up = (STATE / "etc" / "slurm.conf").exists() and cluster_cmd("status", 30).returncode == 0
    if not already_up:
        try:
            out = cluster_cmd("start", 600)
            failure = None if out.returncode == 0 else out.stdout + out.stderr
        except subprocess.TimeoutExpired as e:
            failure = f"start timed out: {e}"
        if failure is not None:
            cluster_cmd("stop", 120)
            if in_ci:
                pytest.fail(f"the SLURM cluster did not start:\n{failure[-3000:]}")
            pytest.skip(f"the SLURM cluster did not start:\n{failure[-1000:]}")
    try:
        yield STATE / "etc" / "slurm.conf"
    finally:
        if not already_up:
            out = cluster_cmd("stop", 120)
            assert out.returncode == 0, out.stdout + out.stderr


def run_env(conf: Path, **overrides: str) -> dict[str, str]:
    """This environment without GROKBENCH_* settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROKBENCH_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", SLURM_CONF=str(conf))
    env.update(overrides)
    return env


def copy_workflow(workdir: Path, cfg: dict) -> None:
    """The workflow as a user runs it: Snakefile, rules, sources and the workflow profile."""
    shutil.copy(REPO / "Snakefile", workdir)
    for folder in ("workflow", "profiles"):
        shutil.copytree(REPO / folder, workdir / folder)
    shutil.copytree(REPO / "src" / "grokbench", workdir / "src" / "grokbench",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (workdir / "study.yaml").write_text(yaml.safe_dump(cfg))


class Run:
    """One `snakemake --profile <repo>/slurm` in `workdir`, started in the background."""

    def __init__(self, workdir: Path, env: dict[str, str], *args: str, timeout: int = TIMEOUT):
        self.workdir = workdir
        self.log_path = workdir / "snakemake.out"
        cmd = ["timeout", "-s", "KILL", str(timeout), "snakemake", "--profile", str(REPO / "slurm"), *args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> Run:
        self.returncode = self.proc.wait()
        self.log = self.log_path.read_text()
        return self

    def tail(self) -> str:
        return f"exit {self.returncode} (137: killed by the timeout)\n{self.log[-4000:]}"


PACKED = ("default", "default+lr0.01")  # the two settings of the packed run's learning-rate grid
LONG_RUN = "results/runs/a/gpt/default/seed0"


def long_config(steps: int) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    training = cfg["training"]["default"]
    training.update(steps=steps, eval={**training["eval"], "every": 1000})
    return cfg


def long_steps(data: Path, seconds: float) -> int:
    """Steps of the time-limit run's training that take about `seconds` on one thread here now (a multiple
    of 1000, at least 15,000: 22 s at the best speed seen on the 2-core VM, 1.5 ms a step, in case the
    machine is busy now and idle later)."""
    steps = 3000
    ds = read_dataset(data)
    cfg = TrainConfig.from_dict(long_config(steps)["training"]["default"])
    t = build_tensors(ds, cfg.eval.max_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        train(lambda: build_model(TINY_MODEL, len(ds.vocab), t.block_size), t, cfg, 0, progress=False)
        per_step = (time.perf_counter() - started) / steps
    finally:
        torch.set_num_threads(threads)
    return max(15, round(seconds / per_step / 1000)) * 1000


def train_in_one_go(data: Path, out: Path, steps: int, env: dict[str, str]) -> subprocess.Popen:
    """The time-limit run's cell trained outside SLURM in one process, as the train rule runs it (at a low
    priority: the SLURM jobs are the ones that race the clock)."""
    training = long_config(steps)["training"]["default"]
    cmd = [
        "nice", "-n", "19", sys.executable, "-m", "grokbench", "train", "--data", str(data),
        "--out-dir", str(out), "--model", json.dumps(TINY_MODEL), "--training", json.dumps(training),
        "--seed", "0", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, tiny_dataset_path):
    """The four runs (see the module docstring), started together, finished; and the time-limit run's
    cell trained in one go (`reference`)."""
    study = tmp_path_factory.mktemp("slurm-study")
    copy_workflow(study, copy.deepcopy(TINY_CONFIG))
    packed = tmp_path_factory.mktemp("slurm-packed")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["a"]["val_size"] = 16
    cfg["grid"][0]["hparams"] = {"lr": [cfg["training"]["default"]["lr"], 1e-2]}
    copy_workflow(packed, cfg)
    failing = tmp_path_factory.mktemp("slurm-failing")
    (failing / "Snakefile").write_text(FAILING_SNAKEFILE)
    long = tmp_path_factory.mktemp("slurm-timelimit")
    steps = long_steps(tiny_dataset_path, LONG_SECONDS)
    copy_workflow(long, long_config(steps))
    # Its dataset made beforehand, as its rule would (a job less to wait for: this run is the longest);
    # Snakemake takes it as up to date.
    data = long / "results" / "data"
    subprocess.run([sys.executable, "-m", "grokbench", "data", "--task", "comparison",
                    "--params", json.dumps(TINY_DATA), "--out", str(data / "a.parquet"),
                    "--provenance", str(data / "a.provenance.json")],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    reference = tmp_path_factory.mktemp("slurm-reference")

    # The time-limit run and its reference import the workflow copy's sources: an edit of the repository's
    # while the jobs run (minutes) would change the training code's fingerprint, and a state of other code
    # is not resumed from. No GPU and 1 GB, so that its jobs do not wait for the other runs' (the node has
    # 2 fake GPUs and ~20 GB); SIGTERM 1 s before the minute is up (see LONG_SECONDS; the profile's
    # default, a quarter of the runtime, would be 15 s); up to 10 jobs.
    long_env = run_env(cluster, PYTHONPATH=str(long / "src"), GROKBENCH_TRAIN_RUNTIME="1", GROKBENCH_GPUS="0",
                       GROKBENCH_TRAIN_MEM_MB="1000", GROKBENCH_TRAIN_SIGNAL_SECONDS="1",
                       GROKBENCH_TRAIN_ATTEMPTS="10")  # fmt: skip

    started = time.monotonic()
    pending = {
        "study": Run(study, run_env(cluster, GROKBENCH_GPU_MODEL="fake", GROKBENCH_GPU_PARTITION="gpu"),
                     "--configfile", "study.yaml", *FAST),
        # The training runs only (their outputs as targets): packing is about them.
        "packed": Run(packed, run_env(cluster, GROKBENCH_RUNS_PER_JOB="2", GROKBENCH_TRAIN_RUNTIME="7"),
                      "--configfile", "study.yaml", *FAST,
                      *[f"results/runs/a/gpt/{t}/seed0/run.json" for t in PACKED]),
        "failing": Run(failing, run_env(cluster), *FAST),
        "timelimit": Run(long, long_env, "--configfile", "study.yaml", *FAST, f"{LONG_RUN}/run.json",
                         timeout=LONG_TIMEOUT),
    }  # fmt: skip
    done = {name: pending[name].wait() for name in ("study", "packed", "failing")}
    # The reference once these are done: the CPU it takes is then free (2 cores; the jobs are timed).
    one_go = train_in_one_go(tiny_dataset_path, reference, steps, long_env)
    done["timelimit"] = pending["timelimit"].wait()
    print(f"four snakemake runs through SLURM: {time.monotonic() - started:.0f} s")
    _, err = one_go.communicate(timeout=LONG_TIMEOUT)
    assert one_go.returncode == 0, err
    done["reference"] = reference
    done["long_steps"] = steps
    return done


def slurm_jobs(conf: Path, workdir: Path) -> list[dict[str, str]]:
    """SLURM's record of the jobs run from `workdir` (slurmctld keeps finished jobs MinJobAge=1800 s)."""
    out = subprocess.run(
        ["scontrol", "show", "job"], env=run_env(conf), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    jobs = []
    for block in out.stdout.split("\n\n"):
        fields = dict(re.findall(r"(\S+?)=(\S*)", block))
        if fields.get("WorkDir") == str(workdir.resolve()):
            jobs.append(fields | {"_text": block})
    return jobs


def rule_of(job: dict[str, str]) -> str:
    """The rule the plugin named in the job's comment (`rule_<rule>[_wildcards_...]`; for the
    train rule's group jobs: `rule_train_train`)."""
    return re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", job["Comment"]).group(1)


def gpu_index_allocated(job_id: str) -> bool:
    """slurmctld's log (DebugFlags=Gres) shows a GPU index of the node allocated to the job."""
    lines = (STATE / "log" / "slurmctld.log").read_text().splitlines()
    state = re.compile(rf"gres_job_state gres:gpu\(\d+\) type:fake\(\d+\) job:{job_id} ")
    bound = re.compile(r"gres_bit_alloc\[0\]:[01] of 2$")
    return any(
        state.search(line) and any(bound.search(nxt) for nxt in lines[i + 1 : i + 8])
        for i, line in enumerate(lines)
    )


def test_study_completes_through_slurm(runs, cluster):
    run = runs["study"]
    assert run.returncode == 0, run.tail()
    assert "Using profiles" in run.log and "workflow specific profile profiles/default" in run.log
    results = run.workdir / "results"
    cell = results / "runs" / "a" / "gpt" / "default" / "seed0"
    assert (cell / "metrics.parquet").stat().st_size > 0 and (cell / "run.json").exists()
    assert (results / "summary" / "summary.parquet").exists()
    for fig in ("curves", "grokking"):
        assert (results / "figures" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")

    jobs = slurm_jobs(cluster, run.workdir)
    rules = sorted(rule_of(j) for j in jobs)
    assert {"dataset", "summary", "figure_curves", "figure_grokking"} <= set(rules), rules
    # One run, one job: a group job (the train rule is in group "train") holding that run alone.
    assert len([r for r in rules if r.startswith("train")]) == 1, rules
    for job in jobs:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job["_text"]
        assert job["JobName"].startswith("grokbench_")  # the profile's slurm-jobname-prefix
        assert Path(job["StdOut"]).exists()  # the plugin's log of the job


def test_training_job_gets_a_gpu_cpu_stages_none(runs, cluster):
    run = runs["study"]
    assert run.returncode == 0, run.tail()
    jobs = slurm_jobs(cluster, run.workdir)
    (train,) = [j for j in jobs if rule_of(j).startswith("train")]
    # Requested as --gpus=fake:1 (gpu=1 from the workflow profile, the model from GROKBENCH_GPU_MODEL) ...
    assert train.get("TresPerJob") == "gres:gpu:fake:1", train["_text"]
    # ... and allocated: one of the node's two GPUs was bound to the job.
    assert gpu_index_allocated(train["JobId"]), f"no GPU allocation logged for job {train['JobId']}"
    assert train["Partition"] == "gpu"  # GROKBENCH_GPU_PARTITION
    assert train["TimeLimit"] == "02:00:00"  # runtime=120 (minutes) from the workflow profile
    for job in jobs:
        if job is not train:
            assert "gpu" not in job.get("TresPerJob", ""), job["_text"]
            assert not gpu_index_allocated(job["JobId"]), job["_text"]
            assert job["Partition"] == "debug", job["_text"]  # the cluster's default partition


def test_packing_two_runs_into_one_gpu_job(runs, cluster):
    run = runs["packed"]
    assert run.returncode == 0, run.tail()
    for training in PACKED:
        assert (run.workdir / f"results/runs/a/gpt/{training}/seed0/run.json").exists()
    jobs = slurm_jobs(cluster, run.workdir)
    trains = [j for j in jobs if rule_of(j).startswith("train")]
    assert len(trains) == 1, [j["_text"] for j in jobs]  # both runs in one job
    (job,) = trains
    assert job["JobState"] == "COMPLETED", job["_text"]
    assert job.get("TresPerJob") == "gres:gpu:1", job["_text"]  # one run's GPU, not two
    assert gpu_index_allocated(job["JobId"])
    assert job["TimeLimit"] == "00:14:00", job["_text"]  # two runs of 7 minutes, one after the other


def test_failing_job_is_reported(runs, cluster):
    run = runs["failing"]
    assert run.returncode == 1, run.tail()
    assert "Error in rule fail" in run.log, run.tail()
    (job,) = slurm_jobs(cluster, run.workdir)
    assert job["JobState"] == "FAILED" and job["ExitCode"] == "1:0", job["_text"]
    assert not (run.workdir / "never.txt").exists()


def test_training_resumes_across_time_limits(runs, cluster, tiny_dataset_path):
    """A run longer than its job's time limit: SLURM warns it (SIGTERM, `--signal`), it saves and fails
    the job, snakemake resubmits it, the next job resumes; complete with no manual step, with the metrics
    of the run trained in one go, bit for bit."""
    run = runs["timelimit"]
    assert run.returncode == 0, run.tail()
    out = run.workdir / LONG_RUN
    assert not (out / "resume.pt").exists()  # removed once complete
    info = json.loads((out / "run.json").read_text())
    assert info["data_content_hash"] == read_dataset(tiny_dataset_path).meta["content_hash"]
    cols = ["step", "split", "loss", "accuracy"]
    got, want = (pd.read_parquet(d / "metrics.parquet")[cols] for d in (out, runs["reference"]))
    assert got["step"].max() == runs["long_steps"]
    pd.testing.assert_frame_equal(got, want, check_exact=True)

    all_jobs = slurm_jobs(cluster, run.workdir)
    jobs = [j for j in all_jobs if rule_of(j).startswith("train")]
    assert len(jobs) == len(all_jobs) > 1, [j["_text"] for j in all_jobs]  # training only, resubmitted
    jobs.sort(key=lambda j: int(j["JobId"]))
    for job in jobs:
        assert job["TimeLimit"] == "00:01:00", job["_text"]  # GROKBENCH_TRAIN_RUNTIME=1
    for job in jobs[:-1]:  # stopped before the time limit, having saved: failed, not timed out
        assert job["JobState"] == "FAILED" and job["ExitCode"] == "1:0", job["_text"]
    assert jobs[-1]["JobState"] == "COMPLETED", jobs[-1]["_text"]

    # one segment per job that trained (a job signalled while still starting up trains nothing)
    segments = info["segments"]
    assert info["n_segments"] == len(segments) > 1
    assert [s["ended"] for s in segments] == ["stopped"] * (len(segments) - 1) + ["completed"]
    job_ids = [j["JobId"] for j in jobs]
    seg_jobs = [s["slurm_job_id"] for s in segments]
    assert seg_jobs == sorted(set(seg_jobs), key=job_ids.index) and set(seg_jobs) <= set(job_ids)
    assert seg_jobs[-1] == job_ids[-1]
    for before, after in zip(segments, segments[1:]):
        assert after["start_step"] == before["end_step"]
    assert segments[-1]["end_step"] == runs["long_steps"]
    assert info["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in segments), abs=1e-6)
    for segment in segments:
        assert segment["wall_seconds"] < 60  # within its job's minute
