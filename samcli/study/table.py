"""From run records to the study's table: one row per configuration, mean and std over seeds,
and the Kendall tau-b of each sharpness notion with test accuracy across all runs.

Conventions (stated in the table's caption as well):
- mean and std over the seeds whose run completed; std is the sample std (ddof 1), blank for one seed;
- diverged, failed or missing runs stay in the table: the row's `runs` column counts them, and a
  configuration whose every seed diverged shows no metric values but still its steps and seconds;
- steps and seconds (training wall time) are averaged over every run that trained, diverged ones too.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .grid import Study
    from .rundir import RunRecord

# the table's metrics (run level), in table order; sharpness ones come from SharpnessReport.summary()
METRICS = ("test_accuracy", "test_loss", "train_loss", "lambda_1", "trace", "r_asc", "r_max", "r_avg",
           "alignment", "steps", "seconds")
# also aggregated (table.csv, study.json, baselines), not printed
EXTRA_METRICS = ("train_accuracy", "rayleigh", "grad_norm", "stoch_lambda_1", "stoch_r_asc", "sharpness_loss",
                 "measure_seconds", "train_seconds")
ALL_METRICS = METRICS + EXTRA_METRICS
NOTIONS = {"lambda_1": "lambda_1", "trace": "Tr", "r_max": "R^Max_rho", "r_asc": "R^Asc_rho",
           "r_avg": "R^Avg_rho", "stoch_lambda_1": "E_k lambda_1(H_k)"}
HEADERS = {"test_accuracy": "test acc", "test_loss": "test loss", "train_loss": "train loss",
           "lambda_1": "lambda_1", "trace": "Tr", "r_asc": "R^Asc_rho", "r_max": "R^Max_rho",
           "r_avg": "R^Avg_rho", "alignment": "alignment", "steps": "steps", "seconds": "seconds"}
ALWAYS = ("steps", "seconds")          # aggregated over every run that trained, diverged ones too


def _float(value) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def runs_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run: label, seed, status and every metric (NaN where absent)."""
    rows = []
    for r in records:
        final, sharp = r.final or {}, r.sharpness_summary or {}
        row = {"label": r.label, "seed": r.seed, "hash": r.hash, "method": r.method, "status": r.status}
        for key in ALL_METRICS:
            if key == "steps":
                value = r.steps
            elif key in ("seconds", "train_seconds"):
                value = r.seconds
            elif key in final:
                value = final[key]
            else:
                value = sharp.get(key)
            row[key] = _float(value)
        rows.append(row)
    columns = ["label", "seed", "hash", "method", "status", *ALL_METRICS]
    return pd.DataFrame(rows, columns=columns)


def aggregate(runs: pd.DataFrame, labels: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per configuration (index: label), columns <metric>_mean and <metric>_std."""
    labels = list(labels) if labels is not None else list(dict.fromkeys(runs["label"]))
    metrics = [m for m in ALL_METRICS if m in runs]
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
        for metric in metrics:
            values = (trained if metric in ALWAYS else ok)[metric].dropna()
            row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            finite = len(values) > 1 and bool(np.isfinite(values).all())   # R^Asc is +inf where g = 0
            row[f"{metric}_std"] = values.std(ddof=1) if finite else math.nan
        out.append(row)
    return pd.DataFrame(out).set_index("label")


def status_text(counts: pd.Series, total: int) -> str:
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


def correlations(runs: pd.DataFrame, target: str = "test_accuracy") -> pd.DataFrame:
    """Kendall tau-b of each sharpness notion with `target`, across every completed run with both values."""
    ok = runs[runs["status"] == "completed"]
    rows = []
    for notion, name in NOTIONS.items():
        if notion not in ok or ok[notion].isna().all():
            continue
        both = ok[[notion, target]].replace([np.inf, -np.inf], np.nan).dropna()
        rows.append({"notion": notion, "name": name, "kendall_tau": kendall_tau_b(both[notion], both[target]),
                     "runs": len(both)})
    return pd.DataFrame(rows, columns=["notion", "name", "kendall_tau", "runs"]).set_index("notion")


# ---- rendering ---------------------------------------------------------------------------------

def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, 'mean ± std', one column per metric (as printed and in table.md)."""
    rows = []
    for label, row in table.iterrows():
        out = {"configuration": label, "runs": _runs_cell(row)}
        for metric in METRICS:
            mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
            if metric == "steps":
                cell = _fmt(mean, 6)
            elif metric == "seconds":
                cell = _fmt(mean, 3)
            else:
                cell = _fmt(mean) + (f" ± {_fmt(std, 2)}" if not math.isnan(std) else "")
            if not cell and row["completed"] == 0 and metric not in ALWAYS:
                cell = "diverged" if row["diverged"] else "-"
            out[HEADERS[metric]] = cell
        rows.append(out)
    return pd.DataFrame(rows)


def _runs_cell(row) -> str:
    return str(int(row["runs"])) if row["status"] == "ok" else f"{int(row['runs'])} ({row['status']})"


def display_correlations(corr: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"sharpness notion": r["name"], "Kendall tau-b with test accuracy": _fmt(r["kendall_tau"], 3),
                          "runs": int(r["runs"])} for _, r in corr.iterrows()])


def caption(study: Study, examples: Iterable[int] = ()) -> str:
    s = study.sharpness
    examples = sorted(set(examples))
    counts = "/".join(str(e) for e in examples) if examples else "?"
    samples = (f"the whole training set ({counts} examples)" if s.get("samples") is None else
               f"a seeded subset of at most {s['samples']} training examples ({counts} measured)")
    seeds = sorted({r.seed for r in study.runs})
    return (f"Study {study.name}: {len(study.labels)} configurations x {len(seeds)} seeds ({len(study.runs)} runs). "
            f"Values are mean ± sample std over seeds whose run completed; steps and seconds (training wall time) "
            f"over every run that trained. Sharpness at rho={s.get('rho')} measured on {samples} "
            f"(model in eval mode): lambda_1 (top Hessian eigenvalue, Lanczos), Tr (Hessian trace), "
            f"R^Max/R^Asc/R^Avg the worst/ascent/average-direction sharpness at finite rho, alignment |cos(g, v_1)|. "
            f"Diverged runs are counted in the runs column and never dropped silently.")


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


def table_markdown(study: Study, table: pd.DataFrame, corr: pd.DataFrame, notes: Iterable[str] = (),
                   examples: Iterable[int] = ()) -> str:
    parts = [f"# Study {study.name}", ""]
    if study.description:
        parts += [" ".join(study.description.split()), ""]
    parts += [markdown(display(table)), "", caption(study, examples), ""]
    if len(corr):
        parts += ["## Rank correlation with test accuracy (all completed runs)", "",
                  markdown(display_correlations(corr)), "",
                  "Kendall tau-b across runs: -1 means sharper runs always have lower test accuracy.", ""]
    notes = list(notes)
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)
