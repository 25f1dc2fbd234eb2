"""Rank correlations between sharpness and generalization that control for what they can.

Pure functions of the per-run frame `table.runs_frame` builds, plus one column per hyperparameter
axis (`with_axes` adds them from each configuration's overrides):
- `kendall_interval`: Kendall tau-b over all eligible runs with a bootstrap interval that resamples
  configurations and then seeds within each (two levels: the configurations are a sample of the
  design space, the seeds of the training noise); `level="seeds"` keeps the configurations fixed;
- the granulated Kendall with permutation p-values (stats.py), the coupled pairs and the conditional
  mutual information (robust.py), and the warnings where the design cannot support a claim;
- targets beside test accuracy: the generalization gaps (test - train loss, test - train error),
  which is what a sharpness measure claims to predict;
- `confound_warning`: configurations trained to different train losses make every correlation a
  comparison of training progress, not of minima.

Eligible runs: completed, and not marked as having missed the study's stop target (a `reached`
column that is 0/False; absent or NaN counts as reached). Every exclusion is counted in `eligibility`.
Signs: sharper-is-worse shows as tau < 0 against test accuracy and tau > 0 against a gap.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..config import SamcliError
from ..spec.measure import columns
from .robust import coupled_pair_agreement, design_warnings, mutual_information_score
from .stats import MISSING, axis_value, granulated_kendall, varying_axes
from .table import kendall_tau_b


def sharpness_measures() -> dict[str, str]:
    """summary key -> name of every registered notion's number that is correlated with the targets."""
    return {c.key: c.header for c in columns() if c.correlate}


ALL_NOTIONS = sharpness_measures()      # the built-in notions' (a notion registered later: the function)
ADAPTIVE_NOTIONS = {k: v for k, v in ALL_NOTIONS.items() if k.startswith("ada_")}
TARGETS = {"test_accuracy": "test accuracy", "loss_gap": "test - train loss", "error_gap": "test - train error"}
# the sign of tau that sharper-is-worse predicts: one-sided p-values and the coupled pairs' "right"
SHARPER_IS_WORSE = {"test_accuracy": -1, "loss_gap": 1, "error_gap": 1}
# MISSING and granulated_kendall are stats.py's, imported here for the callers that know them from here
_REEXPORTED = (MISSING, granulated_kendall)


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
        mapped = out["label"].map(lambda label, key=key: axis_value(values.get(label, {}).get(key)))
        if column == "method":
            mapped = mapped.where(mapped != MISSING, out["method"])
        out[column] = mapped
        axes.append(column)
    out.attrs["axes"] = list(dict.fromkeys(["method", *axes]))
    return out


def study_axes(runs: pd.DataFrame, candidates: Iterable[str]) -> list[str]:
    """The candidate columns on which configurations take >= 2 distinct values they use (stats.varying_axes)."""
    return varying_axes(runs.drop_duplicates("label"), list(candidates))


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
    level: str = "configurations"    # what the resamples redraw: "configurations" (and seeds) or "seeds"


LEVELS = ("configurations", "seeds")


