rule dataset:
    output:
        data=f"{RESULTS}/data/{{dataset}}.parquet",
        provenance=report(
            f"{RESULTS}/data/{{dataset}}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    log:
        f"{RESULTS}/logs/data/{{dataset}}.log",
    conda:
        "../envs/grokbench.yaml"
    params:
        task=lambda w: config["datasets"][w.dataset]["task"],
        params=lambda w: as_json({k: v for k, v in config["datasets"][w.dataset].items() if k != "task"}),
        code=code_fingerprint("data"),
    shell:
        "python -m grokbench data --task {params.task} --params {params.params:q}"
        " --out {output.data} --provenance {output.provenance} > {log} 2>&1"
