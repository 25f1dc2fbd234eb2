"""Baselines: a stored table to check a new one against, under the tolerances the study states.

A study states its checks under `baseline:` (parsed here by `parse_baseline`):

    baseline: {tolerances: {test_accuracy: {abs: 0.03}}, orderings: ["SAM lambda_1 < GD lambda_1"]}

A baseline file (JSON) holds, per configuration, the mean, std and run counts of every metric.
A check compares each metric named in the study's `baseline.tolerances` for each configuration:
it holds when |current - baseline| <= abs + rel * |baseline| (two-sided: a change either way is
flagged, a baseline is a reproducibility check). Each ordering ("SAM lambda_1 < GD lambda_1") is
checked on the new table's means. A configuration that is missing now, or has more diverged or
failed runs than the baseline, is a regression too.

The lifecycle around a study run: `refuse_bad_baseline` before anything trains, `settle_baseline`
after the table is made (write it with update, else check it).
"""
from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from .._version import __version__
from ..config import SamcliError
from .table import ALL_METRICS

if TYPE_CHECKING:                       # grid.py parses a study's baseline section with parse_baseline
    from .grid import Study

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
ORDERING = re.compile(r"^\s*(?P<a>.+?)\s+(?P<ma>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|<|>)\s*"
                      r"(?P<b>.+?)\s+(?P<mb>[A-Za-z_][A-Za-z0-9_]*)\s*$")
DEFAULT_DIR = Path("results/baselines")


class BaselineError(SamcliError):
    """An invalid baseline section of a study (the study loader prefixes the study's name)."""


@dataclass(frozen=True)
class Ordering:
    text: str
    left: str
    left_metric: str
    op: str
    right: str
    right_metric: str


@dataclass(frozen=True)
class Tolerance:
    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, reference: float) -> float:
        return self.abs + self.rel * abs(reference)


# ---- the schema: a study's baseline section ------------------------------------------------------

