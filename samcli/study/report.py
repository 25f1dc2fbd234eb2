"""A study's outputs: from its run records to the table, the correlations, the files in the study
directory (table.csv, table.md, study.json, plots) and the `CompareResult` value `compare` returns."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from ..runs import write_json, write_text
from .grid import Study
from .rundir import RunRecord
from .table import aggregate, caption, correlations, runs_frame, table_markdown

OUTPUTS = ("table.csv", "table.md", "study.json")


@dataclass(frozen=True, eq=False)
class CompareResult:
    """What `samcli.compare` returns: the study's tables, where its files are, and the baseline's verdict."""
    name: str                          # the study's name
    table: pd.DataFrame                # one row per configuration (index: label), <metric>_mean / _std
    runs: pd.DataFrame                 # one row per run
    correlations: pd.DataFrame         # Kendall tau-b of each sharpness notion with test accuracy
    study_dir: Path
    files: tuple[Path, ...]            # the files written: tables, study.json, plots
    notes: tuple[str, ...]             # runs rerun, missing or failed
    caption: str                       # how to read the table
    baseline_diff: Optional[pd.DataFrame] = None   # one row per baseline check (when checked)
    baseline_ok: Optional[bool] = None             # every check holds (None: no check)
    baseline_written: Optional[Path] = None        # the baseline written (--update-baseline)

    @property
    def failed_runs(self) -> int:
        return int(self.table["failed"].sum())


def render(study: Study, records: list[RunRecord], study_dir: Path, notes: list[str]) -> CompareResult:
    """Tables, study.json and plots of `records` into `study_dir`; the result (no baseline yet)."""
    from .plots import ACCURACY_PLOT, TRAINING_PLOT, accuracy_vs_sharpness, sharpness_during_training
    study_dir = Path(study_dir)
    runs = runs_frame(records)
    table = aggregate(runs, study.labels)
    corr = correlations(runs)
    write_text(study_dir / "table.csv", table.to_csv())
    examples = [r.sharpness["examples"] for r in records if r.sharpness and "examples" in r.sharpness]
    write_text(study_dir / "table.md", table_markdown(study, table, corr, notes, examples))
    write_json(study_dir / "study.json", {
        "study": {"name": study.name, "source": study.source, "definition": study.raw,
                  "sharpness": study.sharpness},
        "runs": [{**r.to_dict(), "run_dir": _relative(r.run_dir, study_dir)} for r in records],
        "table": json.loads(table.reset_index().to_json(orient="records")),
        "correlations": json.loads(corr.reset_index().to_json(orient="records")),
        "notes": notes})
    files = [study_dir / name for name in OUTPUTS]
    for plot in (accuracy_vs_sharpness(runs, study_dir / ACCURACY_PLOT, list(study.labels), study.name),
                 sharpness_during_training(records, study_dir / TRAINING_PLOT, list(study.labels), study.name)):
        if plot is not None:
            files.append(plot)
    return CompareResult(study.name, table, runs, corr, study_dir, tuple(files), tuple(notes),
                         caption(study, examples))


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
