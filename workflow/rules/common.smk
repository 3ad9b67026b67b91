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


from grokbench import grid, study  # noqa: E402
from grokbench.report import FIGURES  # noqa: E402
from grokbench.provenance import code_fingerprint  # noqa: E402
from grokbench.train.config import TrainConfig  # noqa: E402


def load_study():
    """The study, exactly as its one file says plus the schema's defaults (grokbench.study.load): the
    --configfile if given, else the embedded config.yaml; never a merge of the two. --config KEY=VALUE
    pairs apply on top of the file before it is validated. A bad study stops Snakemake before any job
    with the same message as `python -m grokbench validate` (no traceback: it is the user's input)."""
    files = workflow.config_settings.configfiles
    path = Path(os.path.relpath(files[0])) if files else Path(workflow.basedir) / "config.yaml"
    try:
        if len(files) > 1:
            raise study.ConfigError(f"a study is one file; got --configfile {' '.join(map(str, files))}")
        return study.load(path, overrides=dict(workflow.config_settings.config))
    except study.ConfigError as e:
        print(f"grokbench: invalid config: {e}", file=sys.stderr)
        sys.exit(1)


config.clear()
config.update(load_study())

RESULTS = config["results"]
CELLS = grid.cells(config)


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
    return [
        f"{RESULTS}/claims/{name}" for name in ("claims.csv", "claims.md", "selection.csv", "selection.md")
    ]


def figure_specs():
    """Figure name (grokbench.report.figure_names) -> what `grokbench plot` draws (kind, spec) and its
    report caption and category."""
    fixed = {n: dict(kind=n, spec={}, caption=f"../report/{n}.rst", category="Figures") for n in FIGURES}
    sweeps = {
        f"sweep_{n}": dict(kind="sweep", spec=spec, caption="../report/sweep.rst", category="Sweeps")
        for n, spec in config["sweeps"].items()
    }
    return fixed | sweeps


def figure_outputs():
    return expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=list(figure_specs()), ext=["pdf", "png"])


# Runs that keep checkpoints (a training setting's `checkpoints`) and their outputs (mech.smk).
CHECKPOINTED = [
    c for c in CELLS if TrainConfig.from_dict(config["training"][c.training]).checkpoints is not None
]


def weight_norm_tables():
    return [f"{RESULTS}/mech/{c.run_id}/weight_norms.parquet" for c in CHECKPOINTED]


def mech_outputs():
    """The weight_norms figure (and so every run's table) if some run keeps checkpoints, else nothing."""
    if not CHECKPOINTED:
        return []
    return expand(f"{RESULTS}/figures/weight_norms.{{ext}}", ext=["pdf", "png"])
