"""Rank correlations between sharpness and generalization that control for what they can.

Pure functions of the per-run frame `table.runs_frame` builds, plus one column per hyperparameter
axis (`with_axes` adds them from each configuration's overrides):
- `kendall_interval`: Kendall tau-b over all eligible runs with a bootstrap interval that resamples
  seeds within configurations (the configurations themselves are the study's design, not a sample);
- `granulated_kendall`: Jiang et al. (2019)'s granulated score: per axis, the mean tau over groups of
  configurations that agree on every other axis; overall, the mean over axes;
- targets beside test accuracy: the generalization gaps (test - train loss, test - train error),
  which is what a sharpness measure claims to predict;
- `confound_warning`: configurations trained to different train losses make every correlation a
  comparison of training progress, not of minima.

Eligible runs: completed, and not marked as having missed the study's stop target (a `reached`
column that is 0/False; absent or NaN counts as reached). Every exclusion is counted in `eligibility`.
Signs: sharper-is-worse shows as tau < 0 against test accuracy and tau > 0 against a gap.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..config import SamcliError
from ..spec.measure import columns
from .table import kendall_tau_b


def sharpness_measures() -> dict[str, str]:
    """summary key -> name of every registered notion's number that is correlated with the targets."""
    return {c.key: c.header for c in columns() if c.correlate}


ALL_NOTIONS = sharpness_measures()      # the built-in notions' (a notion registered later: the function)
ADAPTIVE_NOTIONS = {k: v for k, v in ALL_NOTIONS.items() if k.startswith("ada_")}
TARGETS = {"test_accuracy": "test accuracy", "loss_gap": "test - train loss", "error_gap": "test - train error"}
MISSING = "n/a"        # the value of an axis that does not apply to a configuration (rho for SGD)


# ---- the frame: axes, gaps, eligible runs ---------------------------------------------------------

def axis_name(dotted: str) -> str:
    """optimizer.rho -> rho (the study's short names); other sections keep their dotted key."""
    return dotted.removeprefix("optimizer.")


def with_axes(runs: pd.DataFrame, values: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """A copy of `runs` with one column per axis, from {label: {key: value}} (dotted or short keys);
    the columns' names are listed in `.attrs["axes"]`, which `correlation_report` reads.

    A key a configuration lacks, or maps to None, is MISSING for it: pass the resolved value (the
    base config's) for a parameter that applies but was not overridden, None for one that does not
    apply (rho for SGD). `method` keeps the runs frame's value where `values` lacks it; an axis
    whose short name is a metric column (steps) is named `axis:<key>`."""
    out = runs.copy()
    keys = list(dict.fromkeys(k for per_label in values.values() for k in per_label))
    axes = []
    for key in keys:
        column = axis_name(key)
        if column in runs and column != "method":
            column = f"axis:{key}"
        mapped = out["label"].map(lambda label, key=key: _hashable(values.get(label, {}).get(key)))
        if column == "method":
            mapped = mapped.where(mapped != MISSING, out["method"])
        out[column] = mapped
        axes.append(column)
    out.attrs["axes"] = list(dict.fromkeys(["method", *axes]))
    return out


def _hashable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (list, dict, set, tuple)):
        return repr(value)
    return value


def study_axes(runs: pd.DataFrame, candidates: Iterable[str]) -> list[str]:
    """The candidate columns whose value varies across configurations."""
    configs = runs.drop_duplicates("label")
    return [c for c in candidates if c in configs and configs[c].map(_hashable).nunique() > 1]


def with_gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """loss_gap = test loss - train loss; error_gap = test error - train error = train acc - test acc."""
    out = runs.copy()
    out["loss_gap"] = out["test_loss"] - out["train_loss"]
    out["error_gap"] = (out["train_accuracy"] - out["test_accuracy"] if "train_accuracy" in out
                        else math.nan)
    return out


