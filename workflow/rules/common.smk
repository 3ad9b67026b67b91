# Shared helpers: config validation (before any job), the grid of runs, output paths.
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))


envvars:
    "PATH",


# Jobs run `python -m grokbench`: make that the Python running Snakemake (the project's environment),
# also when Snakemake was started as .venv/bin/snakemake without activating the environment.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from snakemake.exceptions import WorkflowError  # noqa: E402

from grokbench import config as study  # noqa: E402
from grokbench.provenance import code_fingerprint  # noqa: E402

try:
    _validated = study.validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
except study.ConfigError as e:
    raise WorkflowError(f"invalid config: {e}") from None
config.clear()
config.update(_validated)

RESULTS = config["results"]
CELLS = study.cells(config)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    training=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",  # + joins a hyperparameter setting to its base
    seed=r"\d+",


def as_json(obj):
    """Stable JSON for params: same content, same string, so params-triggered reruns are exact."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def run_dir(cell):
    return f"{RESULTS}/runs/{cell.run_id}"


def run_outputs(name):
    return [f"{run_dir(c)}/{name}" for c in CELLS]


def summary_outputs():
    return [f"{RESULTS}/summary/summary.parquet", f"{RESULTS}/summary/summary.csv"]


def claims_outputs():
    return [f"{RESULTS}/claims/{name}" for name in ("claims.csv", "claims.md", "selection.csv", "selection.md")]


FIGURES = ["curves", "grokking"]
SWEEPS = config["sweeps"]  # name -> spec of a sweep figure


def figure_outputs():
    names = FIGURES + [f"sweep_{name}" for name in SWEEPS]
    return expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=names, ext=["pdf", "png"])
