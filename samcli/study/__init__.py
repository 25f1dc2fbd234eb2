"""`samcli compare`: train every run of a study, measure each, and tabulate sharpness against accuracy.

    import samcli
    result = samcli.compare("configs/ci.yaml")     # CompareResult
    result.table                                   # pandas DataFrame, one row per configuration
    result.correlations                            # Kendall tau-b of each notion with test accuracy

The study directory (default results/studies/<name>) holds study.yaml (the study as run),
runs/<config_hash>/ (one run directory each, see rundir.py), table.csv, table.md, study.json and
the plots. The modules by role: grid.py (a study and its runs), rundir.py (run directories and
records), executors.py (where runs execute), table.py (aggregation, Kendall tau), report.py (the
files and the result), plots.py, baseline.py (the baseline schema, files, checks and lifecycle).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..config import SamcliError, load_yaml
from ..runs import write_yaml
from .baseline import refuse_bad_baseline, settle_baseline
from .executors import Event, ProgressFn, make_executor
from .grid import Study, StudyError, load_study, parse_study
from .lock import StudyBusyError, study_lock
from .report import CompareResult, render
from .rundir import RunRecord, move_aside, run_state

__all__ = ["compare", "render_from", "load_study", "Study", "StudyError", "Event", "CompareResult",
           "RunRecord", "default_study_dir", "StudyBusyError"]

STUDY_FILE = "study.yaml"


def default_study_dir(study: Study) -> Path:
    return Path("results/studies") / study.name


def compare(study=None, *, out: str | Path | None = None, executor: str = "local", jobs: Optional[int] = 1,
            address: Optional[str] = None, progress: Optional[ProgressFn] = None,
            baseline: str | Path | None = None, update_baseline: bool = False, wait: bool = False) -> CompareResult:
    """Run (or reuse) every run of `study` (a YAML path, a dict, a Study or None: the default study),
    measure it, write the study directory and return its tables.

    Every run's config and the sharpness settings are validated before anything trains. The study
    directory is held by one process at a time: another holder raises StudyBusyError, or, with
    `wait`, is waited for. A finished run is reused only when all its files hold up (rundir.run_state);
    any other is moved aside or redone, and the result's notes say which and why.

    `jobs` None picks one process per core (executors.auto_jobs). With `baseline`, the table is
    checked against that baseline file (refused before anything trains if unreadable); with
    `update_baseline`, the table is written as the baseline (to `baseline`, or
    results/baselines/<name>.json)."""
    study = load_study(study)
    runner = make_executor(executor, jobs, address)
    refuse_bad_baseline(baseline, update_baseline)
    study_dir = Path(out) if out is not None else default_study_dir(study)
    make_study_dir(study_dir)
    with study_lock(study_dir, wait):
        return _with_baseline(study, _run_all(study, study_dir, runner, progress or (lambda event: None)),
                              baseline, update_baseline)


def make_study_dir(study_dir: Path) -> None:
    """The study directory and its runs/, or one line saying why they cannot be made."""
    if study_dir.exists() and not study_dir.is_dir():
        raise SamcliError(f"--out {study_dir} is an existing file, not a directory; pass a directory path")
    try:
        (study_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SamcliError(f"cannot create the study directory {study_dir}: {err.strerror}; "
                          "choose a writable directory") from None


def _run_all(study: Study, study_dir: Path, runner, emit: ProgressFn) -> CompareResult:
    """Plan (reuse, measure, train, or move aside and train) and execute every run, then render."""
    runs_dir = study_dir / "runs"
    write_yaml(study_dir / STUDY_FILE, json.loads(json.dumps(study.raw, default=str)))   # plain YAML types
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
    fresh = runner.run(todo, study.sharpness, emit) if todo else []
    by_hash = {r.hash: r for r in fresh}
    records = [by_hash.get(spec.hash) or RunRecord.read(run_dir, spec) for spec, run_dir, _ in plan]
    notes += [f"{r.label} seed {r.seed} failed: {r.error}" for r in records if r.error]
    notes += [f"{r.label} seed {r.seed} diverged at step {r.halted_at}" for r in records if r.status == "diverged"]
    return render(study, records, study_dir, notes)


def render_from(study_dir: str | Path, progress: Optional[ProgressFn] = None, *,
                baseline: str | Path | None = None, update_baseline: bool = False) -> CompareResult:
    """Tables and plots again from a study directory, without training (unfinished runs show as
    missing); `baseline` and `update_baseline` as in `compare`."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_FILE
    if not path.is_file():
        raise SamcliError(f"{study_dir} holds no {STUDY_FILE}; pass a directory written by `samcli compare`")
    study = parse_study(load_yaml(path), str(path))
    refuse_bad_baseline(baseline, update_baseline)
    records, notes = [], []
    for spec in study.runs:
        run_dir = study_dir / "runs" / spec.hash
        action, reason = run_state(run_dir, spec, study.sharpness)
        records.append(RunRecord.read(run_dir, spec) if action == "done" else RunRecord.blank(spec, run_dir))
        if action != "done":
            notes.append(f"{spec.name}: not finished on disk ({reason or 'no run directory'}); shown as missing")
    return _with_baseline(study, render(study, records, study_dir, notes), baseline, update_baseline)


def _with_baseline(study: Study, result: CompareResult, baseline, update_baseline: bool) -> CompareResult:
    diff, ok, written = settle_baseline(study, result.table, baseline, update_baseline)
    return dataclasses.replace(result, baseline_diff=diff, baseline_ok=ok, baseline_written=written)