def kendall_interval(runs: pd.DataFrame, notion: str, target: str, *, resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0, level: str = "configurations") -> TauInterval:
    """tau-b of notion vs target over `runs` (already eligible) and a percentile bootstrap interval.

    level "configurations" (two levels): each resample draws C configurations out of the C with
    replacement, then within each drawn configuration as many runs as it has, with replacement; so
    an answer carried by one or two configurations moves when they are left out. level "seeds": the
    configurations stay fixed and only seeds are redrawn (the spread of seed noise alone).

    A resample is scored over the pairs of distinct runs, each weighted by the product of the two
    runs' multiplicities (`_multiplicity_tau`; a run paired with its own copy is tied in both and
    says nothing). Two runs of one configuration (n seeds) get a pair weight of expectation
    (n-1)/n + 1 - 1/C under two levels ((n-1)/n under seeds), two runs of different ones 1 - 1/C
    (1): the within-configuration weights are rescaled so every pair's expected weight is the same
    and the resamples centre on the estimate. With one configuration the two levels are seeds only."""
    if resamples < 1 or not 0 < confidence < 1:
        raise SamcliError(f"resamples={resamples} must be >= 1 and confidence={confidence} in (0, 1)")
    if level not in LEVELS:
        raise SamcliError(f"level={level!r} is not one of {', '.join(LEVELS)}")
    both = _pairs(runs, notion, target)
    x, y = both[notion].to_numpy(float), both[target].to_numpy(float)
    tau = kendall_tau_b(x, y)
    if math.isnan(tau):
        return TauInterval(tau, math.nan, math.nan, len(both), 0, confidence, level)
    rng = np.random.default_rng(seed)
    labels = both["label"].to_numpy()
    groups = [np.flatnonzero(labels == label) for label in dict.fromkeys(labels)]
    upper = np.triu_indices(len(x), 1)
    concordance = (np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :]))[upper]
    tied_x, tied_y = (x[:, None] == x[None, :])[upper], (y[:, None] == y[None, :])[upper]
    sizes = np.zeros(len(x))
    for g in groups:
        sizes[g] = len(g)
    n, c = sizes[upper[0]], len(groups)
    same = (labels[:, None] == labels[None, :])[upper]
    two = level == "configurations" and c > 1
    within = (1 - 1 / c) / ((n - 1) / n + 1 - 1 / c) if two else n / np.maximum(n - 1, 1)
    unbiased = np.where(same, within, 1.0)
    draws = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(c, size=c) if two else range(c)
        index = np.concatenate([rng.choice(groups[k], size=len(groups[k]), replace=True) for k in chosen])
        counts = np.bincount(index, minlength=len(x)).astype(float)
        draws[r] = _multiplicity_tau(np.outer(counts, counts)[upper] * unbiased, concordance, tied_x, tied_y)
    draws = draws[~np.isnan(draws)]        # a resample can tie every value of one variable
    if not len(draws):
        return TauInterval(tau, math.nan, math.nan, len(both), resamples, confidence, level)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return TauInterval(tau, float(low), float(high), len(both), resamples, confidence, level)


def _multiplicity_tau(weights, concordance, tied_x, tied_y) -> float:
    """tau-b over pairs of distinct runs with pair weights; all weights 1 gives `kendall_tau_b`."""
    pairs = weights.sum()
    denominator = math.sqrt((pairs - weights[tied_x].sum()) * (pairs - weights[tied_y].sum()))
    return float((weights * concordance).sum() / denominator) if denominator > 0 else math.nan


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
    """A study's correlations: pooled tau-b with intervals, the granulated Kendall with p-values, the
    coupled pairs, the conditional mutual information, eligibility, confounds and design warnings."""
    overall: pd.DataFrame      # one row per (notion, target): name, tau, low, high, runs
    # one row per (notion, target, axis), axis "overall" last: tau, groups, configurations, p, p_method,
    # overlapping, reason (why not applicable; then tau is NaN)
    granulated: pd.DataFrame
    eligibility: str           # how many runs were excluded and why
    warning: Optional[str]     # confound warning, if any
    axes: tuple[str, ...]
    tolerance: Optional[float] = None    # the confound check's (None: not checked)
    train_loss_span: float = math.nan    # max - min of the configurations' mean train loss (eligible runs)
    confidence: float = 0.95             # of the bootstrap intervals
    # one row per (notion, target, axis), axis "mean" last (with worst, worst_axis): pairs, counted, agree, reason
    coupled: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # one row per (notion, target): score, subset (the minimizing S), subsets, pairs, reason
    mutual_information: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    warnings: tuple[str, ...] = ()       # what the design cannot support, in plain words


GRANULATED_COLUMNS = ["notion", "target", "axis", "tau", "groups", "configurations", "p", "p_method", "overlapping",
                      "reason", "p_min"]
COUPLED_COLUMNS = ["notion", "target", "axis", "pairs", "counted", "agree", "worst", "worst_axis", "reason"]
MI_COLUMNS = ["notion", "target", "score", "subset", "subsets", "pairs", "reason"]


