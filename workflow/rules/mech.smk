# Weights across training, for studies that keep checkpoints (a training setting's `checkpoints`;
# grokbench/train/checkpoints.py): one weight-norm table per such run and the weight_norms figure over
# them. Only those runs' jobs are requested (common.smk's mech_outputs, in rule all), so a study without
# checkpoints has the same DAG as before.
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
