rule train:
    input:
        data=f"{RESULTS}/data/{{dataset}}.parquet",
    output:
        metrics=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/metrics.parquet",
        model=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/model.pt",
        info=f"{RESULTS}/runs/{{dataset}}/{{model}}/{{training}}/seed{{seed}}/run.json",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{model}}/{{training}}/seed{{seed}}.log",
    # costlier runs start first, the per-run analyses after (common.smk's train_priority)
    priority: lambda w: train_priority(w.model, w.training)
    # A job stopped by its time limit saves the run's state and fails; Snakemake resubmits it and the run
    # resumes, up to GROKBENCH_TRAIN_ATTEMPTS jobs (default 5; profiles/default/config.yaml). Only the main
    # Snakemake retries: the one inside a cluster job would rerun in the job whose time is up.
    retries: (int(os.environ.get("GROKBENCH_TRAIN_ATTEMPTS") or 5) - 1) if workflow.is_main_process else 0
    # On a cluster, training runs may share one job: see GROKBENCH_RUNS_PER_JOB in profiles/default/.
    # Locally, groups are ignored.
    group:
        "train"
    conda:
        "../envs/grokbench.yaml"
    threads: config["threads"]
    params:
        model=lambda w: as_json(config["models"][w.model]),
        training=lambda w: as_json(config["training"][w.training]),
        out_dir=lambda w, output: Path(output.info).parent,
        code=code_fingerprint("train"),
    # exec: the trainer replaces the shell, so that the SIGTERM a cluster sends before a time limit reaches
    # it with no shell in between (bash would die of it at once and the job would look failed mid-save).
    shell:
        "exec python -m grokbench train --data {input.data} --model {params.model:q}"
        " --training {params.training:q} --seed {wildcards.seed} --out-dir {params.out_dir}"
        " --dataset {wildcards.dataset} --model-name {wildcards.model}"
        " --training-name {wildcards.training} --threads {threads} > {log} 2>&1"


# Packs (config `pack.size` > 1; grokbench/train/pack.py): one job trains the seeds of one block together
# and writes each member's outputs into its run folder, as rule `train` would for it alone. A rule without
# wildcards per pack: Snakemake prefers it to `train` for its members' files. Retries and resume as for
# `train`: a pack stopped by its time limit saves its state (pack-resume.pt in its first member's folder)
# and its retry resumes it. Resources: the profile's `set-resources: train:` (train_resources()).
for _pack in PACKS:

    rule:
        name:
            pack_rule_name(_pack)
        input:
            data=f"{RESULTS}/data/{_pack.dataset}.parquet",
        output:
            pack_outputs(_pack),
        log:
            f"{RESULTS}/logs/train/{_pack.pack_id}.log",
        priority: train_priority(_pack.model, _pack.training)
        retries: (int(os.environ.get("GROKBENCH_TRAIN_ATTEMPTS") or 5) - 1) if workflow.is_main_process else 0
        group:
            "train"
        conda:
            "../envs/grokbench.yaml"
        threads: train_threads()
        resources:
            **train_resources(),
        params:
            model=as_json(config["models"][_pack.model]),
            training=as_json(config["training"][_pack.training]),
            seeds=list(_pack.seeds),
            out_dirs=[run_dir(c) for c in _pack.cells],
            pack_id=_pack.pack_id,
            size=_pack.size,
            dataset=_pack.dataset,
            model_name=_pack.model,
            training_name=_pack.training,
            code=code_fingerprint("train"),
        shell:
            "exec python -m grokbench train-pack --data {input.data} --model {params.model:q}"
            " --training {params.training:q} --seeds {params.seeds} --out-dirs {params.out_dirs:q}"
            " --pack-id {params.pack_id:q} --pack-size {params.size} --dataset {params.dataset}"
            " --model-name {params.model_name} --training-name {params.training_name:q}"
            " --threads {threads} > {log} 2>&1"