def correlation_report(runs: pd.DataFrame, axes: Optional[Sequence[str]] = None, *,
                       notions: Optional[Mapping[str, str]] = None, targets: Mapping[str, str] = TARGETS,
                       tolerance: Optional[float] = None, resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> CorrelationReport:
    """Every statistic of every notion present in `runs` with every target; `axes` are the
    candidate axis columns (default: those `with_axes` added, else method; those that do not vary are
    dropped), `tolerance` the confound check's."""
    axes = runs.attrs.get("axes", ["method"]) if axes is None else axes
    notions = sharpness_measures() if notions is None else notions
    eligible, note = eligibility(with_gaps(runs))
    axes = tuple(study_axes(runs, axes))
    present = [n for n in notions if n in eligible and eligible[n].notna().any()]
    overall: list[dict] = []
    granular: list[dict] = []
    coupled: list[dict] = []
    mutual: list[dict] = []
    for notion in present:
        for target in targets:
            if target not in eligible:
                continue
            sign = SHARPER_IS_WORSE.get(target, 1)
            t = kendall_interval(eligible, notion, target, resamples=resamples, confidence=confidence, seed=seed)
            overall.append({"notion": notion, "name": notions[notion], "target": target, "tau": t.tau,
                            "low": t.low, "high": t.high, "runs": t.n})
            granular += _granulated_rows(eligible, notion, target, axes, sign, seed)
            coupled += _coupled_rows(eligible, notion, target, axes, sign)
            mi = mutual_information_score(eligible, notion, target, axes)
            mutual.append({"notion": notion, "target": target, "score": mi.score, "subset": ", ".join(mi.subset),
                           "subsets": mi.subsets, "pairs": mi.pairs, "reason": mi.reason})
    warning = confound_warning(eligible, tolerance) if tolerance is not None else None
    means = eligible.groupby("label", sort=False)["train_loss"].mean().dropna()
    span = float(means.max() - means.min()) if len(means) else math.nan
    overall_frame = pd.DataFrame(overall, columns=["notion", "name", "target", "tau", "low", "high", "runs"])
    return CorrelationReport(
        overall_frame, pd.DataFrame(granular, columns=GRANULATED_COLUMNS), note, warning, axes, tolerance, span,
        confidence, pd.DataFrame(coupled, columns=COUPLED_COLUMNS), pd.DataFrame(mutual, columns=MI_COLUMNS),
        tuple(design_warnings(eligible, overall_frame)) if len(eligible) else ())


def _granulated_rows(eligible, notion, target, axes, sign, seed) -> list[dict]:
    g = granulated_kendall(eligible, notion, target, axes, sign, seed=seed)
    rows = [{"notion": notion, "target": target, "axis": a.axis, "tau": a.tau, "groups": a.groups,
             "configurations": a.configurations, "p": a.p, "p_method": a.p_method, "overlapping": a.overlapping,
             "reason": a.reason, "p_min": a.p_min} for a in g.axes]
    rows.append({"notion": notion, "target": target, "axis": "overall", "tau": g.overall,
                 "groups": sum(a.groups for a in g.axes), "configurations": math.nan, "p": math.nan,
                 "p_method": "", "overlapping": False, "reason": g.reason, "p_min": math.nan})
    return rows


def _coupled_rows(eligible, notion, target, axes, sign) -> list[dict]:
    c = coupled_pair_agreement(eligible, notion, target, axes, sign)
    rows = [{"notion": notion, "target": target, "axis": a.axis, "pairs": a.pairs, "counted": a.counted,
             "agree": a.agree, "worst": math.nan, "worst_axis": None, "reason": a.reason} for a in c.axes]
    rows.append({"notion": notion, "target": target, "axis": "mean", "pairs": c.pairs, "counted": c.counted,
                 "agree": c.mean, "worst": c.worst, "worst_axis": c.worst_axis, "reason": c.reason})
    return rows
