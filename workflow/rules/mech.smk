# Weights across training, for studies that keep checkpoints (a training setting's `checkpoints`;
# grokbench/train/checkpoints.py): per such run a weight-norm table (rule weight_norms) and the logit lens,
# probe and tracing tables of every checkpoint (rule mech, grokbench/mech/), and a figure over all runs of
# each (weight_norms, probes, logit_lens, tracing; grokbench.report.MECH_FIGURES). Only those runs' jobs
# are requested (common.smk's mech_outputs, in rule all), so a study without checkpoints has the same DAG
# as before.
#
# The checkpoint files are not declared outputs of rule train: Snakemake deletes a job's declared outputs
# before running it again, and a resumed run needs the checkpoints it saved before its interruption (they
# are kept like resume.pt). run.json, a declared output, lists every file with its sha256 and names them
# among its outputs (grokbench audit rehashes them); a rerun of the training rewrites run.json, which
# reruns the tables, and `weight-norms` refuses a file whose hash is not the listed one.
rule weight_norms:
    input:
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/run.json",
    output:
        parquet=f"{RESULTS}/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/weight_norms.parquet",
        provenance=f"{RESULTS}/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/weight_norms.provenance.json",
    log:
        f"{RESULTS}/logs/weight_norms/{{dataset}}/{{model}}/{{training}}/seed{{seed}}.log",
    conda:
        "../envs/grokbench.yaml"
    params:
        run_dir=lambda w, input: Path(input.info).parent,
        code=code_fingerprint("weight_norms"),
    shell:
        "python -m grokbench weight-norms --run-dir {params.run_dir} --out {output.parquet}"
        " --provenance {output.provenance} > {log} 2>&1"


rule figure_weight_norms:
    input:
        summary=f"{RESULTS}/summary/summary.parquet",
        norms=weight_norm_tables(),
    output:
        pdf=f"{RESULTS}/figures/weight_norms.pdf",
        png=report(
            f"{RESULTS}/figures/weight_norms.png",
            caption="../report/weight_norms.rst",
            category="Figures",
        ),
        provenance=report(
            f"{RESULTS}/figures/weight_norms.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    log:
        f"{RESULTS}/logs/figures/weight_norms.log",
    conda:
        "../envs/grokbench.yaml"
    params:
        code=code_fingerprint("plots"),
    shell:
        "python -m grokbench plot weight_norms --summary {input.summary} --norms {input.norms}"
        " --pdf {output.pdf} --png {output.png} --provenance {output.provenance} > {log} 2>&1"


# Logit lens, linear probes and causal tracing at each checkpoint of one run, on the dataset it trained on
# (`grokbench mech --run-dir`): one row per checkpoint step in each table, the run's identity first. One
# provenance record for the three tables (grokbench audit finds it beside them); its inputs are the
# dataset, run.json and the checkpoints, each file checked against the hash run.json lists.
rule mech:
    input:
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/run.json",
        data=f"{RESULTS}/data/{{dataset}}.parquet",
    output:
        logit_lens=f"{RESULTS}/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/logit_lens.parquet",
        probes=f"{RESULTS}/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/probes.parquet",
        tracing=f"{RESULTS}/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/tracing.parquet",
        provenance=f"{RESULTS}/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/mech.provenance.json",
    log:
        f"{RESULTS}/logs/mech/{{dataset}}/{{model}}/{{training}}/seed{{seed}}.log",
    conda:
        "../envs/grokbench.yaml"
    threads: config["threads"]
    params:
        run_dir=lambda w, input: Path(input.info).parent,
        out_dir=lambda w, output: Path(output.probes).parent,
        max_facts=256,  # inferred facts per split for the lens and tracing (grokbench mech --help)
        seed=0,  # of the facts drawn, the probes' held-out entities and the corruptions
        code=code_fingerprint("mech"),
    shell:
        "python -m grokbench mech --data {input.data} --run-dir {params.run_dir}"
        " --out-dir {params.out_dir} --max-facts {params.max_facts} --seed {params.seed}"
        " --threads {threads} --provenance {output.provenance} > {log} 2>&1"


# One figure per mech table over every checkpointed run's table (grokbench/report/mech_plots.py): probes
# (probe accuracy vs step), logit_lens and tracing (heatmaps before and after the OOD transition).
for _name in ("probes", "logit_lens", "tracing"):

    rule:
        name:
            f"figure_{_name}"
        input:
            summary=f"{RESULTS}/summary/summary.parquet",
            tables=mech_tables(_name),
        output:
            pdf=f"{RESULTS}/figures/{_name}.pdf",
            png=report(
                f"{RESULTS}/figures/{_name}.png",
                caption=f"../report/{_name}.rst",
                category="Figures",
            ),
            provenance=report(
                f"{RESULTS}/figures/{_name}.provenance.json",
                caption="../report/provenance.rst",
                category="Provenance",
            ),
        log:
            f"{RESULTS}/logs/figures/{_name}.log",
        conda:
            "../envs/grokbench.yaml"
        params:
            figure=_name,
            code=code_fingerprint("mech_plots"),
        shell:
            "python -m grokbench plot {params.figure} --summary {input.summary} --tables {input.tables}"
            " --pdf {output.pdf} --png {output.png} --provenance {output.provenance} > {log} 2>&1"
