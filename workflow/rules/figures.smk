# One rule per figure, so that each figure carries its own caption in the report: the fixed figures
# (FIGURES) and one per sweep of the config's `sweeps` section (figure_sweep_<name>).
for _name, _figure in figure_specs().items():

    rule:
        name:
            f"figure_{_name}"
        input:
            summary=f"{RESULTS}/summary/summary.parquet",
            metrics=run_outputs("metrics.parquet"),
        output:
            pdf=f"{RESULTS}/figures/{_name}.pdf",
            png=report(
                f"{RESULTS}/figures/{_name}.png",
                caption=_figure["caption"],
                category=_figure["category"],
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
            figure=_figure["kind"],
            spec=as_json(_figure["spec"]),
            code=code_fingerprint("plots"),
        shell:
            "python -m grokbench plot {params.figure} --spec {params.spec:q} --summary {input.summary}"
            " --pdf {output.pdf} --png {output.png} --provenance {output.provenance} > {log} 2>&1"
