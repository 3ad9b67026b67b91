"""Command line: `python -m grokbench STAGE ...`, one subcommand per pipeline stage.

The Snakemake rules call these with explicit inputs, outputs and params; each can also be run by hand.
Dict-valued arguments (task parameters, a model spec, training settings) are JSON strings.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    print(f"{info['run_id']}: {info['n_params']} parameters, {info['wall_seconds']:.1f} s")


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


def cmd_plot(args) -> None:
    import pandas as pd

    from . import provenance
    from .report import plots

    started = provenance.now()
    summary = pd.read_parquet(args.summary)
    if args.figure == "sweep":
        plots.plot_sweep(summary, args.spec, args.pdf, args.png)
    else:
        figure = {
            "curves": plots.plot_curves,
            "grokking": plots.plot_grokking,
            "survival": plots.plot_survival,
        }[args.figure]
        figure(summary, args.pdf, args.png)
    if args.provenance:
        inputs = [args.summary, *(Path(d) / "metrics.parquet" for d in summary["run_dir"])]
        config = {"figure": args.figure, "spec": args.spec}
        write_record("plots", args.provenance, config, inputs, [args.pdf, args.png], started)


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grokbench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="validate a study config")
    s.add_argument("config", type=Path)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("data", help="generate one dataset (Parquet)")
    s.add_argument("--task", required=True)
    s.add_argument("--params", type=_json, default={})
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--provenance", type=Path)
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("train", help="train one run")
    s.add_argument("--data", required=True, type=Path)
    s.add_argument("--model", required=True, type=_json, help="model spec (JSON)")
    s.add_argument("--training", type=_json, default={}, help="training settings (JSON)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out-dir", required=True, type=Path)
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
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("analyze", help="summary table over runs")
    s.add_argument("--runs", nargs="+", required=True, type=Path, help="run folders")
    s.add_argument("--analysis", type=_json, default={})
    s.add_argument("--out-parquet", required=True, type=Path)
    s.add_argument("--out-csv", required=True, type=Path)
    s.add_argument("--provenance", type=Path, help="where to write the provenance record")
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("claims", help="choose hyperparameters per group and judge the study's claims")
    s.add_argument("--summary", required=True, type=Path)
    s.add_argument("--analysis", type=_json, default={})
    s.add_argument("--claims", type=_json_list, default=[], help="the config's claims (JSON list)")
    s.add_argument("--out-dir", required=True, type=Path, help="receives selection.{csv,md}, claims.{csv,md}")
    s.add_argument("--provenance", type=Path, help="where to write the provenance record")
    s.set_defaults(func=cmd_claims)

    s = sub.add_parser("plot", help="render one figure from the summary")
    s.add_argument("figure", choices=["curves", "grokking", "survival", "sweep"])
    s.add_argument("--spec", type=_json, default={}, help="sweep figure: x, y, hue, filters (JSON)")
    s.add_argument("--summary", required=True, type=Path)
    s.add_argument("--pdf", required=True, type=Path)
    s.add_argument("--png", required=True, type=Path)
    s.add_argument("--provenance", type=Path, help="where to write the provenance record")
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("audit", help="check an output against the provenance of everything it came from")
    s.add_argument("path", type=Path, help="a figure, summary, run file or dataset")
    s.add_argument("--root", type=Path, default=Path("."), help="folder the recorded paths are relative to")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser(
        "crate",
        help="export a finished study as a Workflow Run RO-Crate (RESULTS/ro-crate-metadata.json)",
        description="The study's files in place, each with its sha256, one CreateAction per provenance "
        "record linking its outputs to its inputs, the workflow and the study as validated (RESULTS/crate/). "
        "Refuses files that do not match their records and, with --config, an unfinished study.",
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

    s = sub.add_parser("bench-backends", help="time each family's training step per backend")
    s.add_argument("--preset", default="tiny")
    s.add_argument("--batch", type=int, default=128)
    s.add_argument("--seq", type=int, default=6)
    s.add_argument("--vocab", type=int, default=1107)
    s.add_argument("--repeats", type=int, default=10)
    s.add_argument("--families", nargs="*", help="only these families")
    s.set_defaults(func=cmd_bench_backends)

    s = sub.add_parser("bench-train", help="training throughput: the reference setup vs grokbench's trainer")
    s.add_argument("--preset", help="gpt size preset (default: paper on CUDA, tiny on CPU)")
    s.add_argument("--batch", type=int, help="batch per run (default: 512 on CUDA, 64 on CPU)")
    s.add_argument("--steps", type=int, help="timed steps (default: 100 on CUDA, 20 on CPU)")
    s.add_argument("--warmup", type=int, help="untimed steps first (default: 20 on CUDA, 5 on CPU)")
    s.add_argument("--seeds", type=int, help="runs trained packed (default: 4 on CUDA, 2 on CPU)")
    s.add_argument("--data", type=_json, help="comparison-task parameters (JSON) over the defaults")
    s.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: by GPU name)")
    s.add_argument("--compile", action="store_true", help="torch.compile the grokbench models")
    s.set_defaults(func=cmd_bench_train)

    s = sub.add_parser(
        "gpu-check",
        help="every GPU check in one command (CUDA tests, benchmarks, a short pipeline vs CPU), one report",
        description="Runs, each under a time limit: pytest -m gpu, bench-backends, bench-train, a short "
        "pipeline run of the default study and a CPU rerun of its first cell compared with it; writes one "
        "Markdown report, updated after every step (src/grokbench/bench/gpu_check.py). Tiny steps with "
        "--quick or without CUDA. Exit status 1 if any step did not pass.",
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
    try:
        status = args.func(args)
    except ValueError as e:  # bad input: a clear message, no traceback
        print(f"grokbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    return status or 0
