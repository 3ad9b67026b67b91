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
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        "../envs/grokbench.yaml"
    params:
        runs=lambda w, input: [str(Path(p).parent) for p in input.info],
        analysis=as_json(config["analysis"]),
        code=code_fingerprint("analysis"),
    shell:
        "python -m grokbench analyze --runs {params.runs} --analysis {params.analysis:q}"
        " --out-parquet {output.parquet} --out-csv {output.csv}"
        " --provenance {output.provenance} > {log} 2>&1"


# Hyperparameter selection per group (on the validation split) and the claims report (on the test split).
rule claims:
    input:
        summary=f"{RESULTS}/summary/summary.parquet",
    output:
        claims=report(
            f"{RESULTS}/claims/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
        claims_md=f"{RESULTS}/claims/claims.md",
        selection=report(
            f"{RESULTS}/claims/selection.csv",
            caption="../report/selection.rst",
            category="Selection",
        ),
        selection_md=f"{RESULTS}/claims/selection.md",
        provenance=report(
            f"{RESULTS}/claims/claims.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    log:
        f"{RESULTS}/logs/claims.log",
    conda:
        "../envs/grokbench.yaml"
    params:
        analysis=as_json(config["analysis"]),
        claims=json.dumps(config["claims"], sort_keys=True, separators=(",", ":")),
        out_dir=lambda w, output: Path(output.claims).parent,
        code=code_fingerprint("claims"),
    shell:
        "python -m grokbench claims --summary {input.summary} --analysis {params.analysis:q}"
        " --claims {params.claims:q} --out-dir {params.out_dir} --provenance {output.provenance} > {log} 2>&1"
