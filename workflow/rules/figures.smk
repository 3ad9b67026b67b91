rule figure:
    input:
        summary=f"{RESULTS}/summary/summary.parquet",
        metrics=run_outputs("metrics.parquet"),
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/{figure}.rst",
            category="Figures",
        ),
    wildcard_constraints:
        figure="|".join(FIGURES),
    params:
        code=code_fingerprint("plots"),
    conda:
        "../envs/grokbench.yaml"
    log:
        f"{RESULTS}/logs/figures/{{figure}}.log",
    shell:
        "python -m grokbench plot {wildcards.figure} --summary {input.summary}"
        " --pdf {output.pdf} --png {output.png} > {log} 2>&1"
