"""The claims report: each claim of a study judged from the summary, with its verdict and evidence.

A claim (config `claims`, a list) names the runs it is about with `where` (summary column -> value or
list of values: dataset, model, family, training_base, task, data.*, train.*, ...) and one check. All checks
read the test split (`analysis.ood_split`) through the summary's per-run steps, or the claim's own `split`
(another test split, e.g. test_incontext_ood: the in-context questions of a `format` dataset, with the
atomic facts their answer follows from shown; every run of the claim, both sides of a `sooner`, must
evaluate it); "OOD" below means that split. Hyperparameters were chosen on the selection split
(grokbench.report.selection), so no claim is judged on data used for selection.
`settings: selected` (default for `groks` and `sooner`) keeps each group's selected setting only;
`settings: all` (default for `fails`) keeps every swept setting.

Runs that diverged (status "diverged": a non-finite training loss stopped them) are a failure to train,
not an outcome: every check leaves them out and its evidence names them with their step; a claim none of
whose runs completed is inconclusive.

Checks (k = runs that did it, n = runs):
- `groks`: runs memorize, then reach OOD >= threshold at a later evaluation and stay there (`grokked`);
  with `min_gain` (in [0, 1]) a run counts only if its OOD accuracy also rose by at least that much after
  memorization (`ood_gain_after_memorization` >= min_gain, see grokbench.report.analysis; up to 1e-9 of
  rounding), so that a run nearly generalized when it memorized does not count as grokking.
  Supported if k >= min_seeds (default: a majority of n), contradicted if k = 0, else inconclusive. The
  evidence lists each run's OOD accuracy at memorization, its gain after it and its delay ratio.
- `fails`: no run reaches OOD >= threshold within its budget, at any setting. Supported if k = 0 over all
  settings; contradicted if one setting reaches it in >= min_seeds of its seeds (default: a majority);
  else inconclusive.
- `sooner`: the `where` runs reach OOD >= threshold in fewer steps than the `than` runs. Steps to OOD
  generalization per run are right-censored: a run that never reached the threshold is censored at its
  final step (grokbench.report.survival, lifelines). Columns:
  - `logrank_p`: two-sided log-rank test p-value, where vs than;
  - `km_median`, `km_median_than`: the Kaplan-Meier median steps of each side, inf when not reached
    (the evidence writes "> <last step> (not reached)");
  - `median_ratio` = km_median_than / km_median, with `median_ci_low`, `median_ci_high` its 95%
    percentile-bootstrap interval (runs resampled within each side, `N_BOOT` draws from numpy's
    default_rng(BOOT_SEED), the KM median of each resample; inf / 0 / NaN where a median is not reached,
    see grokbench.report.survival);
  - as before, for reference: ratio = mean(than) / mean(where) of the steps with never-reached runs
    counted at their final step (a lower bound, so it understates a real difference), `ci_low`,
    `ci_high` its 95% percentile-bootstrap interval (the same resampling), `mean_steps`, `mean_steps_than`.
  Verdict (`sooner_verdict`): inconclusive if no run of either side reached the threshold; supported if
  the log-rank p < 0.05 and the median ratio's interval lies above 1; contradicted if p < 0.05 and the
  interval lies below 1; else inconclusive. Both are required: the test says the two curves differ, the
  interval says which way and that the typical run (the median) differs, not only the tails; a resample
  whose two medians are not reached counts against any conclusion. With few runs this is strict: two
  runs per side can never give p < 0.05 (p >= 0.09 even when all of one side reach the threshold before
  any of the other), three per side can (p = 0.025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..grid import grid_matches
from ..params import from_dict
from . import figure_names
from .analysis import AFTER_MEMORIZATION, SPLIT_STEP, TEST_SPLITS, not_a_column, steps_or_final
from .selection import selected
from .survival import ALPHA, durations, km_median, logrank, median_ratio, median_text, ratio_text

CHECKS = ("groks", "fails", "sooner")
VERDICTS = ("supported", "contradicted", "inconclusive")
N_BOOT = 2000
BOOT_SEED = 0
NAME_KEYS = ("dataset", "model")  # `where` keys whose values the config defines
GAIN = "ood_gain_after_memorization"
AFTER_MEMORIZATION_LABELS = {
    "ood_at_memorization": "OOD accuracy at memorization",
    GAIN: "OOD gain after memorization",
    "delay_ratio": "delay ratio (OOD step / memorization step)",
}


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    check: str
    where: dict[str, Any] = field(default_factory=dict)
    than: dict[str, Any] | None = None
    settings: str | None = None  # selected | all; None: all for `fails`, selected otherwise
    min_seeds: int | None = None
    min_gain: float | None = None  # groks only: a run counts if its ood_gain_after_memorization >= this
    figure: str | None = None  # a figure of the study: curves, grokking, survival or sweep_<name>
    split: str | None = None  # the test split the check reads; None: analysis.ood_split

    @property
    def scope(self) -> str:
        return self.settings or ("all" if self.check == "fails" else "selected")


def parse(spec: dict[str, Any], where: str) -> Claim:
    claim = from_dict(Claim, spec, where)
    if claim.check not in CHECKS:
        raise ValueError(f"{where}.check={claim.check!r}: expected one of {list(CHECKS)}")
    if (claim.than is None) != (claim.check != "sooner"):
        raise ValueError(f"{where}.than: required by check 'sooner' and only by it")
    if claim.settings not in (None, "selected", "all"):
        raise ValueError(f"{where}.settings={claim.settings!r}: expected 'selected' or 'all'")
    if claim.min_seeds is not None and claim.min_seeds < 1:
        raise ValueError(f"{where}.min_seeds={claim.min_seeds}: must be at least 1")
    if claim.min_gain is not None:
        if claim.check != "groks":
            raise ValueError(f"{where}.min_gain: only check 'groks' uses it")
        if not 0 <= claim.min_gain <= 1:
            raise ValueError(f"{where}.min_gain={claim.min_gain}: expected a number in [0, 1]")
    if claim.split is not None and claim.split not in TEST_SPLITS:
        raise ValueError(f"{where}.split={claim.split!r}: expected a test split, one of {list(TEST_SPLITS)}")
    return claim


def check_claims(config: dict[str, Any], grid: list, columns: set[str]) -> list[Claim]:
    """Parse and check the config's claims before any job runs: unique ids, known figures, every key of
    `where` / `than` among the summary's `columns`, and every dataset / model name there defined and
    present in the grid (a list of grid.Cell)."""
    claims, ids = [], set()
    for i, spec in enumerate(config.get("claims", [])):
        where = f"config.claims[{i}]"
        claim = parse(spec, where)
        if claim.id in ids:
            raise ValueError(f"{where}.id={claim.id!r}: used by an earlier claim")
        ids.add(claim.id)
        if claim.figure is not None and claim.figure not in figure_names(config):
            raise ValueError(f"{where}.figure={claim.figure!r}: expected one of {figure_names(config)}")
        for side in ("where", "than"):
            filt = getattr(claim, side) or {}
            for key in filt:
                if key not in columns:
                    raise not_a_column(f"{where}.{side}", key, columns)
            named = {k: _values(v) for k, v in filt.items() if k in NAME_KEYS}
            if not grid_matches(config, grid, named, {k: f"{where}.{side}.{k}" for k in named}):
                raise ValueError(f"{where}.{side}={filt}: no run of the grid matches")
        claims.append(claim)
    return claims


def _values(v: Any) -> list:
    return list(v) if isinstance(v, list | tuple) else [v]


def runs_of(summary: pd.DataFrame, filt: dict[str, Any], chosen: set | None, what: str) -> pd.DataFrame:
    """The summary rows matching `filt`, restricted to selected settings when `chosen` is given."""
    rows = summary
    for key, value in filt.items():
        if key not in rows.columns:
            raise ValueError(f"{what}: no column {key!r} in the summary; known: {sorted(summary.columns)}")
        rows = rows[rows[key].isin(_values(value))]
    if chosen is not None:
        keep = [(d, m, t) in chosen for d, m, t in zip(rows["dataset"], rows["model"], rows["training"])]
        rows = rows[keep]
    if rows.empty:
        raise ValueError(f"{what}: no run matches {filt}")
    return rows


def _steps(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Steps to OOD generalization per run, censored at the final step; and which were censored."""
    censored = rows["ood_generalization_step"].isna().to_numpy()
    return steps_or_final(rows, "ood_generalization_step").to_numpy(float), censored


