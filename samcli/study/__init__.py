"""`samcli compare`: train every run of a study, measure each, and tabulate sharpness against accuracy.

    import samcli
    result = samcli.compare("configs/ci.yaml")     # CompareResult
    result.table                                   # pandas DataFrame, one row per configuration
    result.correlations                            # Kendall tau-b of each notion with accuracy and gaps

The study directory (default results/studies/<name>) holds study.yaml (the study as run),
runs/<config_hash>/ (one run directory each, see rundir.py), table.csv, table.md, study.json and
the plots; it holds one study (another is refused unless `overwrite`). The modules by role:
spec.py (Study, RunSpec, Tolerance, Ordering: the bottom of the floor), grid.py (building a study),
rundir.py (run directories and
records), given.py (run directories the study tabulates but never trains: `runs:`), executors.py
(where runs execute), table.py (aggregation, Kendall tau-b), correlations.py
(the pooled tau and its two-level interval, gaps, confounds, the report), stats.py (granulated Kendall,
permutation p-values), robust.py (coupled pairs, conditional mutual information, design warnings),
sections.py (the report as tables and lines), report.py (the files and the result), plots.py,
baseline.py (the baseline files, checks and lifecycle); docs/statistics.md defines the statistics.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

from ..config import SamcliError, load_yaml
from ..runs import refuse_empty_out, write_yaml
from .baseline import refuse_bad_baseline, settle_baseline
from .executors import Event, ProgressFn, make_executor
from .given import adopt
from .grid import load_study, parse_study
from .lock import StudyBusyError, study_lock
from .report import CompareResult, render
from .rundir import RunRecord, move_aside, run_state
from .spec import Study, StudyError

__all__ = ["compare", "render_from", "load_study", "given_study", "Study", "StudyError", "Event", "CompareResult",
           "RunRecord", "default_study_dir", "StudyBusyError"]

STUDY_FILE = "study.yaml"


def default_study_dir(study: Study) -> Path:
    """Where a study's directory goes by default: results/studies/<name>."""
    return Path("results/studies") / study.name


def compare(study=None, *, out: str | Path | None = None, executor: str = "local", jobs: Optional[int] = 1,
            address: Optional[str] = None, progress: Optional[ProgressFn] = None,
            baseline: str | Path | None = None, update_baseline: bool = False, wait: bool = False,
            allow_new: bool = False, overwrite: bool = False) -> CompareResult:
    """Run (or reuse) every run of `study` (a YAML path, a dict, a Study or None: the default study),
    measure it, write the study directory and return its tables.

    Every run's config and the sharpness settings are validated before anything trains. The study
    directory is held by one process at a time: another holder raises StudyBusyError, or, with
    `wait`, is waited for. A finished run is reused only when all its files hold up (rundir.run_state);
    any other is moved aside or redone, and the result's notes say which and why.

    A directory that holds another study (its study.yaml names another) is refused unless
    `overwrite`: then it becomes this study's, its run directories reused where their configs match.

    `jobs` None picks one process per core (executors.auto_jobs). With `baseline`, the table is
    checked against that baseline file (refused before anything trains if unreadable or not this
    study's; `allow_new`: configurations the baseline lacks are not regressions); with
    `update_baseline`, the table is written as the baseline (to `baseline`, or
    results/baselines/<name>.json). Either needs a study that states baseline checks."""
    study = load_study(study)
    runner = make_executor(executor, jobs, address)
    refuse_bad_baseline(study, baseline, update_baseline)
    refuse_empty_out(out, "results/studies/NAME")
    study_dir = Path(out) if out is not None else default_study_dir(study)
    make_study_dir(study_dir)
    with study_lock(study_dir, wait):
        refuse_other_study(study_dir, study, overwrite)
        return _with_baseline(study, _run_all(study, study_dir, runner, progress or (lambda event: None)),
                              baseline, update_baseline, allow_new)


def given_study(paths, name: str = "runs", sharpness: Optional[dict] = None) -> Study:
    """The ad-hoc study of existing run directories (`samcli compare --runs DIR ...`): each given run
    measured (or its report reused) and tabulated, none trained; configurations are the runs' configs
    less their seeds."""
    raw: dict = {"name": name, "runs": [str(Path(p).absolute()) for p in paths]}
    if sharpness is not None:
        raw["sharpness"] = sharpness
    return parse_study(raw)


