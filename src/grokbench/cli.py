"""Command line: `python -m grokbench STAGE ...`, one subcommand per pipeline stage.

The Snakemake rules call these with explicit inputs, outputs and params; each can also be run by hand.
Dict-valued arguments (task parameters, a model spec, training settings) are JSON strings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path


def _parse_json(text: str, kind: type):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, kind):
        raise argparse.ArgumentTypeError(f"expected a JSON {'object' if kind is dict else 'list'}: {text!r}")
    return value


def _json(text: str) -> dict:
    return _parse_json(text, dict)


def _json_list(text: str) -> list:
    return _parse_json(text, list)


def cmd_validate(args) -> None:
    from . import study

    cfg = study.load(args.config)
    print(f"{args.config}: valid; {len(study.cells(cfg))} runs")


def cmd_data(args) -> None:
    from . import provenance
    from .tasks import generate
    from .tasks.base import write_dataset

    started = provenance.now()
    ds = generate(args.task, args.params)
    write_dataset(ds, args.out)
    counts = {f"{s}/{k}": int(n) for (s, k), n in ds.facts.groupby(["split", "kind"]).size().items()}
    if args.provenance:
        write_record("data", args.provenance, {"task": args.task, **args.params}, [], [args.out], started,
                     content_hash=ds.meta.get("content_hash"), counts=counts)  # fmt: skip
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def cmd_train(args) -> None:
    import torch

    from .train.resume import EXIT_INTERRUPTED, Interrupted
    from .train.run import run

    if args.threads:
        torch.set_num_threads(args.threads)
    cell = {
        "dataset": args.dataset,
        "model": args.model_name,
        "training": args.training_name,
        "seed": args.seed,
    }
    try:
        info = run(
            args.data,
            args.model,
            args.training,
            args.seed,
            args.out_dir,
            cell=cell,
            progress=not args.no_progress,
            checkpoint_every=args.checkpoint_every,
            checkpoint_minutes=args.checkpoint_minutes,
        )
    except Interrupted as e:
        print(f"grokbench train: {e}; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    segments = f" in {info['n_segments']} segments" if info["n_segments"] > 1 else ""
    status = f", diverged at step {info['diverged_step']}" if info["status"] == "diverged" else ""
    print(f"{info['run_id']}: {info['n_params']} parameters, {info['wall_seconds']:.1f} s{segments}{status}")


def cmd_train_pack(args) -> None:
    import torch

    from .train.pack import run_pack
    from .train.resume import EXIT_INTERRUPTED, Interrupted

    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.seeds) != len(args.out_dirs):
        raise SystemExit("grokbench train-pack: give one --out-dirs folder per --seeds seed")
    cells = [
        {"dataset": args.dataset, "model": args.model_name, "training": args.training_name, "seed": s}
        for s in args.seeds
    ]
    try:
        infos = run_pack(args.data, args.model, args.training, args.seeds, args.out_dirs, cells, args.pack_id,
                         args.pack_size or len(args.seeds), progress=not args.no_progress,
                         checkpoint_every=args.checkpoint_every,
                         checkpoint_minutes=args.checkpoint_minutes)  # fmt: skip
    except Interrupted as e:
        print(f"grokbench train-pack: {e}; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    for info in infos:
        status = f", diverged at step {info['diverged_step']}" if info["status"] == "diverged" else ""
        print(f"{info['run_id']}: {info['n_params']} parameters, {info['wall_seconds']:.1f} s (pack){status}")


def cmd_analyze(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import provenance
    from .io import atomic_path
    from .report.analysis import AnalysisConfig, summarize

    started = provenance.now()
    summary = summarize(args.runs, AnalysisConfig.from_dict(args.analysis))
    with atomic_path(args.out_parquet) as tmp:
        pq.write_table(pa.Table.from_pandas(summary, preserve_index=False), tmp)
    with atomic_path(args.out_csv) as tmp:
        summary.to_csv(tmp, index=False)
    if args.provenance:
        inputs = [d / name for d in args.runs for name in ("metrics.parquet", "run.json")]
        write_record("analysis", args.provenance, {"analysis": args.analysis}, inputs,
                     [args.out_parquet, args.out_csv], started)  # fmt: skip
    cols = ["run_id", "memorization_step", "ood_generalization_step", "grokked"]
    print(summary[cols].to_string(index=False))


def cmd_claims(args) -> None:
    import pandas as pd

    from . import provenance
    from .report.analysis import AnalysisConfig
    from .report.claims import judge, parse
    from .report.selection import settings_table
    from .report.tables import CLAIMS_COLUMNS, SELECTION_COLUMNS, markdown, write_table

    started = provenance.now()
    cfg = AnalysisConfig.from_dict(args.analysis)
    claims = [parse(c, f"claims[{i}]") for i, c in enumerate(args.claims)]
    summary = pd.read_parquet(args.summary)
    table = settings_table(summary, cfg)
    verdicts = judge(summary, table, claims, cfg.ood_split)
    out = args.out_dir
    outputs = []
    for name, df, columns in (("selection", table, SELECTION_COLUMNS), ("claims", verdicts, CLAIMS_COLUMNS)):
        write_table(df, out / f"{name}.csv", out / f"{name}.md", columns)
        outputs += [out / f"{name}.csv", out / f"{name}.md"]
    if args.provenance:
        config = {"analysis": args.analysis, "claims": args.claims}
        write_record("claims", args.provenance, config, [args.summary], outputs, started)
    print(markdown(verdicts, ["id", "verdict", "evidence"]))


def write_record(stage, path, config, inputs, outputs, started, **extra) -> None:
    """Write the provenance record of `outputs`, made by `stage` from `inputs` (paths)."""
    from . import provenance
    from .io import sha256_file, write_json

    def hashes(paths):
        return {str(p): sha256_file(p) for p in paths}

    record = provenance.record(stage, config=config, inputs=hashes(inputs), outputs=hashes(outputs),
                               started=started, finished=provenance.now(), **extra)  # fmt: skip
    write_json(path, record)


MECH_PLOTS = ("probes", "logit_lens", "tracing")  # `plot` figures of `mech` tables (report/mech_plots.py)


def cmd_plot(args) -> None:
    import pandas as pd

    from . import provenance
    from .report import plots

    started = provenance.now()
    summary = pd.read_parquet(args.summary)
    if args.figure == "sweep":
        plots.plot_sweep(summary, args.spec, args.pdf, args.png)
    elif args.figure == "weight_norms":
        if not args.norms:
            raise ValueError("plot weight_norms needs --norms (the runs' weight-norm tables)")
        norms = pd.concat([pd.read_parquet(p) for p in args.norms], ignore_index=True)
        plots.plot_weight_norms(summary, norms, args.pdf, args.png)
    elif args.figure in MECH_PLOTS:
        from .report import mech_plots

        if not args.tables:
            raise ValueError(f"plot {args.figure} needs --tables (the runs' {args.figure}.parquet, `mech`)")
        table = pd.concat([pd.read_parquet(p) for p in args.tables], ignore_index=True)
        if "run_id" not in table:
            raise ValueError(f"plot {args.figure}: the tables have no run_id (`mech --run-dir` of a run)")
        figure = {"probes": mech_plots.plot_probes, "logit_lens": mech_plots.plot_lens_transition,
                  "tracing": mech_plots.plot_tracing_transition}[args.figure]  # fmt: skip
        figure(summary, table, args.pdf, args.png)
    else:
        figure = {
            "curves": plots.plot_curves,
            "grokking": plots.plot_grokking,
            "survival": plots.plot_survival,
        }[args.figure]
        figure(summary, args.pdf, args.png)
    if args.provenance:
        inputs = [args.summary, *(Path(d) / "metrics.parquet" for d in summary["run_dir"])]
        inputs += args.norms if args.figure == "weight_norms" else []
        inputs += args.tables if args.figure in MECH_PLOTS else []
        config = {"figure": args.figure, "spec": args.spec}
        stage = "mech_plots" if args.figure in MECH_PLOTS else "plots"
        write_record(stage, args.provenance, config, inputs, [args.pdf, args.png], started)


def cmd_weight_norms(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import provenance
    from .io import atomic_path
    from .mech.weights import inputs, weight_norms

    started = provenance.now()
    table = weight_norms(args.run_dir)
    with atomic_path(args.out) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    if args.provenance:
        write_record("weight_norms", args.provenance, {"run_dir": str(args.run_dir)}, inputs(args.run_dir),
                     [args.out], started)  # fmt: skip
    total = table[table["level"] == "total"]
    print(f"{args.out}: {total['step'].nunique()} checkpoints, {len(table)} rows; total norm "
          f"{total['norm'].iloc[0]:.3g} at step {total['step'].iloc[0]} -> {total['norm'].iloc[-1]:.3g} at "
          f"step {total['step'].iloc[-1]}")  # fmt: skip


def cmd_mech(args) -> None:
    from . import provenance
    from .mech.analyze import RUN_INFO, analyze_checkpoint, analyze_run, checkpoint_files, write_tables

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = provenance.now()
    options = dict(max_facts=args.max_facts, heldout_fraction=args.heldout_fraction,
                   probe_method=args.probe_method, seed=args.seed, batch_size=args.batch_size)  # fmt: skip
    if args.checkpoint is not None:
        files = [args.checkpoint]
        tables = analyze_checkpoint(args.checkpoint, args.data, device=args.device, **options)
    else:
        files = checkpoint_files(args.run_dir)
        tables = analyze_run(args.run_dir, args.data, device=args.device, **options)
        info = args.run_dir / RUN_INFO
        files = [info, *files] if info.exists() else files  # the list of checkpoints and their hashes
    outputs = write_tables(tables, args.out_dir)
    if args.provenance:
        source = {"checkpoint": str(args.checkpoint)} if args.checkpoint else {"run_dir": str(args.run_dir)}
        write_record("mech", args.provenance, {**source, **options}, [args.data, *files], outputs, started)
    rows = ", ".join(f"{name} {len(df)} rows" for name, df in tables.items())
    print(f"{args.out_dir}: {tables['logit_lens']['step'].nunique()} checkpoint(s); {rows}")


def cmd_audit(args) -> int:
    from .provenance.audit import audit

    result = audit(args.path, args.root)
    print("\n".join(result.lines))
    if result.problems:
        print(f"\n{len(result.problems)} problem(s):", *result.problems, sep="\n  ")
        return 1
    print("\neverything matches its provenance record")
    return 0


def cmd_crate(args) -> None:
    from .provenance.crate import export

    result = export(args.results, config=args.config, overrides=args.overrides, out=args.out,
                    root=args.root, workflow_dir=args.workflow, license=args.license)  # fmt: skip
    for note in result.notes:
        print(f"note: {note} (the crate describes the recorded code)")
    print(f"{result.metadata}: {len(result.files)} files with their sha256, {result.actions} jobs")


def cmd_plan(args) -> None:
    from . import study
    from .plan import plan_study
    from .report.tables import markdown

    config = study.load(args.configfile)
    rows = plan_study(config, args.gpu, args.partition_limit)
    import pandas as pd

    df = pd.DataFrame(rows)
    df["tflops_per_step"] = df.pop("flops_per_step") / 1e12
    df["params_M"] = df.pop("params") / 1e6
    columns = [
        "run_id",
        "family",
        "params_M",
        "tflops_per_step",
        "steps",
        "gpu_hours",
        "runtime_min",
        "slots",
    ]
    print(f"{args.configfile}: {len(df)} training runs on one {args.gpu} each; partition limit "
          f"{args.partition_limit} min per job\n")  # fmt: skip
    print(markdown(df, columns))
    for source in df["throughput"].unique():
        print(f"throughput: {source}")
    print(f"\ntotal: {df['gpu_hours'].sum():.1f} GPU-hours, {int(df['slots'].sum())} job slots")


def cmd_status(args) -> None:
    from . import study
    from .status import show

    config = None
    if args.configfile is not None or Path("config.yaml").is_file():
        config = study.load(args.configfile or Path("config.yaml"))
    name = str(args.configfile or ("config.yaml" if config else args.results))
    results = args.results or Path(config["results"] if config else "results")
    show(results, config, name, args.stale, args.watch)


def cmd_bench_backends(args) -> None:
    import torch

    from .bench.backends import bench_backends

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; torch {torch.__version__}; {args.preset}, batch {args.batch}, seq {args.seq}")
    bench_backends(args.preset, args.batch, args.seq, args.vocab, args.repeats, args.families)


def cmd_bench_train(args) -> None:
    from .bench.train import bench_train

    bench_train(args.preset, args.batch, args.steps, args.warmup, args.seeds, data=args.data,
                peak=args.peak_tflops, compile=args.compile)  # fmt: skip


def cmd_gpu_check(args) -> int:
    import shlex

    from .bench.gpu_check import Check, assignments

    argv = ["python", "-m", "grokbench", "gpu-check", "--out", str(args.out), *(["--quick"] * args.quick)]
    for flag, values in (("--only", args.only), ("--limit", args.limit), ("--step-args", args.step_args)):
        argv += [flag, *values] if values else []
    for flag, value in (("--budget", args.budget), ("--pipeline-steps", args.pipeline_steps)):
        argv += [flag, str(value)] if value is not None else []
    argv += ["--work", str(args.work)] if args.work else []
    check = Check(args.out, quick=args.quick, only=args.only, limits=assignments(args.limit, float),
                  step_args=assignments(args.step_args, shlex.split), pipeline_steps=args.pipeline_steps,
                  budget=args.budget, work=args.work, argv=argv)  # fmt: skip
    status = check.run()
    print(f"{args.out}: " + ", ".join(f"{s.name} {s.status}" for s in check.steps))
    return status


class _Help(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; each option's default after its help, where it has one worth saying."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        quiet = default in (None, False, [], {}) or default is argparse.SUPPRESS
        if action.option_strings and not quiet and "default" not in text:
            text += f" (default: {default})"
        return text


def command(sub, name: str, func, help: str, description: str, example: str) -> argparse.ArgumentParser:
    """A subcommand with a one-line help, a description and an example."""
    text = f"{help[0].upper()}{help[1:]}.\n\n{textwrap.fill(description, 100)}"
    s = sub.add_parser(
        name, help=help, description=text, epilog=f"example:\n  {example}", formatter_class=_Help
    )
    s.set_defaults(func=func)
    return s


def _run_arguments(s: argparse.ArgumentParser) -> None:
    """The arguments `train` and `train-pack` share: what is trained, the record's names, saving."""
    s.add_argument("--data", required=True, type=Path, help="the dataset (.parquet) from `data`")
    s.add_argument(
        "--model", required=True, type=_json, help="model spec (JSON): family and its keys or a preset"
    )
    s.add_argument(
        "--training",
        type=_json,
        default={},
        help="training settings (JSON); unset ones take TrainConfig's defaults",
    )
    s.add_argument("--dataset", default="data", help="dataset name, for the record")
    s.add_argument("--model-name", default="model", help="model name, for the record")
    s.add_argument("--training-name", default="default", help="training name, for the record")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    s.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="save a resumable state every N steps (0: not by steps)",
    )
    s.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="save a resumable state after this much wall time (0: not by time); always on SIGTERM/SIGUSR1",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grokbench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = command(
        sub, "validate", cmd_validate, "check a study config before running it",
        "Reads the file exactly as snakemake --configfile does (grokbench.study.load) and prints the number "
        "of runs, or the first problem with the file, line or key it is at; exit status 2 on a problem.",
        "python -m grokbench validate config/paper.yaml",
    )  # fmt: skip
    s.add_argument("config", type=Path, help="the study file (YAML)")

    s = command(
        sub, "data", cmd_data, "generate one dataset (Parquet)",
        "Generates the facts of one task and writes them, with the vocabulary, parameters and a content "
        "hash in the Parquet metadata. Tasks and their parameters: grokbench/tasks/<task>.py.",
        "python -m grokbench data --task comparison --params '{\"n_entities\": 200, \"phi\": 45.0}' "
        "--out data.parquet",
    )  # fmt: skip
    s.add_argument("--task", required=True, help="comparison, composition, ordering or inverse")
    s.add_argument(
        "--params", type=_json, default={}, help="task parameters (JSON); unset: the task's defaults"
    )
    s.add_argument("--out", required=True, type=Path, help="the dataset file to write (.parquet)")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record (JSON)")

    s = command(
        sub, "train", cmd_train, "train one run",
        "Trains one model on one dataset with one training setting and seed; writes metrics.parquet, "
        "model.pt and run.json (status completed / diverged, every segment's cost) into --out-dir. Saves a "
        "resumable state periodically and on SIGTERM / SIGUSR1, then exits 75: the same command resumes it "
        "and ends with the metrics of an uninterrupted run. Training options: grokbench/train/config.py.",
        "python -m grokbench train --data data.parquet --model '{\"family\": \"gpt\", \"preset\": \"tiny\"}' "
        "--training '{\"steps\": 3000}' --out-dir run/",
    )  # fmt: skip
    _run_arguments(s)
    s.add_argument("--seed", type=int, default=0, help="run seed: initialization and batch order")
    s.add_argument("--out-dir", required=True, type=Path, help="the run's folder")

    s = command(
        sub, "train-pack", cmd_train_pack, "train several seeds together, as one vectorized model",
        "Trains one run per --seeds seed of one model, dataset and training setting in one process "
        "(grokbench/train/pack.py, train/packed.py); writes each run's metrics.parquet, model.pt, run.json "
        "into its --out-dirs folder, as `train` would for it alone, run.json recording the pack. The "
        "pipeline's jobs for a study's `pack.size` > 1. Saves and resumes as `train` does (exit 75).",
        "python -m grokbench train-pack --data data.parquet --model '{\"family\": \"gpt\", \"preset\": "
        "\"tiny\"}' --seeds 0 1 --out-dirs run0/ run1/ --pack-id data/gpt/default/pack0-1",
    )  # fmt: skip
    _run_arguments(s)
    s.add_argument("--seeds", required=True, type=int, nargs="+", help="the runs' seeds")
    s.add_argument("--out-dirs", required=True, type=Path, nargs="+", help="each seed's run folder, in order")
    s.add_argument("--pack-id", default="pack", help="the pack's id, for the record (grokbench.grid.Pack)")
    s.add_argument("--pack-size", type=int, help="the study's pack.size, for the record (default: the seeds)")

    s = command(
        sub, "analyze", cmd_analyze, "the summary table over runs",
        "One row per run: memorization and ID / OOD generalization steps, grokked, the after-memorization "
        "columns, status, final accuracies, every dataset parameter (data.*) and training setting (train.*); "
        "definitions in grokbench/report/analysis.py.",
        "python -m grokbench analyze --runs results/runs/*/*/*/seed* --out-parquet s.parquet --out-csv s.csv",
    )  # fmt: skip
    s.add_argument(
        "--runs",
        nargs="+",
        required=True,
        type=Path,
        help="run folders (each with run.json and metrics.parquet)",
    )
    s.add_argument("--analysis", type=_json, default={}, help="the config's analysis section (JSON)")
    s.add_argument("--out-parquet", required=True, type=Path, help="the summary as Parquet")
    s.add_argument("--out-csv", required=True, type=Path, help="the same as CSV")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record (JSON)")

    s = command(
        sub, "claims", cmd_claims, "choose hyperparameters per group and judge the study's claims",
        "Selects each group's setting on the validation split (grokbench/report/selection.py), then judges "
        "every claim on the test split (grokbench/report/claims.py); writes selection.{csv,md} and "
        "claims.{csv,md}.",
        "python -m grokbench claims --summary results/summary/summary.parquet --claims '[...]' --out-dir c/",
    )  # fmt: skip
    s.add_argument("--summary", required=True, type=Path, help="the summary (Parquet) from `analyze`")
    s.add_argument("--analysis", type=_json, default={}, help="the config's analysis section (JSON)")
    s.add_argument("--claims", type=_json_list, default=[], help="the config's claims (JSON list)")
    s.add_argument("--out-dir", required=True, type=Path, help="receives selection.{csv,md}, claims.{csv,md}")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record (JSON)")

    s = command(
        sub, "plot", cmd_plot, "render one figure from the summary",
        "curves: accuracy per split vs step, a panel per cell; grokking: steps to memorize vs to "
        "generalize; survival: Kaplan-Meier fraction generalized OOD by step; sweep: steps to a threshold "
        "vs a swept setting (--spec as in the config's sweeps); weight_norms: weight norm (total and per "
        "module group) vs step at the runs' checkpoints, transitions marked (--norms from `weight-norms`); "
        "probes: probe accuracy on held-out ID and OOD entities vs step; logit_lens, tracing: heatmaps of "
        "one run per cell before and after its OOD transition (--tables from `mech`, the figure's name). "
        "Writes PDF and PNG.",
        "python -m grokbench plot curves --summary results/summary/summary.parquet --pdf c.pdf --png c.png",
    )  # fmt: skip
    s.add_argument(
        "figure",
        choices=["curves", "grokking", "survival", "sweep", "weight_norms", *MECH_PLOTS],
        help="which figure",
    )
    s.add_argument("--spec", type=_json, default={}, help="sweep figure: x, y, hue, filters (JSON)")
    s.add_argument(
        "--norms",
        nargs="+",
        type=Path,
        default=[],
        help="weight_norms figure only: the runs' weight_norms.parquet tables (from `weight-norms`)",
    )
    s.add_argument(
        "--tables",
        nargs="+",
        type=Path,
        default=[],
        help="probes, logit_lens, tracing figures: the runs' tables of that name (from `mech`)",
    )
    s.add_argument("--summary", required=True, type=Path, help="the summary (Parquet) from `analyze`")
    s.add_argument("--pdf", required=True, type=Path, help="the figure as PDF")
    s.add_argument("--png", required=True, type=Path, help="the figure as PNG")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record (JSON)")

    s = command(
        sub, "weight-norms", cmd_weight_norms, "weight norms of one run at each of its checkpoints (Parquet)",
        "Reads the checkpoints a run kept (training `checkpoints`; grokbench/train/checkpoints.py), listed "
        "in its run.json, checks each file's sha256 against the list, and writes one row per checkpoint "
        "and module, top-level module group and total: step, reason, level, module, group, L2 norm, number "
        "of parameters, with the run's identity (run_id, dataset, model, training, seed, family). "
        "Parameters only (no buffers), a tied or shared one counted once. grokbench/mech/weights.py.",
        "python -m grokbench weight-norms --run-dir results/runs/a/gpt/default/seed0 "
        "--out results/mech/a/gpt/default/seed0/weight_norms.parquet",
    )  # fmt: skip
    s.add_argument(
        "--run-dir",
        required=True,
        type=Path,
        help="the run's folder, with run.json and checkpoints/ (from `train` with checkpoints on)",
    )
    s.add_argument("--out", required=True, type=Path, help="the table to write (.parquet)")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record (JSON)")

    s = command(
        sub, "mech", cmd_mech, "logit lens, linear probes and causal tracing of a checkpoint or of a run",
        "Rebuilds the model of a weights file (model.pt or a checkpoint, {model, model_spec, step}) for the "
        "dataset and writes three tables into OUT_DIR: logit_lens.parquet (probability and rank of the "
        "answer, and for composition of the bridge entity, read off every layer and input position through "
        "the final norm and head), probes.parquet (logistic-regression probes per layer decoding an "
        "entity's attribute value (comparison) or the bridge entity (composition), fitted on ID entities, "
        "scored on held-out ID and OOD ones, with a shuffled-label control) and tracing.parquet (activation "
        "patching: one entity corrupted, one layer x position restored from the clean run, recovery of the "
        "answer). Layer 0 is the embedding, layer l the output of the l-th block application. With "
        "--run-dir, every checkpoint its run.json lists (else model.pt), a row per checkpoint and `step`. "
        "grokbench/mech/.",
        "python -m grokbench mech --data results/data/a.parquet --run-dir results/runs/a/gpt/default/seed0 "
        "--out-dir results/mech/a/gpt/default/seed0",
    )  # fmt: skip
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="one weights file (model.pt or checkpoints/step*.pt)")
    what.add_argument("--run-dir", type=Path, help="a run folder: its checkpoints (run.json), else model.pt")
    s.add_argument("--data", required=True, type=Path, help="the dataset the run trained on (.parquet)")
    s.add_argument("--out-dir", required=True, type=Path, help="folder for logit_lens/probes/tracing.parquet")
    s.add_argument("--max-facts", type=int, default=256,
                   help="inferred facts per split (train, test ID, test OOD) for the lens and tracing, drawn "
                   "with --seed (default: 256)")  # fmt: skip
    s.add_argument("--heldout-fraction", type=float, default=0.2,
                   help="share of the ID entities held out from the probes' fit (default: 0.2)")  # fmt: skip
    s.add_argument("--probe-method", choices=["auto", "logistic", "ridge"], default="auto",
                   help="probe fit: logistic (L-BFGS), ridge (closed form), auto: logistic up to 64 classes "
                   "(default: auto)")  # fmt: skip
    s.add_argument(
        "--seed", type=int, default=0, help="of the facts, held-out entities, corruptions (default: 0)"
    )
    s.add_argument("--device", default="cpu", help="torch device for the forwards (default: cpu)")
    s.add_argument("--batch-size", type=int, default=256, help="inputs per forward (default: 256)")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record (JSON)")

    s = command(
        sub, "audit", cmd_audit, "check an output against the provenance of everything it came from",
        "Walks back from PATH's record through every input's record, rehashes each file and compares each "
        "stage's code fingerprint with the code now; prints CHANGED, MISSING and CODE lines and exits 1 if "
        "there is any.",
        "python -m grokbench audit results/claims/claims.csv",
    )  # fmt: skip
    s.add_argument("path", type=Path, help="a figure, summary, claims table, run file or dataset")
    s.add_argument("--root", type=Path, default=Path("."), help="folder the recorded paths are relative to")

    s = sub.add_parser(
        "crate",
        help="export a finished study as a Workflow Run RO-Crate (RESULTS/ro-crate-metadata.json)",
        description="The study's files in place, each with its sha256, one CreateAction per provenance "
        "record linking its outputs to its inputs, the workflow and the study as validated (RESULTS/crate/). "
        "Refuses files that do not match their records and, with --config, an unfinished study.",
        epilog="example:\n  python -m grokbench crate results --config config.yaml --license CC-BY-4.0",
        formatter_class=_Help,
    )
    s.add_argument("results", type=Path, help="the study's results folder (the crate root)")
    s.add_argument("--config", type=Path, help="the study file: the crate holds it as validated, and every "
                   "output of the study must be there (default: every record found in RESULTS)")  # fmt: skip
    s.add_argument("--overrides", type=_json, default={}, help="Snakemake --config KEY=VALUE pairs (JSON)")
    s.add_argument("--out", type=Path, help="crate root: RESULTS (default) or a folder above it")
    s.add_argument("--root", type=Path, help="folder the recorded paths are relative to (default: inferred)")
    s.add_argument("--workflow", type=Path, help="folder of the Snakefile that ran it (default: this one's)")
    s.add_argument("--license", help="of the crate's content: a URL or a text (default: none stated)")
    s.set_defaults(func=cmd_crate)

    s = sub.add_parser(
        "plan",
        help="cost of a study before submitting it: FLOPs, GPU-hours and SLURM runtime per training run",
        description="Per training run: parameters, FLOPs per step (counted), steps, estimated GPU-hours on "
        "one GPU of the named kind and the runtime its SLURM job requests; and the total. Example: "
        "python -m grokbench plan --configfile config/paper.yaml --gpu H100",
        formatter_class=_Help,
    )
    s.add_argument("--configfile", required=True, type=Path, help="the study config (YAML)")
    s.add_argument("--gpu", default="H200", help="GPU kind, matched against known peaks (default: H200)")
    s.add_argument(
        "--partition-limit",
        type=int,
        default=2880,
        help="the partition's time limit per job, minutes (default: 2880, i.e. 48 h); longer runs take "
        "several slots, each resuming the last",
    )
    s.set_defaults(func=cmd_plan)

    s = command(
        sub, "status", cmd_status, "every run of a study: its state, step, accuracies so far, time left",
        "One line per run of the study's grid (and per run folder found under RESULTS/runs that the study "
        "does not name): pending, training, stopped (state saved by a stop signal; resumes when rerun), "
        "done (stopped early included), diverged or failed; step of total; latest train / ID / OOD "
        "accuracy (the analysis section's splits); the steps at which it memorized and generalized ID / "
        "OOD so far (its thresholds); steps per second and time left. Then how many runs are in each "
        "state. Read from files only, so it works on a cluster's shared filesystem, during a study and "
        "after it: run.json (done, diverged), the live progress.json each training process rewrites "
        "after every evaluation and at least every 30 s (deleted once the run's outputs are written), and "
        "the Snakemake log RESULTS/logs/train/<run_id>.log. A run is failed when progress.json says its "
        "process ended on an error, when its log ends with a traceback written after progress.json's last "
        "update, or when progress.json has not been updated for --stale seconds (the process was killed; "
        "a Snakemake retry resumes it and it shows as training again). grokbench/status.py.",
        "python -m grokbench status --configfile config/paper.yaml --watch 30",
    )  # fmt: skip
    s.add_argument(
        "results",
        nargs="?",
        type=Path,
        help="the study's results folder (default: the config's `results`, else ./results)",
    )
    s.add_argument(
        "--configfile",
        type=Path,
        help="the study config (YAML) whose runs to list (default: ./config.yaml where there is one; "
        "without a config, only the runs found under RESULTS/runs)",
    )
    s.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=10.0,
        metavar="SECONDS",
        help="redraw every SECONDS (10 if none given) until interrupted with Ctrl-C (default: print once)",
    )
    s.add_argument(
        "--stale",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a training run whose progress.json has not been updated for this long is taken as failed "
        "(killed)",
    )

    s = command(
        sub, "bench-backends", cmd_bench_backends, "time each family's training step per backend",
        "Forward + backward + AdamW step of each family with its pure-PyTorch reference and, on CUDA where "
        "the package imports, its kernel backend (flash-linear-attention, mamba-ssm); prints ms per step "
        "and the ratio.",
        "python -m grokbench bench-backends --preset paper --batch 512 --seq 6",
    )  # fmt: skip
    s.add_argument("--preset", default="tiny", help="size preset: tiny or paper")
    s.add_argument("--batch", type=int, default=128, help="batch size")
    s.add_argument("--seq", type=int, default=6, help="sequence length")
    s.add_argument("--vocab", type=int, default=1107, help="vocabulary size")
    s.add_argument("--repeats", type=int, default=10, help="timed steps per family and backend")
    s.add_argument("--families", nargs="*", help="only these families (default: all)")

    s = command(
        sub, "bench-train", cmd_bench_train, "training throughput: the seed study's setup vs grokbench",
        "The seed study's setup (transformers' GPT2LMHeadModel with GPT-2's BPE vocabulary, fp16 + "
        "GradScaler on CUDA) against grokbench's trainer, single and packed, on the same data and shape in "
        "one process; prints examples/s, the ratio to the reference and MFU (grokbench/bench/train.py).",
        "python -m grokbench bench-train --preset tiny --steps 20 --batch 64 --seeds 2",
    )  # fmt: skip
    s.add_argument("--preset", help="gpt size preset (default: paper on CUDA, tiny on CPU)")
    s.add_argument("--batch", type=int, help="batch per run (default: 512 on CUDA, 64 on CPU)")
    s.add_argument("--steps", type=int, help="timed steps (default: 100 on CUDA, 20 on CPU)")
    s.add_argument("--warmup", type=int, help="untimed steps first (default: 20 on CUDA, 5 on CPU)")
    s.add_argument("--seeds", type=int, help="runs trained packed (default: 4 on CUDA, 2 on CPU)")
    s.add_argument("--data", type=_json, help="comparison-task parameters (JSON) over the defaults")
    s.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: by GPU name)")
    s.add_argument("--compile", action="store_true", help="torch.compile the grokbench models")

    s = sub.add_parser(
        "gpu-check",
        help="every GPU check in one command (CUDA tests, benchmarks, a short pipeline vs CPU), one report",
        description="Runs, each under a time limit: pytest -m gpu, bench-backends, bench-train, a short "
        "pipeline run of the default study and a CPU rerun of its first cell compared with it; writes one "
        "Markdown report, updated after every step (src/grokbench/bench/gpu_check.py). Tiny steps with "
        "--quick or without CUDA. Exit status 1 if any step did not pass.",
        epilog="example:\n  scripts/gpu-check.sh   # = python -m grokbench gpu-check --out $OUT/gpu-check.md",
        formatter_class=_Help,
    )
    s.add_argument("--out", type=Path, default=Path("results/gpu-check.md"), help="the report (Markdown)")
    s.add_argument("--quick", action="store_true", help="tiny steps (always so without CUDA)")
    s.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps")
    s.add_argument("--limit", nargs="+", default=[], metavar="STEP=SECONDS", help="a step's time limit")
    s.add_argument("--step-args", nargs="+", default=[], metavar="STEP=ARGS",
                   help="arguments appended to a step's command, e.g. 'bench-train=--seeds 8'")  # fmt: skip
    s.add_argument("--budget", type=float, help="seconds for all steps (default: 480; 360 with --quick)")
    s.add_argument("--pipeline-steps", type=int, help="training steps of the pipeline step (default: 300)")
    s.add_argument("--work", type=Path, help="keep the work files (workflow copy, logs) here")
    s.set_defaults(func=cmd_gpu_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "threads", None):
        # numpy's OpenBLAS (e.g. under the probes' L-BFGS) starts a thread per core unless told, beside
        # torch's --threads: two jobs on two cores then oversubscribe them. Only before numpy is imported
        # (a fresh `python -m grokbench`: the commands import it lazily); the environment's value wins.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    try:
        status = args.func(args)
    except ValueError as e:  # bad input: a clear message, no traceback
        print(f"grokbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    return status or 0