def _steps_text(steps: pd.Series) -> str:
    return ", ".join("never" if pd.isna(s) else f"{s:.0f}" for s in steps.astype("Float64"))


def _fmt_steps(steps: np.ndarray, censored: np.ndarray) -> str:
    return ", ".join(f"{s:.0f}{'*' if c else ''}" for s, c in zip(steps, censored))


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED):
    """mean(b) / mean(a) and its 95% percentile-bootstrap interval (each side resampled on its own)."""
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    ratios = b[ib].mean(axis=1) / a[ia].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(b.mean() / a.mean()), float(low), float(high)


def grokked(rows: pd.DataFrame, min_gain: float | None, what: str) -> pd.Series:
    """Which runs count as grokked: `grokked`, and with `min_gain` a gain after memorization >= it."""
    ok = rows["grokked"].astype(bool)
    if min_gain is None:
        return ok
    if GAIN not in rows:
        raise ValueError(f"{what}: min_gain needs the summary column {GAIN!r}; rerun the analysis")
    gain = rows[GAIN].astype("Float64").fillna(-math.inf).astype(float)
    return ok & (gain >= min_gain - 1e-9)


def _after_memorization_text(rows: pd.DataFrame) -> str:
    """Each run's OOD accuracy at memorization, gain after it and delay ratio (summaries that have them)."""
    parts = [
        (label, ", ".join("n/a" if pd.isna(v) else f"{v:.2f}" for v in rows[column].astype("Float64")))
        for column, label in AFTER_MEMORIZATION_LABELS.items()
        if column in rows
    ]
    return "".join(f"; {label} {values}" for label, values in parts)