def eligibility(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(eligible runs, one line saying how many were excluded and why)."""
    completed = runs["status"] == "completed"
    missed = pd.Series(False, index=runs.index)
    if "reached" in runs:
        reached = pd.to_numeric(runs["reached"].map(lambda v: math.nan if v is None else float(v)), errors="coerce")
        missed = completed & (reached == 0)
    keep = completed & ~missed
    parts = []
    if int(missed.sum()):
        parts.append(f"{int(missed.sum())} missed the stop target")
    for status, count in runs.loc[~completed, "status"].value_counts().items():
        parts.append(f"{count} {status}")
    note = (f"{int((~keep).sum())} of {len(runs)} runs excluded from the correlations: " + ", ".join(parts)
            if parts else f"all {len(runs)} runs used")
    return runs[keep], note


def _pairs(runs: pd.DataFrame, notion: str, target: str) -> pd.DataFrame:
    """label, notion and target of the runs where both values are finite."""
    both = runs[["label", notion, target]].replace([np.inf, -np.inf], np.nan)
    return both.dropna(subset=[notion, target])


# ---- Kendall tau-b over all runs, with a bootstrap interval ---------------------------------------

@dataclass(frozen=True)
class TauInterval:
    """Kendall tau-b of a notion against a target over all runs, with its bootstrap percentile interval."""
    tau: float
    low: float                 # bootstrap percentile interval; NaN when it cannot be formed
    high: float
    n: int                     # runs used
    resamples: int
    confidence: float


def kendall_interval(runs: pd.DataFrame, notion: str, target: str, *, resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> TauInterval:
    """tau-b of notion vs target over `runs` (already eligible) and a percentile bootstrap interval:
    each resample redraws, within every configuration, as many runs as it has, with replacement.

    A resample is scored over the pairs of distinct runs, each weighted by the product of the two
    runs' multiplicities (`_multiplicity_tau`), times n/(n-1) for two runs of one configuration of
    n seeds, so that every pair's expected weight is 1. Scoring the copies as data instead would
    add pairs tied in both variables and keep within-configuration pairs at (n-1)/n of their
    weight, pulling every resample's tau away from the estimate (with near-identical seeds the
    whole interval then sat beside it). With one seed per configuration nothing is resampled and
    the interval is the point itself."""
    if resamples < 1 or not 0 < confidence < 1:
        raise SamcliError(f"resamples={resamples} must be >= 1 and confidence={confidence} in (0, 1)")
    both = _pairs(runs, notion, target)
    x, y = both[notion].to_numpy(float), both[target].to_numpy(float)
    tau = kendall_tau_b(x, y)
    if math.isnan(tau):
        return TauInterval(tau, math.nan, math.nan, len(both), 0, confidence)
    rng = np.random.default_rng(seed)
    labels = both["label"].to_numpy()
    groups = [np.flatnonzero(labels == label) for label in dict.fromkeys(labels)]
    upper = np.triu_indices(len(x), 1)
    concordance = (np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :]))[upper]
    tied_x, tied_y = (x[:, None] == x[None, :])[upper], (y[:, None] == y[None, :])[upper]
    sizes = np.zeros(len(x))
    for g in groups:
        sizes[g] = len(g)
    same = (labels[:, None] == labels[None, :])[upper]
    unbiased = np.where(same, sizes[upper[0]] / np.maximum(sizes[upper[0]] - 1, 1), 1.0)
    draws = np.empty(resamples)
    for r in range(resamples):
        index = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        counts = np.bincount(index, minlength=len(x)).astype(float)
        draws[r] = _multiplicity_tau(np.outer(counts, counts)[upper] * unbiased, concordance, tied_x, tied_y)
    draws = draws[~np.isnan(draws)]        # a resample can tie every value of one variable
    if not len(draws):
        return TauInterval(tau, math.nan, math.nan, len(both), resamples, confidence)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return TauInterval(tau, float(low), float(high), len(both), resamples, confidence)


def _multiplicity_tau(weights, concordance, tied_x, tied_y) -> float:
    """tau-b over pairs of distinct runs with pair weights; all weights 1 gives `kendall_tau_b`."""
    pairs = weights.sum()
    denominator = math.sqrt((pairs - weights[tied_x].sum()) * (pairs - weights[tied_y].sum()))
    return float((weights * concordance).sum() / denominator) if denominator > 0 else math.nan


# ---- granulated Kendall (Jiang et al. 2019) --------------------------------------------------------

@dataclass(frozen=True)
class AxisTau:
    """Granulated Kendall along one hyperparameter axis: the mean tau over groups that vary only that axis."""
    axis: str
    tau: float                 # mean over groups; NaN when no group qualified
    groups: int                # groups with >= 2 distinct values on the axis and a defined tau
    configurations: int        # configurations in those groups


@dataclass(frozen=True)
class Granulated:
    """Granulated Kendall of a notion against a target: the score per axis and their mean."""
    notion: str
    target: str
    axes: tuple[AxisTau, ...]
    overall: float             # mean over axes with a defined tau; NaN when not applicable
    reason: Optional[str] = None   # why the score is not applicable (then overall is NaN)


def granulated_kendall(runs: pd.DataFrame, notion: str, target: str, axes: Sequence[str]) -> Granulated:
    """Per axis: split the configurations (mean over their eligible runs) into groups agreeing on
    every other axis; tau-b within each group that has >= 2 distinct values on the axis; average.

    Configuration means, as in Jiang et al., where each point is one trained model per
    hyperparameter setting; seeds only sharpen the means. An axis that does not apply to a
    configuration (MISSING) is a value of its own, so such a configuration is grouped only with
    others that also lack it."""
    both = _pairs(runs, notion, target)
    if both.empty:
        return Granulated(notion, target, (), math.nan, f"no eligible run has both {notion} and {target}")
    axis_values = runs.drop_duplicates("label").set_index("label")[list(axes)].map(_hashable)
    means = both.groupby("label", sort=False)[[notion, target]].mean().join(axis_values)
    if len(means) < 2:
        return Granulated(notion, target, (), math.nan, "a single configuration: nothing to rank")
    varying = [a for a in axes if means[a].nunique() > 1]
    if not varying:
        return Granulated(notion, target, (), math.nan, "no hyperparameter axis varies across configurations")
    results = []
    for axis in varying:
        others = [a for a in varying if a != axis]
        grouped = means.groupby(others, sort=False) if others else [((), means)]
        taus, sizes = [], []
        for _, group in grouped:
            if group[axis].nunique() < 2:
                continue
            tau = kendall_tau_b(group[notion], group[target])
            if not math.isnan(tau):
                taus.append(tau)
                sizes.append(len(group))
        results.append(AxisTau(axis, float(np.mean(taus)) if taus else math.nan, len(taus), int(sum(sizes))))
    defined = [r.tau for r in results if not math.isnan(r.tau)]
    if not defined:
        return Granulated(notion, target, tuple(results), math.nan,
                          "no axis has two configurations that differ only along it")
    return Granulated(notion, target, tuple(results), float(np.mean(defined)))


# ---- confounds and the whole report ---------------------------------------------------------------

def confound_warning(runs: pd.DataFrame, tolerance: float, metric: str = "train_loss") -> Optional[str]:
    """One line when the configurations' mean `metric` (over eligible runs) spans more than `tolerance`."""
    means = runs.groupby("label", sort=False)[metric].mean().dropna()
    if len(means) < 2 or means.max() - means.min() <= tolerance:
        return None
    low, high = means.idxmin(), means.idxmax()
    return (f"configurations differ in mean {metric} by {means.max() - means.min():.3g} > tolerance {tolerance:g} "
            f"({low}: {means[low]:.3g}, {high}: {means[high]:.3g}): the correlations partly compare training "
            f"progress; train every configuration to the same target")