def make_study_dir(study_dir: Path) -> None:
    """The study directory and its runs/, or one line saying why they cannot be made."""
    if study_dir.exists() and not study_dir.is_dir():
        raise SamcliError(f"--out {study_dir} is an existing file, not a directory; pass a directory path")
    try:
        (study_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SamcliError(f"cannot create the study directory {study_dir}: {err.strerror}; "
                          "choose a writable directory") from None


def refuse_other_study(study_dir: Path, study: Study, overwrite: bool) -> None:
    """One study per directory: resuming the same study is fine, writing another over it is not
    (its tables and study.yaml would be replaced) unless `overwrite`."""
    path = study_dir / STUDY_FILE
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    try:
        name = load_yaml(path).get("name") if not path.is_symlink() else "?"
    except (SamcliError, OSError, AttributeError):
        name = "?"
    if name is None or name == study.name:       # an older study.yaml without its name: cannot tell, resume
        return
    what = f"study {name!r}" if name != "?" else f"a {STUDY_FILE} that cannot be read"
    raise SamcliError(f"study directory {study_dir} holds {what}, not {study.name!r}; pass another --out, "
                      "or --overwrite to make it this study's")


def link_problem(run_dir: Path) -> str:
    """Why a run directory is not trusted because of a symlink ('' when none): reading through one could
    reuse, and writing through one could change, files outside the study directory."""
    if run_dir.is_symlink():
        return f"it is a symlink (to {os.readlink(run_dir)}), not a directory"
    if run_dir.is_dir():
        links = sorted(p.name for p in run_dir.iterdir() if p.is_symlink())
        if links:
            return f"it holds the symlink {links[0]}"
    return ""


def _run_all(study: Study, study_dir: Path, runner, emit: ProgressFn) -> CompareResult:
    """Plan (reuse, measure, train, or move aside and train) and execute every run, then render."""
    runs_dir = study_dir / "runs"
    if runs_dir.is_symlink():
        raise SamcliError(f"{runs_dir} is a symlink; a study's runs stay inside its directory: replace it "
                          "with a directory")
    # plain YAML types; the name too, so a later run can tell whether the directory is its study's
    write_yaml(study_dir / STUDY_FILE, json.loads(json.dumps({"name": study.name, **study.raw}, default=str)))
    plan, notes = [], []
    failed: dict[str, RunRecord] = {}        # given runs that cannot be used: failed, never trained
    for spec in study.runs:
        run_dir = runs_dir / spec.hash
        linked = link_problem(run_dir)
        if spec.given is not None:
            action, reason = adopt(spec, run_dir, study.sharpness, linked)
        else:
            action, reason = ("stale", linked) if linked else run_state(run_dir, spec, study.sharpness)
        if action == "failed":
            failed[spec.hash] = RunRecord.failed(spec, run_dir, SamcliError(reason))
            action = "done"
        elif action == "stale":
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
    records = [by_hash.get(spec.hash) or failed.get(spec.hash) or RunRecord.read(run_dir, spec)
               for spec, run_dir, _ in plan]
    notes += [f"{r.label} seed {r.seed} failed: {r.error}" for r in records if r.error]
    notes += [f"{r.label} seed {r.seed} diverged at step {r.halted_at}" for r in records if r.status == "diverged"]
    return render(study, records, study_dir, notes)


def render_from(study_dir: str | Path, progress: Optional[ProgressFn] = None, *,
                baseline: str | Path | None = None, update_baseline: bool = False,
                allow_new: bool = False) -> CompareResult:
    """Tables and plots again from a study directory, without training (unfinished runs show as
    missing); `baseline` and `update_baseline` as in `compare`."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_FILE
    if not path.is_file():
        raise SamcliError(f"{study_dir} holds no {STUDY_FILE}; pass a directory written by `samcli compare`")
    study = parse_study(load_yaml(path), str(path))
    refuse_bad_baseline(study, baseline, update_baseline)
    records, notes = [], []
    for spec in study.runs:
        run_dir = study_dir / "runs" / spec.hash
        linked = link_problem(run_dir) or ("runs/ is a symlink" if run_dir.parent.is_symlink() else "")
        action, reason = ("stale", linked) if linked else run_state(run_dir, spec, study.sharpness)
        records.append(RunRecord.read(run_dir, spec) if action == "done" else RunRecord.blank(spec, run_dir))
        if action != "done":
            notes.append(f"{spec.name}: not finished on disk ({reason or 'no run directory'}); shown as missing")
    return _with_baseline(study, render(study, records, study_dir, notes), baseline, update_baseline, allow_new)


def _with_baseline(study: Study, result: CompareResult, baseline, update_baseline: bool,
                   allow_new: bool = False) -> CompareResult:
    diff, ok, written = settle_baseline(study, result.table, baseline, update_baseline, allow_new)
    return dataclasses.replace(result, baseline_diff=diff, baseline_ok=ok, baseline_written=written)
