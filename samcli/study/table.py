"""From run records to the study's table: one row per configuration, mean and std over seeds
(the rank correlations are correlations.py's).

Conventions (stated in the table's caption as well):
- mean and std over the seeds whose run completed; std is the sample std (ddof 1), blank for one seed;
- diverged, failed or missing runs stay in the table: the row's `runs` column counts them, and a
  configuration whose every seed diverged shows no metric values but still its steps and seconds;
- steps, epochs and seconds (training wall time) are averaged over every run that trained, diverged
  ones too; a run trained to a target stops there, so its epochs are the epochs to the target;
- `reached` counts the completed runs that reached the study's stop target (shown as reached/runs);
  those that missed it stay in the table and are excluded from the correlations only.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..spec.measure import MeasureSpec, columns
from ..spec.methods import gradients_per_step

if TYPE_CHECKING:
    from .rundir import RunRecord
    from .spec import Study

# the run-level metrics; the sharpness columns come from the notion registry (samcli/spec/measure.py)
RUN_METRICS = ("test_accuracy", "test_loss", "train_loss")
# aggregated over every run that trained, diverged ones too; the last two are the cost columns
ALWAYS = ("steps", "epochs", "seconds", "seconds_per_epoch", "gradients_per_step")
RUN_EXTRA = ("train_accuracy", "sharpness_loss", "measure_seconds", "train_seconds")   # aggregated, not printed
RUN_HEADERS = {"test_accuracy": "test acc", "test_loss": "test loss", "train_loss": "train loss", "steps": "steps",
               "epochs": "epochs", "seconds": "seconds", "seconds_per_epoch": "s/epoch",
               "gradients_per_step": "grads/step"}


def all_metrics() -> tuple[str, ...]:
    """Every metric a study aggregates (table.csv, study.json, baselines), the registry's columns included."""
    return RUN_METRICS + tuple(c.key for c in columns()) + ALWAYS + RUN_EXTRA


def headers() -> dict[str, str]:
    """Printed header of each metric."""
    return {**RUN_HEADERS, **{c.key: c.header for c in columns()}}


ALL_METRICS = all_metrics()     # the built-in notions' (a notion registered later: all_metrics())


def _float(value) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _gradients_per_step(optimizer: Optional[dict]) -> Optional[float]:
    try:
        return gradients_per_step(SimpleNamespace(**optimizer)) if optimizer else None
    except (ConfigError, AttributeError, TypeError, ZeroDivisionError):    # a method no longer registered
        return None


def runs_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run: label, seed, status, reached (1 / 0, NaN without a target), test_examples (the
    test-set size, NaN where the run does not record it) and every metric (NaN where absent)."""
    rows = []
    value: Optional[float]       # a run's value of one metric, None when it has none
    for r in records:
        final, sharp = r.final or {}, r.sharpness_summary or {}
        row = {"label": r.label, "seed": r.seed, "hash": r.hash, "method": r.method, "status": r.status,
               "reached": _float(r.reached), "test_examples": _float(r.test_examples)}
        for key in all_metrics():
            if key == "steps":
                value = r.steps
            elif key == "epochs":
                value = r.epochs
            elif key in ("seconds", "train_seconds"):
                value = r.seconds
            elif key == "seconds_per_epoch":
                value = r.seconds / r.epochs if r.seconds is not None and r.epochs else None
            elif key == "gradients_per_step":
                value = _gradients_per_step(r.config.get("optimizer"))
            elif key in final:
                value = final[key]
            else:
                value = sharp.get(key)
            row[key] = _float(value)
        rows.append(row)
    return pd.DataFrame(rows, columns=["label", "seed", "hash", "method", "status", "reached", "test_examples",
                                       *all_metrics()])


def aggregate(runs: pd.DataFrame, labels: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per configuration (index: label), columns <metric>_mean and <metric>_std."""
    labels = list(labels) if labels is not None else list(dict.fromkeys(runs["label"]))
    metrics = [m for m in all_metrics() if m in runs]
    out = []
    for label in labels:
        group = runs[runs["label"] == label]
        ok = group[group["status"] == "completed"]
        trained = group[group["status"].isin(["completed", "diverged"])]
        counts = group["status"].value_counts()
        row = {"label": label, "method": group["method"].iloc[0] if len(group) else None,
               "runs": len(group), "completed": int(counts.get("completed", 0)),
               "diverged": int(counts.get("diverged", 0)),
               "failed": int(counts.get("failed", 0)), "missing": int(len(group) - counts.get("completed", 0)
                                                                     - counts.get("diverged", 0)
                                                                     - counts.get("failed", 0)),
               "status": status_text(counts, len(group))}
        targets = ok["reached"].dropna() if "reached" in ok else pd.Series(dtype=float)
        row["reached"] = int((targets == 1).sum()) if len(targets) else math.nan
        for metric in metrics:
            values = (trained if metric in ALWAYS else ok)[metric].dropna()
            row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            finite = len(values) > 1 and bool(np.isfinite(values).all())   # R^Asc is +inf where g = 0
            row[f"{metric}_std"] = values.std(ddof=1) if finite else math.nan
        out.append(row)
    return pd.DataFrame(out).set_index("label")


def status_text(counts: pd.Series, total: int) -> str:
    """"ok" when every run completed, else the runs by status in words ("4 completed, 1 diverged")."""
    parts = [f"{int(counts[k])} {k}" for k in ("completed", "diverged", "failed", "missing", "running",
                                               "interrupted") if counts.get(k, 0)]
    other = total - sum(int(counts.get(k, 0)) for k in ("completed", "diverged", "failed", "missing", "running",
                                                         "interrupted"))
    if other:
        parts.append(f"{other} other")
    if parts == [f"{total} completed"]:
        return "ok"
    return ", ".join(parts)


