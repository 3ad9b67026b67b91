# One rule per figure, so that each figure carries its own caption in the report.
for _figure in FIGURES:

    rule:
        name:
            f"figure_{_figure}"
        input:
            summary=f"{RESULTS}/summary/summary.parquet",
            metrics=run_outputs("metrics.parquet"),
        output:
            pdf=f"{RESULTS}/figures/{_figure}.pdf",
            png=report(
                f"{RESULTS}/figures/{_figure}.png",
                caption=f"../report/{_figure}.rst",
                category="Figures",
            ),
            provenance=report(
                f"{RESULTS}/figures/{_figure}.provenance.json",
                caption="../report/provenance.rst",
                category="Provenance",
            ),
        params:
            figure=_figure,
            code=code_fingerprint("plots"),
        conda:
            "../envs/grokbench.yaml"
        log:
            f"{RESULTS}/logs/figures/{_figure}.log",
        shell:
            "python -m grokbench plot {params.figure} --summary {input.summary}"
            " --pdf {output.pdf} --png {output.png} --provenance {output.provenance} > {log} 2>&1"


# One rule per sweep figure of the config's `sweeps` section.
for _sweep, _spec in SWEEPS.items():

    rule:
        name:
            f"figure_sweep_{_sweep}"
        input:
            summary=f"{RESULTS}/summary/summary.parquet",
            metrics=run_outputs("metrics.parquet"),
        output:
            pdf=f"{RESULTS}/figures/sweep_{_sweep}.pdf",
            png=report(
                f"{RESULTS}/figures/sweep_{_sweep}.png",
                caption="../report/sweep.rst",
                category="Sweeps",
            ),
            provenance=report(
                f"{RESULTS}/figures/sweep_{_sweep}.provenance.json",
                caption="../report/provenance.rst",
                category="Provenance",
            ),
        params:
            spec=as_json(_spec),
            code=code_fingerprint("plots"),
        conda:
            "../envs/grokbench.yaml"
        log:
            f"{RESULTS}/logs/figures/sweep_{_sweep}.log",
        shell:
            "python -m grokbench plot sweep --spec {params.spec:q} --summary {input.summary}"
            " --pdf {output.pdf} --png {output.png} --provenance {output.provenance} > {log} 2>&1"
