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


from grokbench import grid, plan, study  # noqa: E402
from grokbench.report import FIGURES, MECH_FIGURES  # noqa: E402
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
# Packs of more than one run (config `pack.size` > 1): one job each (train.smk); every other run is a job
# of rule `train`. A pack is the grid's seeds of one block [kN, (k+1)N) of one dataset x model x training
# (grokbench.grid.packs): adding seeds in new blocks adds packs and leaves existing packs as they are.
PACKS = [p for p in grid.packs(config) if len(p.seeds) > 1]


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",  # + joins a swept variant (grid hparams data.*) to its base
    model=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",  # ... (model.*)
    training=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",  # + joins a hyperparameter setting to its base
    seed=r"\d+",


def as_json(obj):
    """Stable JSON for params: same content, same string, so params-triggered reruns are exact."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def run_dir(cell):
    return f"{RESULTS}/runs/{cell.run_id}"


def pack_rule_name(pack):
    """`train_pack_<pack id, non-word characters as _>_<6 hex of its sha256>`: stable, unique, one word."""
    import hashlib
    import re

    digest = hashlib.sha256(pack.pack_id.encode()).hexdigest()[:6]
    word = re.sub(r"\W+", "_", pack.pack_id)
    return f"train_pack_{word}_{digest}"


def pack_outputs(pack):
    """Every member's outputs, as rule `train` names them for one run."""
    names = ("metrics.parquet", "model.pt", "run.json")
    return [f"{run_dir(c)}/{name}" for c in pack.cells for name in names]


def train_priority(model, training):
    """Costlier training jobs first (grokbench.plan.cpu_seconds); every other rule's priority is 0, so
    the per-run analyses wait for a core that no training job wants."""
    return plan.cpu_seconds(config["models"][model], config["training"][training])


def train_resources():
    """What the profile's `set-resources: train:` gives a training job (profiles/default/config.yaml), for
    the pack rules, which it cannot name in advance; {} without a profile."""
    settings = getattr(workflow, "resource_settings", None)
    train = dict(getattr(settings, "overwrite_resources", None) or {}).get("train", {})
    # Snakemake holds them as Resource objects; a rule takes the values as the profile gave them
    return {name: getattr(value, "raw", value) for name, value in train.items()}


def train_threads():
    """The profile's `set-threads: train:` if it sets one (GROKBENCH_TRAIN_THREADS), else the study's."""
    settings = getattr(workflow, "resource_settings", None)
    threads = dict(getattr(settings, "overwrite_threads", None) or {}).get("train")
    return threads or config["threads"]


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


def mech_tables(name):
    """Every checkpointed run's `name` table (logit_lens, probes, tracing) from rule mech."""
    return [f"{RESULTS}/mech/{c.run_id}/{name}.parquet" for c in CHECKPOINTED]


def mech_outputs():
    """The figures of the checkpoints (MECH_FIGURES: weight_norms, probes, logit_lens, tracing; and so
    every run's tables) if some run keeps checkpoints, else nothing."""
    if not CHECKPOINTED:
        return []
    return expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=MECH_FIGURES, ext=["pdf", "png"])
