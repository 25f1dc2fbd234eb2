"""Baselines: a stored table to check a new one against, under the checks the study states.

A study states its checks under `baseline:` (parsed with the study, by spec.parse_checks):

    baseline: {tolerances: {test_accuracy: {abs: 0.03}}, orderings: ["SAM lambda_1 < GD lambda_1"]}

A baseline file (JSON) holds, per configuration, the mean, std and run counts of every metric;
`load_baseline` type-checks every field of it. A check compares each metric named in the study's
`baseline.tolerances` for each configuration: it holds when |current - baseline| <= abs + rel *
|baseline| (two-sided: a change either way is flagged, a baseline is a reproducibility check). Each
ordering ("SAM lambda_1 < GD lambda_1") is checked on the new table's means. A configuration that
is missing now, new (unless allowed), or has more diverged or failed runs than the baseline, is a
regression too; a check with nothing to compare never holds.

The lifecycle around a study run: `refuse_bad_baseline` before anything trains, `settle_baseline`
after the table is made (write it with update, else check it).
"""
from __future__ import annotations

import json
import math
import operator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from .._version import __version__
from ..config import SamcliError
from .spec import Study

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
DEFAULT_DIR = Path("results/baselines")
COUNTS = ("runs", "completed", "diverged", "failed")
CONFIGURATION_KEYS = (*COUNTS, "reached", "metrics")
FILE_KEYS = ("study", "samcli", "created", "configurations")


class BaselineError(SamcliError):
    """A baseline file that cannot be checked against, or a study that cannot have a baseline."""


# ---- the lifecycle around a study run ------------------------------------------------------------

def default_baseline_path(study: Study) -> Path:
    """Where --update-baseline writes when no path is given."""
    return DEFAULT_DIR / f"{study.name}.json"


def refuse_bad_baseline(study: Study, path: Optional[str | Path], update: bool) -> None:
    """Before anything trains: a baseline to write or check needs a study that states checks (a baseline
    of a study without them could never be checked), and a baseline to check must be a valid file
    written for this study."""
    if path is None and not update:
        return
    stored = load_baseline(path) if path is not None and not update else None
    if not study.has_checks:
        raise BaselineError(f"study {study.name} states no baseline tolerances or orderings, so a baseline "
                            "could check nothing; add baseline: {tolerances: {test_accuracy: {abs: 0.02}}} "
                            "to the study")
    if stored is not None:
        _same_study(study, stored, path)


def settle_baseline(study: Study, table: pd.DataFrame, path: Optional[str | Path], update: bool,
                    allow_new: bool = False) -> tuple[Optional[pd.DataFrame], Optional[bool], Optional[Path]]:
    """(diff, verdict, written): with update, write the table as the baseline (to `path` or the default
    path); else, with a path, check the table against it (`allow_new`: a configuration the baseline
    does not have is not a regression); else nothing."""
    if update:
        return None, None, write_baseline(path or default_baseline_path(study), make_baseline(study, table))
    if path is not None:
        diff, ok = check_baseline(study, table, load_baseline(path), allow_new)
        return diff, ok, None
    return None, None, None


# ---- baseline files and checks -------------------------------------------------------------------


def _num(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def make_baseline(study: Study, table: pd.DataFrame) -> dict:
    """A baseline from a study's aggregated table: per configuration its run counts and each metric's mean and std."""
    rows = {}
    for label, row in table.iterrows():
        metrics = {}
        for column in table.columns:
            if column.endswith("_mean"):
                metric = column[:-5]
                metrics[metric] = {"mean": _num(row[column]), "std": _num(row.get(f"{metric}_std"))}
        rows[label] = {"runs": int(row["runs"]), "completed": int(row["completed"]),
                       "diverged": int(row["diverged"]), "failed": int(row["failed"]), "metrics": metrics}
        if _num(row.get("reached")) is not None:      # a study that trains to a target
            rows[label]["reached"] = int(row["reached"])
    return {"study": study.name, "samcli": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "configurations": rows}


def write_baseline(path: str | Path, baseline: dict) -> Path:
    """Write `baseline` as JSON to `path`; return the path."""
    from ..runs import write_json
    path = Path(path)
    write_json(path, baseline)
    return path


def load_baseline(path: str | Path) -> dict:
    """A baseline file, every field type-checked (one line naming the first bad one)."""
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"baseline {path} does not exist; write one with --update-baseline")
    try:
        # NaN and Infinity are not JSON; Python's parser takes them unless told otherwise
        data = json.loads(path.read_text(), parse_constant=lambda word: _not_json(path, word))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise BaselineError(f"baseline {path} is not valid JSON; rewrite it with --update-baseline") from None
    problem = baseline_problem(data)
    if problem:
        raise BaselineError(f"baseline {path}: {problem}; fix it or rewrite it with --update-baseline")
    return data


