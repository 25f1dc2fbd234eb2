"""`samcli compare`: train every run of a study, measure each, and tabulate sharpness against accuracy.

    import samcli
    table = samcli.compare("configs/ci.yaml")          # pandas DataFrame, one row per configuration
    table.attrs["correlations"]                        # Kendall tau-b of each notion with test accuracy

The study directory (default results/studies/<name>) holds study.yaml (the study as run),
runs/<config_hash>/ (one run directory each), table.csv, table.md, study.json and the plots.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from ..config import SamcliError
from ..runs import write_json, write_yaml
from .executors import Event, ProgressFn, blank_record, load_record, move_aside, run_local, run_ray, run_state
from .grid import Study, StudyError, load_study, parse_study
from .table import aggregate, caption, correlations, runs_frame, table_markdown

__all__ = ["compare", "render_from", "load_study", "Study", "StudyError", "Event", "default_study_dir"]

STUDY_FILE = "study.yaml"
OUTPUTS = ("table.csv", "table.md", "study.json")


def default_study_dir(study: Study) -> Path:
    return Path("results/studies") / study.name


def compare(study=None, *, out: str | Path | None = None, executor: str = "local", jobs: int = 1,
            address: Optional[str] = None, progress: Optional[ProgressFn] = None) -> pd.DataFrame:
    """Run (or reuse) every run of `study` (a YAML path, a dict, a Study or None: the default study),
    measure it, write the study directory and return the table (index: configuration).

    `table.attrs` carries: correlations (DataFrame), runs (per-run DataFrame), study_dir, files, notes."""
    study = load_study(study)
    if executor not in ("local", "ray"):
        raise SamcliError(f"--executor {executor!r} is unknown; choose local or ray")
    if jobs < 1:
        raise SamcliError(f"--jobs {jobs} must be >= 1")
    study_dir = Path(out) if out is not None else default_study_dir(study)
    runs_dir = study_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(study_dir / STUDY_FILE, json.loads(json.dumps(study.raw, default=str)))   # plain YAML types
    emit = progress or (lambda event: None)

    plan, notes = [], []
    for spec in study.runs:
        run_dir = runs_dir / spec.hash
        action, reason = run_state(run_dir, spec, study.sharpness)
        if action == "stale":
            moved = move_aside(run_dir)
            note = f"{spec.name}: run directory {run_dir.name} not trusted ({reason}); moved to {moved.name}, rerunning"
            notes.append(note)
            emit(Event("note", spec.hash, spec.label, spec.seed, message=note))
            action = "train"
        elif reason and action != "done":
            emit(Event("note", spec.hash, spec.label, spec.seed, message=f"{spec.name}: {reason}; "
                       + ("measuring again" if action == "measure" else "training again")))
        plan.append((spec, run_dir, action))
    todo = [(s, d, a) for s, d, a in plan if a != "done"]
    emit(Event("plan", total=len(plan), step=len(plan) - len(todo),
               message=f"{len(plan) - len(todo)} of {len(plan)} runs already done"))
    if executor == "ray":
        fresh = run_ray(todo, study.sharpness, address, emit) if todo else []
    else:
        fresh = run_local(todo, study.sharpness, jobs, emit) if todo else []
    by_hash = {r["hash"]: r for r in fresh}
    records = [by_hash.get(spec.hash) or load_record(run_dir, spec) for spec, run_dir, _ in plan]
    for r in records:
        if r.get("error"):
            notes.append(f"{r['label']} seed {r['seed']} failed: {r['error']}")
    return render(study, records, study_dir, notes)


def render_from(study_dir: str | Path, progress: Optional[ProgressFn] = None) -> pd.DataFrame:
    """Tables and plots again from a study directory, without training (unfinished runs show as missing)."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_FILE
    if not path.is_file():
        raise SamcliError(f"{study_dir} holds no {STUDY_FILE}; pass a directory written by `samcli compare`")
    from ..config import load_yaml
    study = parse_study(load_yaml(path), str(path))
    records, notes = [], []
    for spec in study.runs:
        run_dir = study_dir / "runs" / spec.hash
        action, reason = run_state(run_dir, spec, study.sharpness)
        record = load_record(run_dir, spec) if action == "done" else blank_record(spec, run_dir)
        if action != "done":
            notes.append(f"{spec.name}: not finished on disk ({reason or 'no run directory'}); shown as missing")
        records.append(record)
    return render(study, records, study_dir, notes)


def render(study: Study, records: list[dict], study_dir: Path, notes: list[str]) -> pd.DataFrame:
    from .plots import ACCURACY_PLOT, TRAINING_PLOT, accuracy_vs_sharpness, sharpness_during_training
    study_dir = Path(study_dir)
    runs = runs_frame(records)
    table = aggregate(runs, study.labels)
    corr = correlations(runs)
    table.to_csv(_tmp(study_dir / "table.csv"))
    _commit(study_dir / "table.csv")
    examples = [r["sharpness"]["examples"] for r in records if r.get("sharpness") and "examples" in r["sharpness"]]
    text = table_markdown(study, table, corr, notes, examples)
    _write_text(study_dir / "table.md", text)
    write_json(study_dir / "study.json", {
        "study": {"name": study.name, "source": study.source, "definition": study.raw,
                  "sharpness": study.sharpness},
        "runs": [{**r, "run_dir": _relative(r["run_dir"], study_dir)} for r in records],
        "table": json.loads(table.reset_index().to_json(orient="records")),
        "correlations": json.loads(corr.reset_index().to_json(orient="records")),
        "notes": notes})
    files = [study_dir / name for name in OUTPUTS]
    for plot in (accuracy_vs_sharpness(runs, study_dir / ACCURACY_PLOT, list(study.labels), study.name),
                 sharpness_during_training(records, study_dir / TRAINING_PLOT, list(study.labels), study.name)):
        if plot is not None:
            files.append(plot)
    table.attrs.update(correlations=corr, runs=runs, study_dir=str(study_dir), files=[str(f) for f in files],
                       notes=list(notes), study=study.name, caption=caption(study, examples))
    return table


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _commit(path: Path) -> None:
    import os
    os.replace(_tmp(path), path)


def _write_text(path: Path, text: str) -> None:
    _tmp(path).write_text(text)
    _commit(path)
