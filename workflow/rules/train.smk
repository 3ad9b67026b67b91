rule train:
    input:
        data=f"{RESULTS}/data/{{dataset}}.parquet",
    output:
        metrics=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/metrics.parquet",
        model=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/model.pt",
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/run.json",
    params:
        model=lambda w: as_json(config["models"][w.model]),
        training=lambda w: as_json(config["training"][w.training]),
        out_dir=lambda w, output: Path(output.info).parent,
        code=code_fingerprint("train"),
    threads: config["threads"]
    # On a cluster, training runs may share one job: see GROKBENCH_RUNS_PER_JOB in profiles/default/.
    # Locally, groups are ignored.
    group:
        "train"
    conda:
        "../envs/grokbench.yaml"
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{model}}/{{training}}/seed{{seed}}.log",
    shell:
        "python -m grokbench train --data {input.data} --model {params.model:q}"
        " --training {params.training:q} --seed {wildcards.seed} --out-dir {params.out_dir}"
        " --dataset {wildcards.dataset} --model-name {wildcards.model}"
        " --training-name {wildcards.training} --threads {threads} > {log} 2>&1"
