"""Code fingerprints and provenance records.

Snakemake does not track the Python modules a rule imports, so each rule puts the fingerprint of the source
files its stage depends on into its params: editing the training code reruns training (params changed) but
not data generation, editing plotting code reruns only the figures. `STAGE_SOURCES` is the single place
that says which stage depends on which part of the package.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the grokbench package

# stage -> files or folders (relative to the package) whose content defines that stage's outputs; every
# record names its stage, and `audit` compares the record's fingerprint with the code's now.
STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "data": ("tasks", "io.py", "params.py"),
    "train": ("models", "train", "io.py", "params.py", "curves.py"),
    "analysis": ("report/analysis.py", "curves.py", "grid.py"),
    "claims": (
        "report/analysis.py",
        "curves.py",
        "report/selection.py",
        "report/claims.py",
        "report/survival.py",
        "report/tables.py",
        "grid.py",
    ),
    "plots": ("report/plots.py", "report/survival.py"),
    # a run's checkpoints -> its weight-norm table (the models: which tensors are parameters, their groups)
    "weight_norms": ("mech/weights.py", "train/checkpoints.py", "models", "io.py", "curves.py"),
    # a checkpoint (or a run's checkpoints) and its dataset -> logit lens, probes, tracing tables
    "mech": ("mech", "models", "tasks", "io.py", "params.py"),
    # the runs' mech tables (and the summary) -> the probes, logit_lens and tracing figures
    "mech_plots": ("report/mech_plots.py", "report/plots.py", "report/survival.py"),
}

PACKAGES = (
    "grokbench",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "seaborn",
    "snakemake",
    "lifelines",
    "rocrate",
    # optional (null where not installed): the numerical references and GPU kernel backends. fla's code
    # is the distribution fla-core since fla 0.3 (flash-linear-attention requires it); mamba-ssm's
    # causal conv is causal-conv1d.
    "transformers",
    "flash-linear-attention",
    "fla-core",
    "mamba-ssm",
    "causal-conv1d",
    "triton",
)


def _source_files(stage: str) -> list[Path]:
    try:
        entries = STAGE_SOURCES[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}; known: {sorted(STAGE_SOURCES)}") from None
    files: list[Path] = []
    for entry in entries:
        path = PACKAGE_DIR / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def code_fingerprint(stage: str) -> str:
    """sha256 (first 16 hex digits) over the relative paths and bytes of a stage's source files."""
    h = hashlib.sha256()
    for f in _source_files(stage):
        h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_state(path: Path = PACKAGE_DIR) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding `path` (None outside a git checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["cuda"] = torch.version.cuda
    return info


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def record(stage: str, config: dict[str, Any], inputs: dict[str, str], **extra: Any) -> dict:
    """A provenance record: what made an output, from what, with which code, where and when.

    `inputs` maps input paths to their sha256. `extra` carries stage-specific fields (seed, times, ...).
    """
    return {
        "stage": stage,
        "config": config,
        "inputs": inputs,
        "code_fingerprint": code_fingerprint(stage),
        "git": git_state(),
        "packages": package_versions(),
        "hardware": hardware(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "argv": sys.argv,
        **extra,
    }
