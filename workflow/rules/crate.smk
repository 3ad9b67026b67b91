# Sharing a study: its provenance as a Workflow Run RO-Crate (rule crate), and a report of whatever part
# of a study exists so far (target `available`, for `snakemake --report report.html available`).
# Which files each job has: grokbench.provenance.crate (study_jobs), the same names as the rules'.
from grokbench.provenance import crate as crate_export  # noqa: E402

# The study file this run read (as common.smk's load_study finds it) and its --config overrides.
STUDY_FILE = (
    os.path.relpath(workflow.config_settings.configfiles[0])
    if workflow.config_settings.configfiles
    else str(Path(workflow.basedir) / "config.yaml")
)
AVAILABLE, AVAILABLE_RUNS = crate_export.available_outputs(config, RESULTS)


# The crate root is the results folder: the study's files are listed where they are, and crate/ gets the
# study as validated and a copy of the workflow. Not part of `all`: `snakemake --cores 2 crate`.
rule crate:
    input:
        [str(p) for p in crate_export.study_outputs(config, RESULTS)],
    output:
        metadata=f"{RESULTS}/ro-crate-metadata.json",
        extras=directory(f"{RESULTS}/crate"),
    log:
        f"{RESULTS}/logs/crate.log",
    conda:
        "../envs/grokbench.yaml"
    params:
        results=lambda w, output: Path(output.metadata).parent,
        study=STUDY_FILE,
        overrides=as_json(dict(workflow.config_settings.config)),
        workflow=workflow.basedir,
        config=as_json(config),
        code=crate_export.code_fingerprint(),
    shell:
        "python -m grokbench crate {params.results:q} --config {params.study:q}"
        " --overrides {params.overrides:q} --workflow {params.workflow:q} > {log} 2>&1"


# Not a step of the study: the target that reports what exists of it so far, at any time (also while it
# runs). `snakemake --report report.html` (rule all) needs every report output of the finished study.
rule available:
    input:
        [str(p) for p in AVAILABLE],
        [
            report(str(p), caption="../report/run.rst", category="Runs", labels=labels)
            for p, labels in AVAILABLE_RUNS.items()
        ],