@dataclass(frozen=True)
class CorrelationReport:
    """A study's correlations: overall tau-b with intervals, granulated Kendall per axis, eligibility and confounds."""
    overall: pd.DataFrame      # one row per (notion, target): name, tau, low, high, runs
    # one row per (notion, target, axis), axis "overall" last: tau, groups, configurations, reason
    granulated: pd.DataFrame
    eligibility: str           # how many runs were excluded and why
    warning: Optional[str]     # confound warning, if any
    axes: tuple[str, ...]
    tolerance: Optional[float] = None    # the confound check's (None: not checked)
    train_loss_span: float = math.nan    # max - min of the configurations' mean train loss (eligible runs)
    confidence: float = 0.95             # of the bootstrap intervals


def correlation_report(runs: pd.DataFrame, axes: Optional[Sequence[str]] = None, *,
                       notions: Optional[Mapping[str, str]] = None, targets: Mapping[str, str] = TARGETS,
                       tolerance: Optional[float] = None, resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> CorrelationReport:
    """Every correlation of every notion present in `runs` with every target; `axes` are the
    candidate axis columns (default: those `with_axes` added, else method; those that do not vary are
    dropped), `tolerance` the confound check's."""
    axes = runs.attrs.get("axes", ["method"]) if axes is None else axes
    notions = sharpness_measures() if notions is None else notions
    eligible, note = eligibility(with_gaps(runs))
    axes = tuple(study_axes(runs, axes))
    present = [n for n in notions if n in eligible and eligible[n].notna().any()]
    overall, granular = [], []
    for notion in present:
        for target in targets:
            if target not in eligible:
                continue
            t = kendall_interval(eligible, notion, target, resamples=resamples, confidence=confidence, seed=seed)
            overall.append({"notion": notion, "name": notions[notion], "target": target, "tau": t.tau,
                            "low": t.low, "high": t.high, "runs": t.n})
            g = granulated_kendall(eligible, notion, target, axes)
            for a in g.axes:
                granular.append({"notion": notion, "target": target, "axis": a.axis, "tau": a.tau,
                                 "groups": a.groups, "configurations": a.configurations, "reason": None})
            granular.append({"notion": notion, "target": target, "axis": "overall", "tau": g.overall,
                             "groups": sum(a.groups for a in g.axes), "configurations": math.nan,
                             "reason": g.reason})
    warning = confound_warning(eligible, tolerance) if tolerance is not None else None
    means = eligible.groupby("label", sort=False)["train_loss"].mean().dropna()
    span = float(means.max() - means.min()) if len(means) else math.nan
    return CorrelationReport(
        pd.DataFrame(overall, columns=["notion", "name", "target", "tau", "low", "high", "runs"]),
        pd.DataFrame(granular, columns=["notion", "target", "axis", "tau", "groups", "configurations", "reason"]),
        note, warning, axes, tolerance, span, confidence)


# ---- rendering: the same sections in table.md and on the terminal ---------------------------------

def sections(report: CorrelationReport) -> list[tuple[str, Optional[pd.DataFrame], list[str]]]:
    """(heading, table or None, lines) for each part of the report, in reading order."""
    out = [("Runs in the correlations", None, [report.eligibility, _confound_line(report)])]
    if not len(report.overall):
        return out
    out.append(("Kendall tau-b over all eligible runs", _display_overall(report),
                [f"tau [low, high]: the {report.confidence:.0%} bootstrap interval resamples seeds within "
                 "configurations. Sharper-is-worse shows as tau < 0 with test accuracy and tau > 0 with a gap "
                 "(test - train)."]))
    for target, name in TARGETS.items():
        rows = report.granulated[report.granulated["target"] == target]
        if rows.empty:
            continue
        heading = f"Granulated Kendall (Jiang et al. 2019) with {name}"
        overall = rows[rows["axis"] == "overall"]
        if overall["tau"].isna().all():
            reason = overall["reason"].dropna()
            out.append((heading, None, ["not applicable: " + (reason.iloc[0] if len(reason) else
                                                              "no axis has a group to rank")]))
            continue
        first = not any(h.startswith("Granulated") for h, frame, _ in out if frame is not None)
        out.append((heading, _display_granulated(rows), [
            "Per axis: the mean tau-b over groups of configurations (seed means) that differ only along that axis "
            "(groups in brackets; - where there is none); overall: the mean over axes with a score."] if first else []))
    return out


def _confound_line(report: CorrelationReport) -> str:
    if report.warning:
        return "WARNING: " + report.warning
    if report.tolerance is None:
        return "no confound check: the study sets no confound_tolerance"
    return (f"confound check passed: the configurations' mean train loss spans {report.train_loss_span:.3g} "
            f"<= confound_tolerance {report.tolerance:g}")


def _interval(row) -> str:
    if math.isnan(row["tau"]):
        return "-"
    text = f"{row['tau']:+.2f}"
    return text + (f" [{row['low']:+.2f}, {row['high']:+.2f}]" if not math.isnan(row["low"]) else "")


def _display_overall(report: CorrelationReport) -> pd.DataFrame:
    rows = []
    for _notion, part in report.overall.groupby("notion", sort=False):
        row = {"sharpness notion": part["name"].iloc[0]}
        for _, r in part.iterrows():
            row[TARGETS[r["target"]]] = _interval(r)
        row["runs"] = int(part["runs"].max())
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _display_granulated(rows: pd.DataFrame) -> pd.DataFrame:
    axes = list(dict.fromkeys(rows["axis"]))
    groups = rows.groupby("axis", sort=False)["groups"].max()
    header = {a: a if a == "overall" else f"{a} [{int(groups[a])}]" for a in axes}
    out = []
    for notion, part in rows.groupby("notion", sort=False):
        row = {"sharpness notion": sharpness_measures().get(notion, notion)}
        for _, r in part.iterrows():
            row[header[r["axis"]]] = "-" if math.isnan(r["tau"]) else f"{r['tau']:+.2f}"
        out.append(row)
    return pd.DataFrame(out).fillna("")
