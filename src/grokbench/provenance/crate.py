"""`grokbench crate RESULTS`: a finished study as a Workflow Run RO-Crate (Provenance Run Crate 0.6).

The crate is the study's provenance records (grokbench.provenance, walked by grokbench.provenance.audit)
in a standard form that RO-Crate tools read: every file the study made, with its sha256 and size; one
`CreateAction` per record, linking the record's outputs (`result`) to its inputs (`object`) exactly as
the record does, with the tool and code that ran (stage, code fingerprint, git commit, package versions),
when (start and end) and on which machine (host, hardware, SLURM job); the Snakemake workflow as the
crate's main entity, with one step per rule; and the study config as validated, the workflow run's input.

Layout. The crate root is the results folder itself: `<results>/ro-crate-metadata.json` describes the
files where they are (nothing is copied), and `<results>/crate/` holds what the crate adds: `study.yaml`
(the study as validated) and `workflow/` (a copy of the Snakefile and workflow/ that ran it). The
metadata cannot sit in `<results>/crate/` and point at `../runs/...`: in RO-Crate (1.2, 1.3) a relative
`@id` names a file inside the crate root, and resolved against the root `../runs/x` is `runs/x` inside it
(rocrate 0.16 does exactly that: such an entity answers to `runs/x`, and `write_zip` stores it as
`../runs/x`, outside the archive). With the root at `<results>`, zipping that folder gives an attached
crate that any RO-Crate reader opens.

The export refuses a study whose files do not match their records (changed or missing: the same checks as
`grokbench audit`) and, given the study's config, one that is not finished (an output of the study is
missing). Records written by other code than the current one (the audit's CODE lines) are reported,
not refused: the crate describes the code that made the files, from the records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..io import atomic_path, sha256_bytes, write_text
from . import PACKAGE_DIR, STAGE_SOURCES, now
from .audit import RUN_RECORD, Audit, record_path

CRATE_DIR = "crate"  # under the results folder: the files the crate adds
METADATA = "ro-crate-metadata.json"

PROFILES = {  # what the crate conforms to (Workflow Run Crate 0.6 family, on RO-Crate 1.3)
    "https://w3id.org/ro/wfrun/process/0.6": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.6": "Workflow Run Crate",
    "https://w3id.org/ro/wfrun/provenance/0.6": "Provenance Run Crate",
}
WORKFLOW_RUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
NO_LICENSE = "No license stated: ask the study's authors before reusing it (grokbench crate --license)."

# stage of a record -> the `python -m grokbench` command that ran it and the Snakemake rule(s)
COMMANDS = {"data": "data", "train": "train", "analysis": "analyze", "claims": "claims", "plots": "plot",
            "weight_norms": "weight-norms", "mech": "mech", "mech_plots": "plot"}  # fmt: skip
STEP_ORDER = ("dataset", "train", "summary", "claims", "figure")

MEDIA_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".json": "application/json",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".pt": "application/octet-stream",
    ".yaml": "application/yaml",
    ".smk": "text/x-snakemake",
    ".rst": "text/x-rst",
}


class CrateError(ValueError):
    """The study cannot be exported as it is (unfinished, or its files do not match their records)."""


def study_jobs(config: dict[str, Any], results: str | Path) -> dict[str, Any]:
    """The files of each job of a finished study, as the workflow's rules name them (provenance records
    included): {"data": {dataset: files}, "runs": {Cell: files}, "summary": files, "claims": files,
    "figures": {figure: files}}."""
    from .. import grid
    from ..report import figure_names

    results = Path(results)
    cells = grid.cells(config)
    datasets = dict.fromkeys(c.dataset for c in cells)
    data = {d: [results / "data" / f"{d}{e}" for e in (".parquet", ".provenance.json")] for d in datasets}
    runs = {
        c: [results / "runs" / c.run_id / n for n in ("metrics.parquet", "model.pt", RUN_RECORD)]
        for c in cells
    }
    summary = [results / "summary" / n for n in ("summary.parquet", "summary.csv", "summary.provenance.json")]
    names = ("claims.csv", "claims.md", "selection.csv", "selection.md", "claims.provenance.json")
    claims = [results / "claims" / n for n in names]
    figures = {
        f: [results / "figures" / f"{f}{e}" for e in (".pdf", ".png", ".provenance.json")]
        for f in figure_names(config)
    }
    return {"data": data, "runs": runs, "summary": summary, "claims": claims, "figures": figures}


def study_outputs(config: dict[str, Any], results: str | Path) -> list[Path]:
    """Every file a finished run of the study has: its datasets, its runs, the summary, the claims and
    selection tables and its figures, each with its provenance record."""
    jobs = study_jobs(config, results)
    return [
        *(f for files in jobs["data"].values() for f in files),
        *(f for files in jobs["runs"].values() for f in files),
        *jobs["summary"],
        *jobs["claims"],
        *(f for files in jobs["figures"].values() for f in files),
    ]


def available_outputs(config: dict[str, Any], results: str | Path) -> tuple[list[Path], dict[Path, dict]]:
    """What exists of a study now, for `snakemake --report report.html available`: the files of every
    complete job (all its files there) whose upstream jobs are complete too (a run needs its dataset; the
    summary every run; claims and figures the summary). Snakemake's report stops at the first
    report-flagged output of a job in the DAG that does not exist, and a job's inputs bring the jobs
    that make them into the DAG; so a job counts only when everything it reads is there. Returns the
    files and, apart, each finished run's record (run.json) with its labels, shown under "Runs"."""
    jobs = study_jobs(config, results)

    def done(files: list[Path]) -> bool:
        return all(f.exists() for f in files)

    out = [f for files in jobs["data"].values() if done(files) for f in files]
    finished = [c for c, files in jobs["runs"].items() if done(files) and done(jobs["data"][c.dataset])]
    records = {}
    for c in finished:
        *files, record = jobs["runs"][c]
        out += files
        records[record] = {
            "dataset": c.dataset,
            "model": c.model,
            "training": c.training,
            "seed": str(c.seed),
        }
    if len(finished) == len(jobs["runs"]) and done(jobs["summary"]):
        out += jobs["summary"]
        out += jobs["claims"] if done(jobs["claims"]) else []
        out += [f for files in jobs["figures"].values() if done(files) for f in files]
    return out, records


