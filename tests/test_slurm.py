"""`snakemake --profile slurm` on a real single-node SLURM cluster (scripts/slurm-cluster.sh).

The cluster is real: munged, slurmctld and slurmd on this machine, jobs submitted with sbatch by
snakemake-executor-plugin-slurm and run by slurmd; nothing is mocked. The module starts it (root
needed; the script installs the Debian packages when missing) and stops what it started.

Three snakemake runs share the cluster at once (each spends most of its time waiting for status checks;
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
- a rule that fails inside its SLURM job: snakemake exits 1 (reported, not hung), SLURM has it FAILED.

Every snakemake call runs under `timeout -s KILL`: a status check that hangs must fail the test, not
the CI run. Skipped only where the cluster cannot be started (e.g. not root) and CI is not set; with
CI set, a cluster that does not start fails the test.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import TINY_CONFIG

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

    def __init__(self, workdir: Path, env: dict[str, str], *args: str):
        self.workdir = workdir
        self.log_path = workdir / "snakemake.out"
        cmd = ["timeout", "-s", "KILL", str(TIMEOUT), "snakemake", "--profile", str(REPO / "slurm"), *args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> Run:
        self.returncode = self.proc.wait()
        self.log = self.log_path.read_text()
        return self

    def tail(self) -> str:
        return f"exit {self.returncode} (137: killed by the timeout)\n{self.log[-4000:]}"


PACKED = ("default", "default+lr0.01")  # the two settings of the packed run's learning-rate grid


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The three runs (see the module docstring), started together, finished."""
    study = tmp_path_factory.mktemp("slurm-study")
    copy_workflow(study, copy.deepcopy(TINY_CONFIG))
    packed = tmp_path_factory.mktemp("slurm-packed")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["a"]["val_size"] = 16
    cfg["grid"][0]["hparams"] = {"lr": [cfg["training"]["default"]["lr"], 1e-2]}
    copy_workflow(packed, cfg)
    failing = tmp_path_factory.mktemp("slurm-failing")
    (failing / "Snakefile").write_text(FAILING_SNAKEFILE)

    started = time.monotonic()
    pending = {
        "study": Run(study, run_env(cluster, GROKBENCH_GPU_MODEL="fake", GROKBENCH_GPU_PARTITION="gpu"),
                     "--configfile", "study.yaml", *FAST),
        # The training runs only (their outputs as targets): packing is about them.
        "packed": Run(packed, run_env(cluster, GROKBENCH_RUNS_PER_JOB="2", GROKBENCH_TRAIN_RUNTIME="7"),
                      "--configfile", "study.yaml", *FAST,
                      *[f"results/runs/a/gpt/{t}/seed0/run.json" for t in PACKED]),
        "failing": Run(failing, run_env(cluster), *FAST),
    }  # fmt: skip
    done = {name: run.wait() for name, run in pending.items()}
    print(f"three snakemake runs through SLURM: {time.monotonic() - started:.0f} s")
    return done


def slurm_jobs(conf: Path, workdir: Path) -> list[dict[str, str]]:
    """SLURM's record of the jobs run from `workdir` (slurmctld keeps finished jobs MinJobAge=600 s)."""
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