def parse_baseline(raw: Any, labels: tuple[str, ...]) -> tuple[dict, tuple[Ordering, ...]]:
    """(metric -> Tolerance, orderings) from a study's `baseline:` mapping; `labels` are its configurations."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise BaselineError("baseline must be a mapping with tolerances and orderings")
    unknown = [k for k in raw if k not in ("tolerances", "orderings")]
    if unknown:
        raise BaselineError(f"unknown key baseline.{unknown[0]}; allowed: tolerances, orderings")
    tolerances = {}
    for metric, tol in (raw.get("tolerances") or {}).items():
        if metric not in ALL_METRICS:
            raise BaselineError(f"baseline.tolerances.{metric} is not a table metric; choose from "
                                f"{', '.join(ALL_METRICS)}")
        if not isinstance(tol, dict) or not tol or any(k not in ("abs", "rel") for k in tol):
            raise BaselineError(f"baseline.tolerances.{metric}={tol!r} must be {{abs: x}}, {{rel: y}} or both")
        for k, v in tol.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise BaselineError(f"baseline.tolerances.{metric}.{k}={v!r} must be a number >= 0")
        tolerances[metric] = Tolerance(float(tol.get("abs", 0.0)), float(tol.get("rel", 0.0)))
    orderings = []
    for text in raw.get("orderings") or []:
        match = ORDERING.match(str(text))
        if not match:
            raise BaselineError(f"baseline ordering {text!r} must read 'LABEL METRIC < LABEL METRIC'")
        o = Ordering(str(text), match["a"], match["ma"], match["op"], match["b"], match["mb"])
        for label, metric in ((o.left, o.left_metric), (o.right, o.right_metric)):
            if label not in labels:
                raise BaselineError(f"baseline ordering {text!r} names configuration {label!r}, which the "
                                    f"study does not have; configurations: {', '.join(labels)}")
            if metric not in ALL_METRICS:
                raise BaselineError(f"baseline ordering {text!r} names metric {metric!r}; choose from "
                                    f"{', '.join(ALL_METRICS)}")
        orderings.append(o)
    return tolerances, tuple(orderings)


# ---- the lifecycle around a study run ------------------------------------------------------------

def default_baseline_path(study: Study) -> Path:
    """Where --update-baseline writes when no path is given."""
    return DEFAULT_DIR / f"{study.name}.json"


def refuse_bad_baseline(path: Optional[str | Path], update: bool) -> None:
    """Refuse a baseline to check that is missing or unreadable before anything trains."""
    if path is not None and not update:
        load_baseline(path)


def settle_baseline(study: Study, table: pd.DataFrame, path: Optional[str | Path], update: bool
                    ) -> tuple[Optional[pd.DataFrame], Optional[bool], Optional[Path]]:
    """(diff, verdict, written): with update, write the table as the baseline (to `path` or the default
    path); else, with a path, check the table against it; else nothing."""
    if update:
        return None, None, write_baseline(path or default_baseline_path(study), make_baseline(study, table))
    if path is not None:
        diff, ok = check_baseline(study, table, load_baseline(path))
        return diff, ok, None
    return None, None, None


# ---- baseline files and checks -------------------------------------------------------------------


def _num(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def make_baseline(study: Study, table: pd.DataFrame) -> dict:
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
    from ..runs import write_json
    path = Path(path)
    write_json(path, baseline)
    return path


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SamcliError(f"baseline {path} does not exist; write one with --update-baseline")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise SamcliError(f"baseline {path} is not valid JSON; rewrite it with --update-baseline") from None
    if not isinstance(data, dict) or not isinstance(data.get("configurations"), dict):
        raise SamcliError(f"baseline {path} holds no 'configurations'; rewrite it with --update-baseline")
    return data


def check_baseline(study: Study, table: pd.DataFrame, baseline: dict) -> tuple[pd.DataFrame, bool]:
    """The diff table (one row per check) and whether every check holds."""
    if not study.tolerances and not study.orderings:
        raise SamcliError(f"study {study.name} states no baseline tolerances or orderings; add "
                          "baseline: {tolerances: {test_accuracy: {abs: 0.02}}} to the study")
    if baseline.get("study") not in (None, study.name):
        raise SamcliError(f"the baseline was written for study {baseline.get('study')!r}, not {study.name!r}; "
                          "pass the matching baseline or write one with --update-baseline")
    rows = []
    stored = baseline["configurations"]
    for label, ref in stored.items():
        if label not in table.index:
            rows.append(_row("configuration", label, "", None, None, None, False, "missing from the new table"))
            continue
        now = table.loc[label]
        for what in ("diverged", "failed"):
            before, after = int(ref.get(what, 0)), int(now[what])
            if after > before:
                rows.append(_row("runs", label, what, before, after, 0, False, f"{after - before} more {what} run(s)"))
        if "reached" in ref:    # fewer runs reaching the stop target: those minima are no longer comparable
            before, after = int(ref["reached"]), _num(now.get("reached"))
            if after is None or after < before:
                rows.append(_row("runs", label, "reached", before, after, 0, False,
                                 f"{before} run(s) reached the target in the baseline, {int(after) if after is not None else 0} now"))
        for metric, tol in study.tolerances.items():
            base_value = (ref.get("metrics", {}).get(metric) or {}).get("mean")
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
    for label in table.index:
        if label not in stored and study.tolerances:
            rows.append(_row("configuration", label, "", None, None, None, True, "new (not in the baseline)"))
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
    return diff, bool(diff["ok"].all()) if len(diff) else True


def _row(check, label, metric, baseline, current, allowed, ok, detail) -> dict:
    return {"check": check, "configuration": label, "metric": metric, "baseline": baseline, "current": current,
            "allowed": allowed, "ok": bool(ok), "detail": detail}


def display_diff(diff: pd.DataFrame) -> pd.DataFrame:
    def f(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    return pd.DataFrame([{"check": r["check"], "configuration": r["configuration"], "metric": r["metric"],
                          "baseline": f(r["baseline"]), "current": f(r["current"]),
                          "verdict": "ok" if r["ok"] else "REGRESSION", "detail": r["detail"]}
                         for _, r in diff.iterrows()])