def _not_json(path: Path, word: str):
    raise BaselineError(f"baseline {path} holds {word}, which is not JSON (a missing value is null); "
                        "rewrite it with --update-baseline")


def baseline_problem(data: Any) -> str:
    """What is wrong with a baseline's contents ('' when nothing): its keys, and the type of every field."""
    if not isinstance(data, dict):
        return "holds no mapping with 'configurations'"
    unknown = [k for k in data if k not in FILE_KEYS]
    if unknown:
        return f"unknown key {unknown[0]!r} (allowed: {', '.join(FILE_KEYS)})"
    for key in ("study", "samcli", "created"):
        if key in data and not isinstance(data[key], str):
            return f"{key}={data[key]!r} must be a string"
    configurations = data.get("configurations")
    if not isinstance(configurations, dict):
        return "holds no 'configurations' (a mapping of configuration -> its counts and metrics)"
    if not configurations:
        return "has an empty 'configurations': a baseline that names no configuration would check nothing"
    for label, ref in configurations.items():
        where = f"configurations.{label}"
        if not isinstance(ref, dict):
            return f"{where} must be a mapping of counts and metrics"
        unknown = [k for k in ref if k not in CONFIGURATION_KEYS]
        missing = [k for k in (*COUNTS, "metrics") if k not in ref]
        if unknown or missing:
            return (f"{where} has unknown key {unknown[0]!r} (allowed: {', '.join(CONFIGURATION_KEYS)})" if unknown
                    else f"{where} has no {missing[0]!r}")
        for key in (*COUNTS, "reached"):
            value = ref.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"{where}.{key}={value!r} must be a whole number >= 0"
        if not isinstance(ref["metrics"], dict):
            return f"{where}.metrics must be a mapping of metric -> {{mean, std}}"
        for metric, stats in ref["metrics"].items():
            if not isinstance(stats, dict) or set(stats) - {"mean", "std"}:
                return f"{where}.metrics.{metric}={stats!r} must be a mapping with mean and std"
            for key, value in stats.items():
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not math.isfinite(value)):
                    return f"{where}.metrics.{metric}.{key}={value!r} must be a finite number or null"
    return ""


def _same_study(study: Study, baseline: dict, path: Optional[str | Path] = None) -> None:
    if baseline.get("study") not in (None, study.name):
        raise BaselineError(f"the baseline{' ' + str(path) if path else ''} was written for study "
                            f"{baseline.get('study')!r}, not {study.name!r}; pass the matching baseline or write "
                            "one with --update-baseline")


