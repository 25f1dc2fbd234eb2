"""A study's outputs: from its run records to the table, the correlations, the files in the study
directory (table.csv, table.md, findings.md, study.json, plots) and the `CompareResult` value `compare` returns."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ..runs import write_json, write_text
from ..spec.methods import method_names, unused_parameters
from .correlations import CorrelationReport, correlation_report, with_axes
from .edge import above_threshold_notes
from .findings import findings_markdown
from .rundir import RunRecord
from .sections import sections
from .spec import Study
from .table import aggregate, caption, display, markdown, runs_frame

OUTPUTS = ("table.csv", "table.md", "findings.md", "study.json")
# overridden keys that are not hyperparameters of the minimum: never a granulated axis
BOOKKEEPING = ("eval_every", "chunk_size", "device", "measure.", "stop.")


@dataclass(frozen=True, eq=False)
class CompareResult:
    """What `samcli.compare` returns: the study's tables, where its files are, and the baseline's verdict."""
    name: str                          # the study's name
    table: pd.DataFrame                # one row per configuration (index: label), <metric>_mean / _std, reached
    runs: pd.DataFrame                 # one row per run, with a column per hyperparameter axis
    correlations: pd.DataFrame         # Kendall tau-b [bootstrap interval] per (notion, target), eligible runs
    study_dir: Path
    files: tuple[Path, ...]            # the files written: tables, study.json, plots
    notes: tuple[str, ...]             # runs rerun, missing or failed
    caption: str                       # how to read the table
    baseline_diff: Optional[pd.DataFrame] = None   # one row per baseline check (when checked)
    baseline_ok: Optional[bool] = None             # every check holds (None: no check)
    baseline_written: Optional[Path] = None        # the baseline written (--update-baseline)
    granulated: Optional[pd.DataFrame] = None      # granulated Kendall per (notion, target, axis), "overall" last,
    #                                                with its permutation p-value per axis
    coupled: Optional[pd.DataFrame] = None         # coupled-pair agreement per (notion, target, axis), "mean" last
    mutual_information: Optional[pd.DataFrame] = None   # conditional mutual information score per (notion, target)
    warnings: tuple[str, ...] = ()                 # what the study's design cannot support, in plain words
    eligibility: str = ""                          # how many runs the correlations excluded, and why
    confound: Optional[str] = None                 # the confound warning, when the study's check fails
    report: Optional[CorrelationReport] = None     # all of the correlations, as correlation_report returns it
    findings: str = ""                             # findings.md: what the study found, in sentences with figures

    @property
    def failed_runs(self) -> int:
        """How many of the study's runs failed (the table's `failed` column, summed)."""
        return int(self.table["failed"].sum())

    def to_json(self) -> dict:
        """The table, the correlations and where the files are, as plain JSON (`samcli compare --json`)."""
        return {"table": json.loads(self.table.reset_index().to_json(orient="records")),
                "correlations": correlations_json(self.report) if self.report else None,
                "study_dir": str(self.study_dir), "files": [str(f) for f in self.files],
                "baseline_ok": self.baseline_ok, "findings": self.findings}


def axis_values(study: Study) -> dict[str, dict[str, Any]]:
    """{label: {dotted key: resolved value}} for every key some configuration overrides that is a
    hyperparameter; None where the configuration's method does not use it (rho for sgd). The step
    count is one only when runs do not train to a target (then it is only a cap)."""
    targets = all(r.config.stop.active for r in study.runs)
    keys = dict.fromkeys(k for r in study.runs for k in r.overrides
                         if not k.startswith(BOOKKEEPING) and not (targets and k == "steps"))
    out = {}
    for spec in study.runs:
        resolved = spec.config.to_dict()
        unused = ({f"optimizer.{p}" for p in unused_parameters(spec.method)} if spec.method in method_names()
                  else set())
        out[spec.label] = {k: None if k in unused else _dotted(resolved, k) for k in keys}
    return out


def _dotted(tree: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def render(study: Study, records: list[RunRecord], study_dir: Path, notes: list[str]) -> CompareResult:
    """Tables, study.json and plots of `records` into `study_dir`; the result (no baseline yet)."""
    from .plots import study_plots
    study_dir = Path(study_dir)
    edge = above_threshold_notes(records)
    runs = with_axes(runs_frame(records), axis_values(study))
    table = aggregate(runs, study.labels)
    corr = correlation_report(runs, tolerance=study.confound_tolerance)
    write_text(study_dir / "table.csv", table.to_csv())
    examples = [r.sharpness["examples"] for r in records if r.sharpness and "examples" in r.sharpness]
    write_text(study_dir / "table.md", table_markdown(study, table, corr, notes, examples, edge))
    found = findings_markdown(corr, study.name, runs)
    write_text(study_dir / "findings.md", found)
    write_json(study_dir / "study.json", {
        "study": {"name": study.name, "source": study.source, "definition": study.raw,
                  "sharpness": study.sharpness},
        "runs": [{**r.to_dict(), "run_dir": _relative(r.run_dir, study_dir)} for r in records],
        "table": json.loads(table.reset_index().to_json(orient="records")),
        "correlations": correlations_json(corr),
        "notes": notes, "stability_threshold": edge})
    files = [study_dir / name for name in OUTPUTS]
    files += study_plots(runs, records, study_dir, list(study.labels), study.name)
    return CompareResult(study.name, table, runs, corr.overall, study_dir, tuple(files), tuple(notes),
                         caption(study, examples), granulated=corr.granulated, coupled=corr.coupled,
                         mutual_information=corr.mutual_information, warnings=corr.warnings,
                         eligibility=corr.eligibility, confound=corr.warning, report=corr, findings=found)


def correlations_json(report: CorrelationReport) -> dict:
    """The correlation report as plain JSON (study.json and `samcli compare --json`)."""
    return {"kendall": json.loads(report.overall.to_json(orient="records")),
            "granulated": json.loads(report.granulated.to_json(orient="records")),
            "coupled_pairs": json.loads(report.coupled.to_json(orient="records")),
            "mutual_information": json.loads(report.mutual_information.to_json(orient="records")),
            "warnings": list(report.warnings),
            "axes": list(report.axes), "eligibility": report.eligibility, "confound_warning": report.warning,
            "confound_tolerance": report.tolerance,
            "train_loss_span": None if math.isnan(report.train_loss_span) else report.train_loss_span,
            "confidence": report.confidence}


def table_markdown(study: Study, table: pd.DataFrame, corr: CorrelationReport, notes: Iterable[str] = (),
                   examples: Iterable[int] = (), edge: Iterable[str] = ()) -> str:
    """table.md: the study's table with its caption, the correlation sections and any notes, as markdown."""
    parts = [f"# Study {study.name}", ""]
    if study.description:
        parts += [" ".join(study.description.split()), ""]
    parts += [markdown(display(table)), "", caption(study, examples), ""]
    for heading, frame, lines in sections(corr):
        parts += [f"## {heading}", ""]
        if frame is not None:
            parts += [markdown(frame), ""]
        if lines:
            parts += [line + "  " if i < len(lines) - 1 else line for i, line in enumerate(lines)] + [""]
    edge = list(edge)
    if edge:      # lambda_1 measured during training against the method's stability threshold
        parts += ["## lambda_1 against the stability threshold", ""] + [f"- {line}" for line in edge] + [""]
    notes = list(notes)
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
