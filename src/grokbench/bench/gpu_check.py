"""`python -m grokbench gpu-check`: every check that needs a GPU, in one command, into one Markdown report.

A GPU session (an H100 or H200) runs this one command from the repository root, once the machine is up;
it stops within 8 minutes (`--budget 480`, the sum of the step limits below), expected 3-6 (not yet timed
on a GPU: the tests and torch.compile on a cold cache are the unknowns):

    scripts/gpu-check.sh        # = python -m grokbench gpu-check --out ${OUT:-results}/gpu-check.md

Each step is a subprocess under its own time limit (`--limit NAME=SECONDS`); a failing or timed-out step
is recorded and the next one runs. The report (device, date, versions, then per step its command, exit
status, wall time and results) is rewritten atomically before and after every step, so a report exists
even if the machine is taken away mid-way. Steps on CUDA, with their limits:

1. gpu-tests (120 s): `pytest -m gpu`, the CUDA-marked tests: passed / failed / skipped counts, the
   failures' names, the skip reasons, the slowest tests.
2. bench-backends (75 s): `bench-backends --preset paper --batch 512 --seq 6`.
3. bench-train (75 s): `bench-train` at its CUDA defaults (the reference, a single run, 4 seeds packed).
4. pipeline (150 s): the default study (config.yaml) shortened to 300 steps, the first dataset and seed
   of each grid block, no hyperparameter grid, `device: cuda`, plus the first cell (gpt seed 0) once more
   in fp32; run with snakemake in a temporary copy of the workflow. Fails if a run is not on CUDA.
5. cpu-rerun (60 s): those two cells trained again, by the same workflow with `device: cpu`; their
   metrics (loss and accuracy per evaluation and split) compared with the CUDA runs' (`TOLERANCE`).

With `--quick`, and always where CUDA is absent, every step runs in a tiny form (bench-backends on the
tiny preset for gpt and mamba, bench-train for 3 steps, the pipeline on .test/config.yaml), a minute or
so on a CPU; tests/bench/test_gpu_check.py runs it. CPU against CPU, the comparison must be exact.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .. import provenance
from ..io import write_text

REPO = Path(__file__).resolve().parents[3]  # the checkout: Snakefile, workflow/, tests/, config.yaml
STEPS = {  # name: (what, limit on CUDA, limit --quick), in the order they run
    # --quick: collecting the whole suite for `-m gpu` took over 60 s beside `make test`'s workers
    "gpu-tests": ("the CUDA-marked tests", 120, 120),
    "bench-backends": ("training step per family and backend", 75, 60),
    "bench-train": ("training throughput, single and packed", 75, 60),
    "pipeline": ("a short run of the study with snakemake", 150, 120),
    "cpu-rerun": ("the compared cells trained again on the CPU", 60, 60),
}
BUDGET = (480, 420)  # seconds for all steps together (CUDA, --quick)
PIPELINE_STEPS = 300  # training steps of the shortened default study (CUDA; --quick keeps .test's 40)
TINY_DATA = dict(n_entities=24, n_attributes=2, value_range=3, phi=4.0, id_ratio=0.75, test_size=40)
# CUDA vs CPU, per evaluation and split: (max |accuracy difference|, max |loss difference| / |loss|).
# Measured on the CPU with the shortened default study's gpt cell (300 steps, 7 evaluations): in fp32, runs
# whose arithmetic differs as between devices (1 vs 2 threads: the order of summation; torch.compile vs
# eager: other kernels) end within 1e-5 and 2.3e-5 in loss and identical in accuracy, while another seed
# differs by 0.10 in accuracy and 14% in loss. fp32 is the real check, with 40x that drift as margin for
# CUDA's own kernels (grokbench leaves TF32 off, so CUDA's fp32 matmuls are fp32). In bf16 the rounding
# itself moves these metrics by up to 0.05 and 11% (bf16 vs fp32; 1 vs 2 threads in bf16: 0.025 and 2%),
# half of what another seed does (0.10 and 19%): no bf16 tolerance tells kernel noise from a real
# difference, so the bf16 cell (the study's own setting) gets a bound for gross failures only.
TOLERANCE = {"fp32": (0.01, 1e-3), "bf16": (0.15, 0.3)}
EXACT = (0.0, 0.0)  # CPU against CPU: the same program, bit for bit
TAIL = 60  # lines of each output kept in the report


@dataclass
class Step:
    name: str
    limit: float
    command: list[str] | None = None
    cwd: Path | None = None
    status: str = "pending"  # pending, running, passed, failed, timed out, skipped, not selected
    exit: int | None = None
    wall: float | None = None
    note: str = ""
    tables: str = ""  # Markdown: what the step measured
    stdout: str = ""
    stderr: str = ""
    stdout_in_tables: bool = False


class Skip(Exception):
    """A step that cannot run (its reason is the message)."""


class Check:
    def __init__(self, out, quick=False, only=None, limits=None, step_args=None, pipeline_steps=None,
                 budget=None, work=None, argv=None):  # fmt: skip
        import torch

        for name in [*(only or []), *(limits or {}), *(step_args or {})]:
            if name not in STEPS:
                raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
        self.cuda = torch.cuda.is_available()
        self.quick = quick or not self.cuda
        self.device = "cuda" if self.cuda else "cpu"
        self.out = Path(out)
        self.only = set(only or STEPS)
        self.step_args = step_args or {}
        self.pipeline_steps = pipeline_steps or (None if self.quick else PIPELINE_STEPS)
        self.budget = budget or BUDGET[self.quick]
        self.keep = work is not None
        self.work = Path(work or tempfile.mkdtemp(prefix="grokbench-gpu-check-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.argv = argv or ["python", "-m", "grokbench", "gpu-check"]
        limit = {n: (limits or {}).get(n, STEPS[n][2 if self.quick else 1]) for n in STEPS}
        self.steps = [Step(n, limit[n]) for n in STEPS]
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}
        if self.quick:  # one torch thread per process: tiny steps; several threads on a busy CPU spin-wait
            self.env.setdefault("OMP_NUM_THREADS", "1")
        self.header = environment(self.quick, self.budget)
        self.compared: list[str] = []  # run ids trained on both devices

    # --- running -------------------------------------------------------------------------------------

    def run(self) -> int:
        """Every selected step in order; 0 when all passed."""
        deadline = time.monotonic() + self.budget
        self.write()
        for step in self.steps:
            if step.name not in self.only:
                step.status = "not selected"
                continue
            left = deadline - time.monotonic()
            try:
                if left < 1:
                    raise Skip("the time budget (--budget) was spent")
                step.command, step.cwd = getattr(self, "prepare_" + step.name.replace("-", "_"))()
            except Exception as e:  # Skip: cannot run (e.g. what it needs is missing); else a failure
                skip = isinstance(e, Skip)
                step.status, step.note = (
                    ("skipped", str(e)) if skip else ("failed", f"could not start: {e!r}")
                )
                self.write()
                continue
            step.command += self.step_args.get(step.name, [])
            if left < step.limit:
                step.limit, step.note = left, "limit cut to the budget left"
            step.status = "running"
            self.write()
            self.execute(step)
            try:
                getattr(self, "read_" + step.name.replace("-", "_"))(step)
            except Exception as e:  # a step whose results cannot be read failed, whatever its exit status
                step.status, step.note = "failed", f"{step.note}; reading its results: {e!r}".lstrip("; ")
            self.write()
        self.header.append(("finished", provenance.now()))
        self.write()
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0 if all(s.status in ("passed", "not selected") for s in self.steps) else 1

    def execute(self, step: Step) -> None:
        log = self.work / "logs" / step.name
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
            try:
                p = subprocess.Popen(step.command, cwd=step.cwd, env=self.env, stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            except OSError as e:
                step.status, step.note = "failed", f"could not start: {e}"
                return
            try:
                step.exit = p.wait(timeout=step.limit)
                step.status = "passed" if step.exit == 0 else "failed"
            except subprocess.TimeoutExpired:
                kill_tree(p)
                step.exit, step.status = p.wait(), "timed out"
            except BaseException:  # interrupted (Ctrl-C): take the step's processes along
                kill_tree(p)
                raise
        step.wall = time.perf_counter() - start
        step.stdout, step.stderr = (Path(f"{log}.{s}").read_text(errors="replace") for s in ("out", "err"))

    # --- the steps: prepare_<step> gives (command, folder), read_<step> reads its results -------------

    def prepare_gpu_tests(self):
        junit = self.work / "gpu-tests.xml"
        junit.unlink(missing_ok=True)
        return [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "--durations=5",
                f"--junitxml={junit}"], REPO  # fmt: skip

    def read_gpu_tests(self, step: Step) -> None:
        junit = self.work / "gpu-tests.xml"
        if junit.exists():
            step.tables = junit_tables(junit)

    def prepare_bench_backends(self):
        shape = ["--preset", "tiny", "--batch", "16", "--repeats", "2", "--families", "gpt", "mamba"]
        if not self.quick:
            shape = ["--preset", "paper", "--batch", "512", "--seq", "6"]
        return [sys.executable, "-m", "grokbench", "bench-backends", *shape], self.work

    def read_bench_backends(self, step: Step) -> None:
        step.tables, step.stdout_in_tables = fenced(step.stdout), True

    def prepare_bench_train(self):
        tiny = ["--preset", "tiny", "--batch", "16", "--steps", "3", "--warmup", "1", "--seeds", "2"]
        tiny += ["--data", json.dumps(TINY_DATA)]
        return [sys.executable, "-m", "grokbench", "bench-train", *(tiny if self.quick else [])], self.work

    read_bench_train = read_bench_backends

    def prepare_pipeline(self):
        wd = self.work / "workflow"
        shutil.rmtree(wd, ignore_errors=True)
        wd.mkdir()
        shutil.copy(REPO / "Snakefile", wd)
        shutil.copytree(REPO / "workflow", wd / "workflow")
        shutil.copytree(REPO / "src" / "grokbench", wd / "src" / "grokbench",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        base = REPO / (".test/config.yaml" if self.quick else "config.yaml")
        cfg = short_study(yaml.safe_load(base.read_text()), self.pipeline_steps, self.device)
        header = f"# {base.name}, shortened by grokbench gpu-check\n"
        (wd / "study.yaml").write_text(header + yaml.safe_dump(cfg))
        return [*snakemake(), "--cores", str(os.cpu_count() or 1), "--configfile", "study.yaml"], wd

    def read_pipeline(self, step: Step) -> None:
        from .. import grid, study

        wd = self.work / "workflow"
        cells = grid.cells(study.load(wd / "study.yaml"))
        self.compared = [c.run_id for c in cells if c.training.endswith("-fp32")]
        self.compared.insert(0, cells[0].run_id)
        rows, wrong = [], []
        for cell in cells:
            info_path = wd / "results" / "runs" / cell.run_id / "run.json"
            if not info_path.exists():
                rows.append(f"| {cell.run_id} | - | not trained | - | - |")
                continue
            info = json.loads(info_path.read_text())
            if info["device"] != self.device:
                wrong.append(cell.run_id)
            final = final_accuracies(info_path.parent / "metrics.parquet")
            rows.append(f"| {cell.run_id} | {info['device']} | {info['status']} | {info['wall_seconds']:.1f} "
                        f"| {final} |")  # fmt: skip
        step.tables = "\n".join(["| run | device | status | wall s | final accuracy |",
                                 "| --- | --- | --- | --- | --- |", *rows])  # fmt: skip
        step.tables += job_errors(wd / "results" / "logs")
        if wrong:
            step.status, step.note = "failed", f"not trained on {self.device}: {', '.join(wrong)}"

    def prepare_cpu_rerun(self):
        wd = self.work / "workflow"
        missing = [r for r in self.compared if not (wd / "results" / "runs" / r / "metrics.parquet").exists()]
        if not self.compared or missing:
            raise Skip(f"the pipeline step trained no {', '.join(missing) or 'runs'}")
        cfg = yaml.safe_load((wd / "study.yaml").read_text())
        cfg["results"] = "results-cpu"
        for training in cfg["training"].values():
            training["device"] = "cpu"
        (wd / "study-cpu.yaml").write_text("# study.yaml on the CPU\n" + yaml.safe_dump(cfg))
        targets = [f"results-cpu/runs/{r}/metrics.parquet" for r in self.compared]
        cores = str(os.cpu_count() or 1)
        return [*snakemake(), "--cores", cores, "--configfile", "study-cpu.yaml", "--nolock", *targets], wd

    def read_cpu_rerun(self, step: Step) -> None:
        wd = self.work / "workflow"
        rows, failed = [], []
        for run_id in self.compared:
            a, b = (wd / results / "runs" / run_id for results in ("results", "results-cpu"))
            if not (b / "run.json").exists():
                failed.append(f"{run_id}: not trained on the CPU")
                continue
            info, cpu_info = (json.loads((d / "run.json").read_text()) for d in (a, b))
            precision = info["config"]["training"]["precision"]
            bf16 = precision == "bf16" or (precision == "auto" and info["device"] == "cuda")
            precision = "bf16" if bf16 else "fp32"
            tol = EXACT if info["device"] == "cpu" else TOLERANCE[precision]
            if info["data_content_hash"] != cpu_info["data_content_hash"]:
                failed.append(f"{run_id}: the two pipelines made different datasets")
            for split, stats in compare_metrics(a / "metrics.parquet", b / "metrics.parquet").items():
                ok = stats["acc"] <= tol[0] and stats["loss"] <= tol[1]
                acc, loss = (f"{stats[k]:.3g}" + (f" (step {stats[k + '_step']})" if stats[k] else "")
                             for k in ("acc", "loss"))  # fmt: skip
                rows.append(f"| {run_id} | {precision} | {split} | {stats['n']} | {acc} | {loss} "
                            f"| {tol[0]:g} / {tol[1]:g} | {'yes' if ok else '**no**'} |")  # fmt: skip
                if not ok:
                    failed.append(f"{run_id} {split}: outside the tolerance")
        where = f"{self.device} (the pipeline) against cpu (this step)"
        step.tables = "\n".join([
            f"Metrics of the same runs, {where}; max over evaluations per split.", "",
            "| run | precision | split | evaluations | max abs diff accuracy | max rel diff loss | "
            "tolerance (accuracy / loss) | within |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows])  # fmt: skip
        step.tables += job_errors(wd / "results-cpu" / "logs")
        if failed:
            step.status, step.note = "failed", "; ".join(failed)

    # --- the report ----------------------------------------------------------------------------------

    def write(self) -> None:
        write_text(self.out, self.render())

    def render(self) -> str:
        lines = ["# grokbench GPU check", "", f"`{shlex.join(self.argv)}`", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in self.header]
        lines += ["", "## Summary", "", "| # | step | status | exit status | wall s | limit s |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for i, s in enumerate(self.steps, 1):
            lines.append(f"| {i} | {s.name} | {s.status} | {num(s.exit)} | {num(s.wall)} | {num(s.limit)} |")
        for i, s in enumerate(self.steps, 1):
            lines += ["", f"## {i}. {s.name}: {STEPS[s.name][0]}", ""]
            lines.append(
                f"- command: `{shlex.join(s.command)}` in `{s.cwd}`" if s.command else "- command: none"
            )
            lines.append(f"- exit status: {num(s.exit)} ({s.status}); wall {num(s.wall)} of {num(s.limit)} s")
            if s.note:
                lines.append(f"- note: {s.note}")
            if s.tables:
                lines += ["", s.tables]
            for name, text in (("stdout", s.stdout), ("stderr", s.stderr)):
                if text.strip() and not (name == "stdout" and s.stdout_in_tables):
                    lines += ["", f"<details><summary>{name} (last {TAIL} lines)</summary>", "", fenced(text),
                              "", "</details>"]  # fmt: skip
        return "\n".join(lines) + "\n"


# --- helpers ---------------------------------------------------------------------------------------------


def short_study(cfg: dict, steps: int | None, device: str) -> dict:
    """The study `cfg` (as read from its file) made short: `steps` training steps with 7 evaluations (None:
    as it is), the first dataset and seed of each grid block, no hyperparameter grid or sweeps, no
    weights across training (the mechanistic analyses are not what the check times), every training on
    `device`; and, where the first cell would train in bf16, that cell once more in fp32 (its
    training setting named `<training>-fp32`), for the CUDA-vs-CPU comparison."""
    cfg = copy.deepcopy(cfg)
    cfg["results"] = "results"
    cfg.pop("sweeps", None)
    for training in cfg["training"].values():
        training["device"] = device
        training.pop("checkpoints", None)
        if steps:
            schedule = {"dense_every": max(1, steps // 6), "dense_until": steps, "every": steps}
            training.update(steps=steps, eval={**training.get("eval", {}), **schedule})
    for block in cfg["grid"]:
        block.pop("hparams", None)
        block.update(datasets=block["datasets"][:1], seeds=block["seeds"][:1])
    first = cfg["grid"][0]
    name = first.get("training", ["default"])[0]
    precision = cfg["training"][name].get("precision", "auto")
    if precision == "bf16" or (precision == "auto" and device == "cuda"):
        cfg["training"][f"{name}-fp32"] = {**copy.deepcopy(cfg["training"][name]), "precision": "fp32"}
        cfg["grid"].append(
            {**copy.deepcopy(first), "models": first["models"][:1], "training": [f"{name}-fp32"]}
        )
    return cfg


def compare_metrics(path_a: Path, path_b: Path) -> dict[str, dict]:
    """Per split of two runs' metrics: evaluations, max |accuracy difference| and max |loss difference| /
    max(|loss|), each with its step. The runs must have evaluated the same steps and splits; a value that is
    NaN in one run only differs infinitely."""
    import pandas as pd

    a, b = (pd.read_parquet(p).sort_values(["split", "step"], ignore_index=True) for p in (path_a, path_b))
    if not a[["step", "split"]].equals(b[["step", "split"]]):
        raise ValueError(f"{path_a} and {path_b} evaluated different steps or splits")
    acc = difference(a["accuracy"], b["accuracy"], relative=False)
    loss = difference(a["loss"], b["loss"], relative=True)
    out = {}
    for split, rows in a.groupby("split").indices.items():
        ia, il = rows[acc[rows].argmax()], rows[loss[rows].argmax()]
        out[split] = dict(n=len(rows), acc=acc[ia], acc_step=int(a["step"][ia]), loss=loss[il],
                          loss_step=int(a["step"][il]))  # fmt: skip
    return out


def difference(x, y, relative: bool) -> np.ndarray:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.abs(x - y) / (np.maximum(np.abs(x), np.abs(y)) if relative else 1.0)
    d[(x == y) | (np.isnan(x) & np.isnan(y))] = 0.0
    d[np.isnan(d)] = np.inf
    return d


def final_accuracies(path: Path) -> str:
    import pandas as pd

    m = pd.read_parquet(path)
    last = m[m["step"] == m["step"].max()]
    return ", ".join(f"{r.split} {r.accuracy:.3f}" for r in last.itertuples())


def junit_tables(path: Path) -> str:
    """Counts, failures and skip reasons of a pytest JUnit XML file, as Markdown."""
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, skipped = [], {}
    for case in cases:
        name = "::".join(filter(None, (case.get("classname"), case.get("name"))))
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            failed.append(f"- `{name}`: {first_line(bad.get('message'), 200)}")
        elif (skip := case.find("skipped")) is not None:
            reason = first_line(skip.get("message"), 120)
            skipped[reason] = skipped.get(reason, 0) + 1
    n_skip = sum(skipped.values())
    passed = len(cases) - len(failed) - n_skip
    lines = ["| tests | passed | failed or error | skipped |", "| --- | --- | --- | --- |"]
    lines.append(f"| {len(cases)} | {passed} | {len(failed)} | {n_skip} |")
    if failed:
        lines += ["", "Failed:", *failed]
    if skipped:
        lines += ["", "Skip reasons:", *(f"- {n} x {reason}" for reason, n in skipped.items())]
    return "\n".join(lines)


def environment(quick: bool, budget: float) -> list[tuple[str, str]]:
    rows = [("date", provenance.now()), ("host", f"{socket.gethostname()}, {os.cpu_count()} CPUs")]
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            device = (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
                      f"driver {nvidia_driver()}")  # fmt: skip
        else:
            device = f"cpu ({platform.processor() or platform.machine()}), no CUDA"
        cudnn = torch.backends.cudnn.version()
        rows += [
            ("device", device),
            ("torch", f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}"),
        ]
    except Exception as e:  # a broken install is a finding: report it, go on
        rows.append(("torch", f"not importable: {e!r}"))
    versions = provenance.package_versions()
    for name in ("pytest", "causal-conv1d"):
        versions[name] = metadata_version(name)
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    rows.append(("not installed", ", ".join(k for k, v in versions.items() if not v) or "-"))
    git = provenance.git_state(REPO)
    rows.append(("git", f"{git['commit']}{' with uncommitted changes' if git['dirty'] else ''}"))
    rows.append(("mode", f"{'quick (tiny steps)' if quick else 'full'}; budget {budget:g} s"))
    return rows


def metadata_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def snakemake() -> list[str]:
    """The snakemake of this environment: next to the Python running this, else on PATH, else as a module."""
    exe = Path(sys.executable).parent / "snakemake"
    if exe.exists():
        return [str(exe)]
    return [found] if (found := shutil.which("snakemake")) else [sys.executable, "-m", "snakemake"]


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL a step's process, its process group and every descendant (snakemake's jobs included)."""
    try:
        import psutil  # snakemake's dependency

        children = psutil.Process(p.pid).children(recursive=True)
    except Exception:
        children = []
    for kill in (lambda: os.killpg(p.pid, signal.SIGKILL), *(c.kill for c in children)):
        with contextlib.suppress(Exception):  # gone already
            kill()


def job_errors(logs: Path) -> str:
    """The end of each Snakemake job log under `logs` that reports an error, as Markdown."""
    out = []
    for log in sorted(logs.rglob("*.log")) if logs.exists() else []:
        text = log.read_text(errors="replace")
        if "Traceback" in text or "Error" in text:
            out += ["", f"Job log `{log.relative_to(logs.parent.parent)}`:", "", fenced(text, 30)]
    return "\n".join(out)


def first_line(text: str | None, width: int) -> str:
    return (text or "").strip().split("\n")[0][:width]


def fenced(text: str, tail: int = TAIL) -> str:
    lines = text.rstrip().splitlines()[-tail:]
    return "\n".join(["```text", *lines, "```"])


def num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def assignments(items: list[str] | None, convert) -> dict:
    """NAME=VALUE arguments (--limit, --step-args) as {name: convert(value)}."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r}: expected STEP=VALUE")
        out[name] = convert(value)
    return out