def code_fingerprint() -> str:
    """sha256 (16 hex digits) of the export's code: this module and the audit it walks with."""
    h = hashlib.sha256()
    for name in ("crate.py", "audit.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def find_records(results: Path) -> list[Path]:
    """Every provenance record under the results folder (not the crate's own files)."""
    found = [*results.rglob("*.provenance.json"), *results.rglob(RUN_RECORD)]
    return sorted(p for p in found if CRATE_DIR not in p.relative_to(results).parts[:1])


def infer_root(record: Path) -> Path:
    """The folder a record's relative paths are relative to (the Snakemake working directory): its
    outputs lie next to it, so `results/summary/summary.csv` recorded in `/w/results/summary/` -> `/w`."""
    info = json.loads(record.read_text())
    for name in info.get("outputs", {}):
        p = Path(name)
        if p.is_absolute():
            continue
        beside = record.parent / p.name
        root = beside.parents[len(p.parts) - 1]
        if (root / p).exists():
            return root
    return Path(".")


def default_workflow_dir() -> Path | None:
    """This checkout's workflow (the folder with the Snakefile above src/grokbench), else the current one."""
    for d in (PACKAGE_DIR.parents[1], Path.cwd()):
        if (d / "Snakefile").is_file():
            return d
    return None


def workflow_files(workflow_dir: Path) -> list[Path]:
    """The workflow's definition, relative to its folder: the Snakefile and what workflow/ holds."""
    files = [Path("Snakefile")]
    files += sorted(
        p.relative_to(workflow_dir)
        for p in (workflow_dir / "workflow").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    )
    return files


def _short(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _describe(rel: str) -> tuple[str, str]:
    """A name and description for a study file, from where it sits in the results folder."""
    p = Path(rel)
    parts = p.parts
    if parts[0] == "data":
        stem = p.name.split(".")[0]
        if p.name.endswith(".provenance.json"):
            return f"dataset {stem}: provenance record", "How the dataset was made (grokbench data)."
        return f"dataset {stem}", "The facts of one dataset, its splits and vocabulary (Parquet)."
    if parts[0] == "runs":
        run = "/".join(parts[1:-1])
        what = {
            "metrics.parquet": "One row per evaluation and split: step, loss, accuracy, elapsed seconds.",
            "model.pt": "The final weights of the run.",
            RUN_RECORD: "The run's resolved config, parameter count, device, wall time, input hashes and "
            "provenance.",
        }
        return f"run {run}: {p.name}", what.get(p.name, "")
    if parts[0] == "summary":
        if p.name.endswith(".provenance.json"):
            return "summary: provenance record", "How the summary was made (grokbench analyze)."
        return f"summary ({p.suffix[1:]})", "One row per run: memorization and generalization steps."
    if parts[0] == "claims":
        if p.name.endswith(".provenance.json"):
            return "claims: provenance record", "How the claims and selection tables were made."
        kind = (
            "The config's claims, each with a verdict" if p.stem == "claims" else "Hyperparameter selection"
        )
        return f"{p.stem} table ({p.suffix[1:]})", f"{kind} (grokbench claims)."
    if parts[0] == "figures":
        stem = p.name.split(".")[0]
        if p.name.endswith(".provenance.json"):
            return f"figure {stem}: provenance record", "How the figure was made (grokbench plot)."
        return f"figure {stem} ({p.suffix[1:]})", "A figure of the study (grokbench plot)."
    return p.name, ""


@dataclass
class Record:
    path: Path  # as the audit resolved it
    info: dict[str, Any]

    @property
    def stage(self) -> str:
        return self.info.get("stage", "?")


@dataclass
class Export:
    """What `export` wrote: the metadata file and what it lists."""

    metadata: Path
    files: dict[str, str] = field(default_factory=dict)  # crate id (unquoted path) -> sha256
    actions: int = 0
    notes: list[str] = field(default_factory=list)


def _rule(record: Record) -> str:
    stage = record.stage
    if stage in ("plots", "mech_plots"):
        out = next(iter(record.info.get("outputs", {})), "")
        return f"figure_{Path(out).name.split('.')[0]}"
    return {"data": "dataset", "train": "train", "analysis": "summary", "claims": "claims"}.get(stage, stage)


def _command(record: Record) -> str:
    argv = record.info.get("argv") or []
    return shlex.join(["python", "-m", "grokbench", *argv[1:]]) if argv else ""


def export(
    results: str | Path,
    *,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    root: str | Path | None = None,
    workflow_dir: str | Path | None = None,
    license: str | None = None,
) -> Export:
    """Write the RO-Crate of the study in `results` (see the module's docstring) and return what it lists.

    `config`: the study file (with Snakemake's --config `overrides`); given, the crate holds it as validated
    and every output of the study must be there. Without it the crate covers every record found in
    `results`. `out`: the crate root, the results folder or a folder above it (default: the results
    folder). `root`: the folder the records' paths are relative to (default: inferred from a record).
    `workflow_dir`: the folder with the Snakefile that ran the study (default: this checkout's).
    `license`: of the crate's content, a URL (e.g. https://spdx.org/licenses/CC-BY-4.0) or a text
    (default: NO_LICENSE, a text saying that none was stated).
    """
    from rocrate.model import ContextEntity
    from rocrate.rocrate import ROCrate

    results = Path(results)
    out = Path(out) if out is not None else results
    if not results.is_dir():
        raise CrateError(f"{results}: no such results folder")
    try:
        results.resolve().relative_to(out.resolve())
    except ValueError:
        raise CrateError(
            f"--out {out}: the crate root must be the results folder or a folder above it, as the crate "
            "lists the study's files where they are (RO-Crate paths are relative to the crate root)"
        ) from None

    cfg = None
    if config is not None:
        from .. import study

        cfg = study.load(config, overrides=overrides)
        expected = study_outputs(cfg, results)
        missing = [p for p in expected if not p.exists()]
        if missing:
            shown = "\n  ".join(map(str, missing[:10])) + ("\n  ..." if len(missing) > 10 else "")
            raise CrateError(
                f"the study is not finished: {len(missing)} of its {len(expected)} outputs are missing "
                f"(run snakemake first):\n  {shown}"
            )
        starts = [r for r in dict.fromkeys(record_path(p) for p in expected) if r is not None]
    else:
        expected = []
        starts = find_records(results)
    if not starts:
        raise CrateError(f"{results}: no provenance records (*.provenance.json, {RUN_RECORD}) found")
    if root is None:
        root = infer_root(starts[0])

    # Walk every record from the study's outputs back to the datasets, checking every recorded hash.
    audit = Audit(Path(root))
    for start in starts:
        audit.walk(start)
    hard = [p for p in audit.problems if not p.startswith("CODE")]
    if hard:
        shown = "\n  ".join(hard[:20]) + ("\n  ..." if len(hard) > 20 else "")
        raise CrateError(
            f"{len(hard)} file(s) do not match their provenance records (see `python -m grokbench audit`):"
            f"\n  {shown}"
        )
    notes = [p for p in audit.problems if p.startswith("CODE")]
    seen = {p.resolve(): p for p in sorted(audit.seen)}  # one record per file, however it was spelled
    records = [Record(p, json.loads(p.read_text())) for p in seen.values()]

    def crate_id(path: Path) -> str:
        try:
            return path.resolve().relative_to(out.resolve()).as_posix()
        except ValueError:
            raise CrateError(f"{path} is outside the crate root {out}") from None

    # Every file: the records' inputs and outputs and the records themselves, with the audit's hashes
    # (computed once per file and already compared with every record that names the file).
    files: dict[str, Path] = {}
    for rec in records:
        for name in [*rec.info.get("inputs", {}), *rec.info.get("outputs", {})]:
            path = audit.resolve(name)
            files.setdefault(crate_id(path), path)
        files.setdefault(crate_id(rec.path), rec.path)
    for p in expected:
        if crate_id(p) not in files:
            raise CrateError(f"{p}: an output of the study that no provenance record lists")

    crate = ROCrate()
    crate.metadata.extra_contexts.append(WORKFLOW_RUN_CONTEXT)

    def add(eid: str, type_: str, **props: Any):
        """A contextual entity (entities as values become references)."""
        return crate.add(ContextEntity(crate, eid, {"@type": type_, **props}))

    entities: dict[str, Any] = {}
    sha: dict[str, str] = {}
    prefix = results.resolve().relative_to(out.resolve())  # the results folder within the crate
    for cid in sorted(files):
        path = files[cid]
        in_results = Path(cid).relative_to(prefix) if Path(cid).is_relative_to(prefix) else Path(cid)
        name, description = _describe(in_results.as_posix())
        sha[cid] = audit.sha(path)
        props = {"name": name, "sha256": sha[cid], "contentSize": str(path.stat().st_size)}
        props |= {"encodingFormat": MEDIA_TYPES[path.suffix]} if path.suffix in MEDIA_TYPES else {}
        props |= {"description": description} if description else {}
        entities[cid] = crate.add_file(source=path, dest_path=cid, properties=props)

    # What the crate adds: the study as validated and the workflow, written next to the results.
    extras = results / CRATE_DIR
    added: dict[str, bytes] = {}
    if cfg is not None:
        text = (
            f"# The study {config} (sha256 {sha256_bytes(Path(config).read_bytes())}) as validated by\n"
            "# grokbench.study.load: what it says, with Snakemake's --config overrides and the schema's\n"
            "# defaults; the input of the workflow run this crate describes.\n"
            + yaml.safe_dump(cfg, sort_keys=False)
        )
        added["study.yaml"] = text.encode()
    workflow_dir = Path(workflow_dir) if workflow_dir is not None else default_workflow_dir()
    if workflow_dir is None or not (Path(workflow_dir) / "Snakefile").is_file():
        raise CrateError(
            "no Snakefile found: pass --workflow DIR, the folder of the workflow that ran the study"
        )
    wf_files = workflow_files(Path(workflow_dir))
    for rel in wf_files:
        added[f"workflow/{rel.as_posix()}"] = (Path(workflow_dir) / rel).read_bytes()
    for rel, data in added.items():
        path = extras / rel
        cid = crate_id(path)
        sha[cid] = sha256_bytes(data)
        files[cid] = path
    extras_id = crate_id(extras)

    packages = {k: v for rec in records for k, v in (rec.info.get("packages") or {}).items() if v}
    snakemake_version = packages.get("snakemake")
    workflow = crate.add_workflow(
        source=extras / "workflow" / "Snakefile",
        dest_path=f"{extras_id}/workflow/Snakefile",
        main=True,
        lang="snakemake",
        lang_version=snakemake_version,
        properties={
            "name": "grokbench workflow (Snakefile)",
            "description": "The Snakemake workflow that ran the study: datasets -> training runs -> summary "
            "-> claims, figures; a copy of the Snakefile and workflow/ (rules, schema, report captions).",
            "sha256": sha[f"{extras_id}/workflow/Snakefile"],
            "encodingFormat": "text/x-snakemake",
        },
    )
    workflow._jsonld["@type"] = [*workflow.type, "HowTo"]  # it has steps (Provenance Run Crate)
    commits = {(rec.info.get("git") or {}).get("commit") for rec in records} - {None}
    if len(commits) == 1 or packages.get("grokbench"):
        workflow["version"] = commits.pop() if len(commits) == 1 else packages["grokbench"]
    for rel in wf_files[1:]:
        cid = f"{extras_id}/workflow/{rel.as_posix()}"
        props = {
            "name": rel.as_posix(),
            "sha256": sha[cid],
            "description": "Part of the workflow definition.",
        }
        props |= {"encodingFormat": MEDIA_TYPES[rel.suffix]} if rel.suffix in MEDIA_TYPES else {}
        entities[cid] = crate.add_file(source=files[cid], dest_path=cid, properties=props)
    for profile, name in PROFILES.items():
        crate.root_dataset.append_to("conformsTo", add(profile, "CreativeWork", name=name, version="0.6"))
    study_entity = None
    if cfg is not None:
        cid = f"{extras_id}/study.yaml"
        props = {"name": "the study, as validated", "sha256": sha[cid], "encodingFormat": "application/yaml"}
        props["description"] = f"The study file {config} as the workflow read it (grokbench.study.load)."
        study_entity = crate.add_file(source=files[cid], dest_path=cid, properties=props)

    # Software: the packages of the records, grokbench's source at each recorded commit, one tool per
    # stage and code version.
    def package(name: str, version: str):
        if name == "python":
            pid, url = f"#python-{version}", "https://www.python.org/"
        else:
            pid, url = f"https://pypi.org/project/{name}/{version}/", f"https://pypi.org/project/{name}/"
        if pid not in crate:
            add(pid, "SoftwareApplication", name=name, softwareVersion=version, url=url)
        return crate.get(pid)

    tools: dict[tuple, Any] = {}

    def tool(rec: Record):
        git = rec.info.get("git") or {}
        pkgs = tuple(sorted((k, v) for k, v in (rec.info.get("packages") or {}).items() if v))
        key = (rec.stage, rec.info.get("code_fingerprint"), git.get("commit"), git.get("dirty"), pkgs)
        if key in tools:
            return tools[key]
        fingerprint = rec.info.get("code_fingerprint")
        tid = f"#tool-{rec.stage}-{fingerprint}"
        if tid in crate:
            tid = f"{tid}-{_short(repr(key), 8)}"
        command = COMMANDS.get(rec.stage, rec.stage)
        sources = ", ".join(STAGE_SOURCES.get(rec.stage, ()))
        description = (
            f"`python -m grokbench {command}`, the {rec.stage} stage; code fingerprint {fingerprint} "
            f"(sha256 over grokbench/{{{sources}}})"
        )
        props = {"name": f"grokbench {command}", "description": description}
        if (version := dict(pkgs).get("grokbench")) is not None:
            props["softwareVersion"] = version
        t = add(tid, "SoftwareApplication", **props)
        t["softwareRequirements"] = [package(k, v) for k, v in pkgs if k != "grokbench"]
        if git.get("commit"):
            sid = f"#grokbench-source-{git['commit']}" + ("-dirty" if git.get("dirty") else "")
            if sid not in crate:
                dirty = " with uncommitted changes" if git.get("dirty") else ""
                name = f"grokbench source, git commit {git['commit']}{dirty}"
                add(sid, "SoftwareSourceCode", name=name, version=git["commit"], programmingLanguage="Python")
            t["isBasedOn"] = crate.get(sid)
        workflow.append_to("hasPart", t)
        tools[key] = t
        return t

    machines: dict[str, Any] = {}

    def machine(rec: Record):
        hw = {"host": rec.info.get("host"), **(rec.info.get("hardware") or {})}
        key = json.dumps(hw, sort_keys=True, default=str)
        if key not in machines:
            mid = f"#machine-{_short(key)}"
            summary = ", ".join(f"{k} {v}" for k, v in hw.items() if v is not None)
            m = add(mid, "Place", name=str(hw["host"]), description=f"Where a job ran: {summary}")
            m["additionalProperty"] = [
                add(f"{mid}-{k}", "PropertyValue", name=k, value=v) for k, v in hw.items() if v is not None
            ]
            machines[key] = m
        return machines[key]

    steps: dict[str, Any] = {}

    def step(rule: str, t):
        if rule not in steps:
            position = STEP_ORDER.index(rule.split("_")[0]) if rule.split("_")[0] in STEP_ORDER else 99
            s = add(f"{workflow.id}#{rule}", "HowToStep", name=f"rule {rule}", position=str(position))
            workflow.append_to("step", s)
            steps[rule] = s
        s = steps[rule]
        current = s.get("workExample")
        examples = [e for e in (current if isinstance(current, list) else [current]) if e and e.id != t.id]
        s["workExample"] = _one_or_list([*examples, t])
        return s

    # One CreateAction per record, as the record links its outputs to its inputs; one ControlAction per
    # rule execution; the workflow run and the Snakemake run around them.
    actions, controls = [], []
    for rec in records:
        rid = crate_id(rec.path)
        info = rec.info
        t = tool(rec)
        outputs = [entities[crate_id(audit.resolve(n))] for n in sorted(info.get("outputs", {}))]
        inputs = [entities[crate_id(audit.resolve(n))] for n in sorted(info.get("inputs", {}))]
        described = [_command(rec)]
        if info.get("slurm_job_id"):
            described.append(f"SLURM job {info['slurm_job_id']}")
        if rec.stage == "train":
            described.append(
                f"{info.get('n_params')} parameters on {info.get('device')}, {info.get('wall_seconds')} s "
                f"in {info.get('n_segments', 1)} segment(s), status {info.get('status')}"
            )
        props = {
            "name": f"{_rule(rec)}: {Path(rid).parent.as_posix() if rec.stage == 'train' else rid}",
            "description": "; ".join(d for d in described if d),
            "actionStatus": "http://schema.org/CompletedActionStatus",
        }
        props |= {"startTime": info["started"]} if info.get("started") else {}
        props |= {"endTime": info["finished"]} if info.get("finished") else {}
        a = add(f"#make/{rid}", "CreateAction", **props)
        a["instrument"] = t
        a["object"] = _one_or_list(inputs)
        a["result"] = _one_or_list([*outputs, entities[rid]])  # the record is written by the same command
        a["location"] = machine(rec)
        actions.append(a)
        s = step(_rule(rec), t)
        controls.append(
            add(f"#control/{rid}", "ControlAction", name=f"orchestrate {s['name']}", instrument=s, object=a)
        )

    times = [r.info[k] for r in records for k in ("started", "finished") if r.info.get(k)]
    study_ids = [cid for cid in sorted(files) if not cid.startswith(f"{extras_id}/")]
    run_props = {
        "name": f"Run of the grokbench workflow on {config or results}",
        "description": "The study's jobs, each a CreateAction of its own (see the ControlActions).",
    }
    run_props |= {"startTime": min(times), "endTime": max(times)} if times else {}
    study_run = add("#study-run", "CreateAction", **run_props)
    study_run["instrument"] = workflow
    study_run["object"] = _one_or_list([study_entity] if study_entity is not None else [])
    study_run["result"] = _one_or_list([entities[cid] for cid in study_ids])
    engine = add(
        "#snakemake-run", "OrganizeAction", name=f"Run of Snakemake {snakemake_version or ''}".strip()
    )
    engine["instrument"] = package("snakemake", snakemake_version) if snakemake_version else "Snakemake"
    engine["object"] = controls
    engine["result"] = study_run

    root_ds = crate.root_dataset
    root_ds["name"] = f"grokbench study {results.name}" + (f" ({Path(config).name})" if config else "")
    root_ds["description"] = _study_description(cfg, len(actions), results)
    root_ds["datePublished"] = max(times) if times else now()
    root_ds["mentions"] = [study_run, engine, *actions]
    license = license or NO_LICENSE
    if license.startswith(("http://", "https://")):
        root_ds["license"] = add(license, "CreativeWork", name=license.rstrip("/").rsplit("/", 1)[-1])
    else:
        root_ds["license"] = license

    metadata = out / METADATA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = crate.metadata.generate()
    _write_tree(extras, added)  # last, with the metadata: a refused export leaves the old crate whole
    write_text(metadata, json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    listed = {cid: sha[cid] for cid in files}
    return Export(metadata=metadata, files=listed, actions=len(actions), notes=notes)


def _one_or_list(values: list) -> Any:
    """A single value as itself, several as a list (RO-Crate's JSON-LD prefers no singleton arrays)."""
    return values[0] if len(values) == 1 else values


def _study_description(cfg: dict[str, Any] | None, n_jobs: int, results: Path) -> str:
    if cfg is None:
        return f"The provenance of the {n_jobs} jobs whose records are in {results}."
    from .. import grid

    runs = grid.cells(cfg)
    claims = "; ".join(f"{c['id']}: {c.get('text', '')}" for c in cfg.get("claims", []))
    return (
        f"A grokking study: datasets {', '.join(cfg['datasets'])}; models {', '.join(cfg['models'])}; "
        f"{len(runs)} training runs; {n_jobs} jobs." + (f" Claims: {claims}." if claims else "")
    )


def _write_tree(folder: Path, files: dict[str, bytes]) -> None:
    """Replace `folder` with exactly `files` (relative path -> bytes), built beside it and renamed into
    place, so that an interrupted export never leaves a half-written folder under the final name."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as t:
                t.write_bytes(data)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
