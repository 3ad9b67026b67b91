rule dataset:
    output:
        data=f"{RESULTS}/data/{{dataset}}.parquet",
        provenance=report(
            f"{RESULTS}/data/{{dataset}}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    params:
        task=lambda w: config["datasets"][w.dataset]["task"],
        params=lambda w: as_json(
            {k: v for k, v in config["datasets"][w.dataset].items() if k != "task"}
        ),
        code=code_fingerprint("data"),
    conda:
        "../envs/grokbench.yaml"
    log:
        f"{RESULTS}/logs/data/{{dataset}}.log",
    shell:
        "python -m grokbench data --task {params.task} --params {params.params:q}"
        " --out {output.data} --provenance {output.provenance} > {log} 2>&1"