def sooner_survival(rows: pd.DataFrame, other: pd.DataFrame) -> dict[str, float]:
    """The censoring-aware numbers of a `sooner` claim, `rows` (where) against `other` (than)."""
    ta, ea = durations(rows)
    tb, eb = durations(other)
    chi2, p = logrank(ta, ea, tb, eb)
    ratio, low, high = median_ratio(ta, ea, tb, eb, N_BOOT, BOOT_SEED)
    return {
        "logrank_chi2": chi2,
        "logrank_p": p,
        "km_median": km_median(ta, ea),
        "km_median_than": km_median(tb, eb),
        "median_ratio": ratio,
        "median_ci_low": low,
        "median_ci_high": high,
    }


def sooner_verdict(km: dict[str, float], reached: bool) -> str:
    """Supported if the log-rank p < ALPHA and the median ratio's interval lies above 1, contradicted if
    p < ALPHA and it lies below 1, inconclusive otherwise or when no run of either side `reached` the
    threshold."""
    if not reached or not km["logrank_p"] < ALPHA:
        return "inconclusive"
    if km["median_ci_low"] > 1:
        return "supported"
    if km["median_ci_high"] < 1:
        return "contradicted"
    return "inconclusive"


def split_diverged(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs whose training completed, and a note naming those that diverged (a non-finite loss
    stopped them: a failure to train, which says nothing about grokking, so no check counts them)."""
    if "status" not in rows:
        return rows, ""
    bad = rows["status"] == "diverged"
    named = ", ".join(f"{r} at step {s}" for r, s in zip(rows["run_id"][bad], rows["diverged_step"][bad]))
    return rows[~bad], f"; left out, diverged: {named}" if named else ""


def on_split(rows: pd.DataFrame, split: str, what: str) -> pd.DataFrame:
    """The runs as the checks read them with `split` in place of the analysis's OOD split: its
    generalization step as ood_generalization_step, grokked = memorized, then `split` >= threshold at a
    strictly later evaluation; the after-memorization numbers (of the analysis's OOD split) left out.
    Every run must have evaluated `split`."""
    acc = f"final_acc_{split}"
    lacking = rows["run_id"][rows[acc].isna()] if acc in rows else rows["run_id"]
    if len(lacking):
        raise ValueError(f"{what}: split={split!r}: not evaluated by run(s) {', '.join(lacking)}")
    if f"{SPLIT_STEP}{split}" not in rows:
        raise ValueError(
            f"{what}: split={split!r} needs the summary column {SPLIT_STEP}{split}; rerun the analysis"
        )
    out = rows.drop(columns=[c for c in AFTER_MEMORIZATION if c in rows])
    step, mem = out[f"{SPLIT_STEP}{split}"].astype("Int64"), out["memorization_step"].astype("Int64")
    out["ood_generalization_step"] = step
    out["grokked"] = (mem.notna() & step.notna() & (step > mem)).fillna(False).astype(bool)
    return out


def judge_one(claim: Claim, summary: pd.DataFrame, chosen: set, ood_split: str) -> dict[str, Any]:
    what = f"claim {claim.id!r}"
    scope = chosen if claim.scope == "selected" else None
    rows, note = split_diverged(runs_of(summary, claim.where, scope, what))
    if claim.than is not None:
        other, note_than = split_diverged(runs_of(summary, claim.than, scope, f"{what} (than)"))
        note += note_than.replace("; left out", "; left out (than)")
    split = claim.split or ood_split
    if split != ood_split:
        rows = on_split(rows, split, what)
        if claim.than is not None:
            other = on_split(other, split, f"{what} (than)")
    if rows.empty or (claim.than is not None and other.empty):
        return {"verdict": "inconclusive", "evidence": f"no run completed its training{note}", "n": len(rows)}
    out: dict[str, Any] = {"n": len(rows)}
    settings = sorted(set(rows["model"] + "/" + rows["training"]))
    if claim.check == "groks":
        k = int(grokked(rows, claim.min_gain, what).sum())
        need = claim.min_seeds or len(rows) // 2 + 1
        verdict = "supported" if k >= need else "contradicted" if k == 0 else "inconclusive"
        mem, ood = _steps_text(rows["memorization_step"]), _steps_text(rows["ood_generalization_step"])
        gain = "" if claim.min_gain is None else f" with OOD gain >= {claim.min_gain:g}"
        evidence = (
            f"{k}/{len(rows)} runs grokked{gain} (need {need}); memorized at {mem}; OOD >= threshold {ood}"
            + _after_memorization_text(rows)
        )
        out |= {"k": k}
    elif claim.check == "fails":
        per = rows.groupby(["dataset", "model", "training"], sort=False)
        counts = [(name, int(g["ood_generalization_step"].notna().sum()), len(g)) for name, g in per]
        k = sum(c for _, c, _ in counts)
        need = claim.min_seeds
        reliable = [c >= (need or n // 2 + 1) for _, c, n in counts]
        verdict = "supported" if k == 0 else "contradicted" if any(reliable) else "inconclusive"
        acc = f"final_acc_{split}"
        best = float(rows[acc].max()) if acc in rows else math.nan
        evidence = "; ".join(f"{'/'.join(name)}: {c}/{n} reached OOD >= threshold" for name, c, n in counts)
        evidence += f"; best final OOD accuracy {best:.3f}"
        out |= {"k": k}
    else:
        a, ca = _steps(rows)
        b, cb = _steps(other)
        ratio, low, high = bootstrap_ratio(a, b)
        km = sooner_survival(rows, other)
        verdict = sooner_verdict(km, reached=not (ca.all() and cb.all()))
        evidence = (
            f"steps to OOD >= threshold: {_fmt_steps(a, ca)} (mean {a.mean():.0f}) vs than "
            f"{_fmt_steps(b, cb)} (mean {b.mean():.0f}); ratio {ratio:.2f}, "
            f"95% CI [{low:.2f}, {high:.2f}] (* never reached: its final step, censored); "
            f"Kaplan-Meier median {median_text(km['km_median'], a)} vs than "
            f"{median_text(km['km_median_than'], b)}, median ratio "
            f"{ratio_text(km['km_median'], km['km_median_than'], a, b)}, 95% CI "
            f"[{km['median_ci_low']:.2f}, {km['median_ci_high']:.2f}]; "
            f"log-rank chi2 {km['logrank_chi2']:.2f}, p = {km['logrank_p']:.3g}"
        )
        settings += sorted(set(other["model"] + "/" + other["training"]))
        out |= {"n_than": len(other), "mean_steps": a.mean(), "mean_steps_than": b.mean()}
        out |= {"ratio": ratio, "ci_low": low, "ci_high": high}
        out |= {k: v for k, v in km.items() if k != "logrank_chi2"}
        rows = pd.concat([rows, other])
    if split != ood_split:
        evidence = f"on {split}: {evidence}"
    return {"verdict": verdict, "evidence": evidence + note, **out} | {
        "settings": "; ".join(settings),
        "runs": "; ".join(rows["run_id"]),
    }


def judge(summary: pd.DataFrame, table: pd.DataFrame, claims: list[Claim], ood_split: str) -> pd.DataFrame:
    """One row per claim: verdict, evidence, the numbers behind it, the settings and runs it used."""
    chosen = selected(table)
    rows = []
    for claim in claims:
        head = {"id": claim.id, "claim": claim.text, "check": claim.check, "settings_scope": claim.scope}
        rows.append(head | judge_one(claim, summary, chosen, ood_split) | {"figure": claim.figure or ""})
    return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = [
    *("id", "claim", "check", "verdict", "evidence", "n", "k", "n_than", "mean_steps", "mean_steps_than"),
    *("ratio", "ci_low", "ci_high"),
    *("logrank_p", "km_median", "km_median_than", "median_ratio", "median_ci_low", "median_ci_high"),
    *("settings_scope", "settings", "figure", "runs"),
]
