"""Tables of the reports: one Markdown writer, and the columns each table shows.

The CSV of a table holds every column; its Markdown twin (read on GitHub, in the HTML report) the ones
listed here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_path, write_text

SELECTION_COLUMNS = [
    *("dataset", "model", "training", "hparams", "seeds", "val_reached", "val_mean_step"),
    *("val_final_accuracy", "test_ood_reached", "rank", "selected"),
]
CLAIMS_COLUMNS = ["id", "claim", "verdict", "evidence", "figure"]


def markdown(df: pd.DataFrame, columns: list[str]) -> str:
    """A GitHub-flavoured Markdown table of `columns` (pipes in cells escaped)."""

    def cell(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"  # steps whole, ratios and accuracies 3 digits
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df[columns].itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, csv: str | Path, md: str | Path, columns: list[str]) -> None:
    """`df` whole as CSV and its `columns` as Markdown, each written atomically."""
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    write_text(md, markdown(df, columns))