def check_baseline(study: Study, table: pd.DataFrame, baseline: dict, allow_new: bool = False
                   ) -> tuple[pd.DataFrame, bool]:
    """The diff table (one row per check) and whether every check holds. A configuration of the study
    that the baseline lacks is a regression unless `allow_new`; one the study lacks always is; a diff
    that compares nothing does not hold."""
    if not study.has_checks:
        raise BaselineError(f"study {study.name} states no baseline tolerances or orderings; add "
                            "baseline: {tolerances: {test_accuracy: {abs: 0.02}}} to the study")
    _same_study(study, baseline)
    rows = []
    stored = baseline["configurations"]
    for label, ref in stored.items():
        if label not in table.index:
            rows.append(_row("configuration", label, "", None, None, None, False, "missing from the new table"))
            continue
        rows += _configuration_rows(study, label, ref, table.loc[label])
    labels = list(dict.fromkeys([*study.labels, *table.index]))
    for label in labels:
        if label not in stored:
            rows.append(_row("configuration", label, "", None, None, None, allow_new,
                             "new (not in the baseline; allowed by --allow-new)" if allow_new else
                             "new: not in the baseline; pass --allow-new or rewrite it with --update-baseline"))
    if not any(label in stored for label in labels):
        rows.append(_row("configuration", "", "", None, None, None, False,
                         "no configuration of the study is in the baseline: nothing was compared"))
    for metric in study.tolerances:     # a metric no configuration has on either side checks nothing
        if not any(r["metric"] == metric and r["check"] == "tolerance" and r["baseline"] is not None
                   for r in rows):
            rows.append(_row("tolerance", "", metric, None, None, None, False,
                             f"no configuration has {metric} in the baseline: the tolerance checks nothing"))
    for o in study.orderings:
        left = _num(table.loc[o.left, f"{o.left_metric}_mean"]) if o.left in table.index else None
        right = _num(table.loc[o.right, f"{o.right_metric}_mean"]) if o.right in table.index else None
        ok = left is not None and right is not None and OPS[o.op](left, right)
        if left is None or right is None:
            detail = "a value is missing"
        else:
            detail = f"{left:.4g} {o.op} {right:.4g} {'holds' if ok else 'does not hold'}"
        rows.append(_row("ordering", o.text, "", None, None, None, ok, detail))
    diff = pd.DataFrame(rows, columns=["check", "configuration", "metric", "baseline", "current", "allowed",
                                       "ok", "detail"])
    return diff, bool(len(diff)) and bool(diff["ok"].all())


def _configuration_rows(study: Study, label: str, ref: dict, now: pd.Series) -> list[dict]:
    """The checks of one configuration that both the baseline and the new table hold."""
    rows = []
    for what in ("diverged", "failed"):
        before, after = int(ref.get(what, 0)), int(now[what])
        if after > before:
            rows.append(_row("runs", label, what, before, after, 0, False, f"{after - before} more {what} run(s)"))
    if "reached" in ref:    # fewer runs reaching the stop target: those minima are no longer comparable
        before, after = int(ref["reached"]), _num(now.get("reached"))
        if after is None or after < before:
            rows.append(_row("runs", label, "reached", before, after, 0, False,
                             f"{before} run(s) reached the target in the baseline, "
                             f"{int(after) if after is not None else 0} now"))
    for metric, tol in study.tolerances.items():
        base_value = (ref["metrics"].get(metric) or {}).get("mean")
        current = _num(now.get(f"{metric}_mean"))
        if base_value is None and current is None:
            rows.append(_row("tolerance", label, metric, None, None, None, True, "absent in both"))
            continue
        if base_value is None or current is None:
            rows.append(_row("tolerance", label, metric, base_value, current, None, False,
                             "absent in the " + ("baseline" if base_value is None else "new table")))
            continue
        allowed = tol.allowed(base_value)
        delta = current - base_value
        ok = abs(delta) <= allowed
        rows.append(_row("tolerance", label, metric, base_value, current, allowed, ok,
                         f"|delta| {abs(delta):.3g} {'<=' if ok else '>'} {allowed:.3g}"))
    return rows


def _row(check, label, metric, baseline, current, allowed, ok, detail) -> dict:
    return {"check": check, "configuration": label, "metric": metric, "baseline": baseline, "current": current,
            "allowed": allowed, "ok": bool(ok), "detail": detail}


def display_diff(diff: pd.DataFrame) -> pd.DataFrame:
    """The baseline diff for display: numbers as text, each check's verdict as 'ok' or 'REGRESSION'."""
    def f(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    return pd.DataFrame([{"check": r["check"], "configuration": r["configuration"], "metric": r["metric"],
                          "baseline": f(r["baseline"]), "current": f(r["current"]),
                          "verdict": "ok" if r["ok"] else "REGRESSION", "detail": r["detail"]}
                         for _, r in diff.iterrows()])
