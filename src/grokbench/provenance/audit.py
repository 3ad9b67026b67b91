"""`grokbench audit PATH`: walk back from an output to everything it came from and check it still matches.

Every output has a provenance record (see grokbench.provenance): a dataset its `<name>.provenance.json`, a run
its `run.json`, the summary `summary.provenance.json`, a figure `<figure>.provenance.json`, a run's mech
tables `mech.provenance.json` (a record in the file's folder that lists it among its outputs). A record
lists the sha256 of its inputs and outputs and the fingerprint of the code of its stage. The audit starts
at PATH's record, follows every input to that input's record, and reports:

- CHANGED: a file whose bytes differ from the hash recorded when it was made or used;
- MISSING: a recorded input or output that no longer exists, or an output without a record;
- CODE: the stage's source code changed since the record was written;

and exits with status 1 if it found any of these, 0 if everything matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..io import sha256_file
from . import STAGE_SOURCES, code_fingerprint

RUN_RECORD = "run.json"


def record_path(path: Path) -> Path | None:
    """The provenance record that describes `path` (None if there is none)."""
    if path.name == RUN_RECORD or path.name.endswith(".provenance.json"):
        return path
    candidates = [path.with_name(f"{path.stem}.provenance.json"), path.with_name(RUN_RECORD)]
    if path.parent.name == "checkpoints":  # a run's weights across training (grokbench.train.checkpoints)
        candidates.append(path.parent.with_name(RUN_RECORD))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    # one record for several outputs (grokbench mech: mech.provenance.json beside its three tables)
    for candidate in sorted(path.parent.glob("*.provenance.json")):
        outputs = json.loads(candidate.read_text()).get("outputs", {})
        if any(Path(name).name == path.name for name in outputs):
            return candidate
    return None


@dataclass
class Audit:
    root: Path
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)
    _hashes: dict[Path, str] = field(default_factory=dict)

    def resolve(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.root / p

    def sha(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]

    def check_file(self, role: str, name: str, expected: str, depth: int) -> bool:
        path = self.resolve(name)
        pad = "  " * depth
        if not path.exists():
            self.problem(f"{pad}MISSING  {role} {name}")
            return False
        if self.sha(path) != expected:
            self.problem(f"{pad}CHANGED  {role} {name} (sha256 differs from the record)")
            return False
        self.lines.append(f"{pad}ok       {role} {name}")
        return True

    def problem(self, line: str) -> None:
        self.problems.append(line.strip())
        self.lines.append(line)

    def walk(self, path: Path, depth: int = 0) -> None:
        record = record_path(path)
        pad = "  " * depth
        if record is None or not record.exists():
            self.problem(f"{pad}MISSING  provenance record for {path}")
            return
        if record in self.seen:
            return
        self.seen.add(record)
        info = json.loads(record.read_text())
        stage = info.get("stage", "?")
        git = info.get("git") or {}
        commit = (git.get("commit") or "no commit")[:12] + (" (dirty)" if git.get("dirty") else "")
        self.lines.append(f"{pad}{stage + ' ':9s}{record}  [{info.get('finished', '?')}, {commit}]")
        if stage not in STAGE_SOURCES:
            self.problem(
                f"{pad}  CODE     {record} names an unknown stage {stage!r}; known: {sorted(STAGE_SOURCES)}"
            )
        elif info.get("code_fingerprint") != (now := code_fingerprint(stage)):
            self.problem(
                f"{pad}  CODE     {stage} code changed since {record} was written "
                f"({info.get('code_fingerprint')} -> {now})"
            )
        for name, sha in sorted(info.get("outputs", {}).items()):
            self.check_file("output", name, sha, depth + 1)
        for name, sha in sorted(info.get("inputs", {}).items()):
            if self.check_file("input ", name, sha, depth + 1):
                self.walk(self.resolve(name), depth + 2)


def audit(path: str | Path, root: str | Path = ".") -> Audit:
    a = Audit(Path(root))
    target = Path(path)
    if not target.exists():
        a.problem(f"MISSING  {target}")
        return a
    a.walk(target)
    return a
