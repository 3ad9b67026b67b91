rule summary:
    input:
        metrics=run_outputs("metrics.parquet"),
        info=run_outputs("run.json"),
    output:
        parquet=f"{RESULTS}/summary/summary.parquet",
        csv=report(
            f"{RESULTS}/summary/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        provenance=report(
            f"{RESULTS}/summary/summary.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    params:
        runs=lambda w, input: [str(Path(p).parent) for p in input.info],
        analysis=as_json(config["analysis"]),
        code=code_fingerprint("analysis"),
    conda:
        "../envs/grokbench.yaml"
    log:
        f"{RESULTS}/logs/summary.log",
    shell:
        "python -m grokbench analyze --runs {params.runs} --analysis {params.analysis:q}"
        " --out-parquet {output.parquet} --out-csv {output.csv}"
        " --provenance {output.provenance} > {log} 2>&1"