# ---- Kendall tau-b -----------------------------------------------------------------------------

def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b: (C - D) / sqrt((P - Tx)(P - Ty)), with P = n(n-1)/2 pairs, C / D the concordant /
    discordant pairs, Tx / Ty the pairs tied in x / in y. NaN for fewer than two points or a constant
    variable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    n = len(x)
    if n < 2:
        return math.nan
    upper = np.triu_indices(n, 1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    pairs = n * (n - 1) / 2
    tied_x, tied_y = float((dx == 0).sum()), float((dy == 0).sum())
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    if denominator == 0:
        return math.nan
    return float((dx * dy).sum() / denominator)


# ---- rendering ---------------------------------------------------------------------------------

def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, 'mean ± std', one column per metric (as printed and in table.md); a
    `reached` column (reached / runs) when the study trains to a target, the adaptive notions when
    measured."""
    shown = [c.key for c in columns() if c.shown and table.get(f"{c.key}_mean", pd.Series(dtype=float)).notna().any()]
    metrics = [*RUN_METRICS, *shown, *ALWAYS]
    names = headers()
    targets = "reached" in table and table["reached"].notna().any()
    sgd_cost = _sgd_cost(table)
    rows = []
    for label, row in table.iterrows():
        out = {"configuration": label, "runs": _runs_cell(row)}
        if targets:
            out["reached"] = "" if math.isnan(row["reached"]) else f"{int(row['reached'])}/{int(row['runs'])}"
        for metric in metrics:
            mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
            if metric == "steps":
                cell = _fmt(mean, 6)
            elif metric in ("seconds", "epochs", "seconds_per_epoch", "gradients_per_step"):
                cell = _fmt(mean, 3)
            else:
                cell = _fmt(mean) + (f" ± {_fmt(std, 2)}" if not math.isnan(std) else "")
            if not cell and row["completed"] == 0 and metric not in ALWAYS:
                cell = "diverged" if row["diverged"] else "-"
            out[names[metric]] = cell
        if sgd_cost is not None:
            out["s/epoch vs sgd"] = _fmt(row.get("seconds_per_epoch_mean", math.nan) / sgd_cost, 3) + "x"
        rows.append(out)
    return pd.DataFrame(rows)


def _sgd_cost(table: pd.DataFrame) -> Optional[float]:
    """Seconds per epoch of the study's SGD configuration when it has exactly one (the cost baseline)."""
    sgd = table[table["method"] == "sgd"] if "method" in table else table.iloc[0:0]
    cost = sgd["seconds_per_epoch_mean"].iloc[0] if len(sgd) == 1 and "seconds_per_epoch_mean" in sgd else math.nan
    return None if math.isnan(cost) or cost <= 0 else float(cost)


def _runs_cell(row) -> str:
    return str(int(row["runs"])) if row["status"] == "ok" else f"{int(row['runs'])} ({row['status']})"


def caption(study: Study, examples: Iterable[int] = ()) -> str:
    """The study table's caption: what ran, how values aggregate, how sharpness was measured, what columns mean."""
    s = study.sharpness
    examples = sorted(set(examples))
    counts = "/".join(str(e) for e in examples) if examples else "?"
    samples = (f"the whole training set ({counts} examples)" if s.get("samples") is None else
               f"a seeded subset of at most {s['samples']} training examples ({counts} measured)")
    seeds = sorted({r.seed for r in study.runs})
    targets = {_target_text(r.config.stop) for r in study.runs} - {""}
    trained = (f"Every run trains until {' / '.join(sorted(targets))} (checked at each evaluation) or its step cap; "
               f"reached counts the completed runs that got there, epochs are epochs trained (to the target "
               f"when reached). " if targets else "")
    return (f"Study {study.name}: {len(study.labels)} configurations x {len(seeds)} seeds ({len(study.runs)} runs). "
            f"{trained}Values are mean ± sample std over seeds whose run completed; steps, epochs and seconds "
            f"(training wall time) over every run that trained. Sharpness at rho={s.get('rho')} measured on {samples} "
            f"(model in eval mode; {_spec_text(s)}): lambda_1 (top Hessian eigenvalue, Lanczos), Tr (Hessian trace), "
            f"R^Max/R^Asc/R^Avg the worst/ascent/average-direction sharpness at finite rho, alignment |cos(g, v_1)|. "
            f"Diverged runs and runs that missed the target are counted and never dropped silently.")


def _spec_text(sharpness: dict) -> str:
    """The measurement spec in a few words: its hash and the knobs it sets away from their defaults."""
    spec = MeasureSpec.build(sharpness)
    defaults = MeasureSpec().to_dict()
    changed = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in spec.to_dict().items()
               if k not in ("rho", "samples") and v != defaults[k]]
    return f"spec {spec.hash()}" + (f": {', '.join(changed)}" if changed else ", every other knob at its default")


def _target_text(stop) -> str:
    parts = ([f"train loss <= {stop.train_loss:g}"] if stop.train_loss is not None else []) + \
            ([f"train accuracy >= {stop.train_accuracy:g}"] if stop.train_accuracy is not None else [])
    return " and ".join(parts)


def markdown(frame: pd.DataFrame) -> str:
    """The frame as a Markdown table, every column but the first right-aligned, pipes in cells escaped."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)
