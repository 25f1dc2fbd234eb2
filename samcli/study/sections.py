"""The correlation report as sections of strings: the same headings, tables and lines in table.md and
on the terminal (render.py prints them, report.py writes them). A statistic the design cannot
support shows as "n/a" in a table and "not applicable: <why>" in the lines under it, never as a number."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from .correlations import TARGETS, CorrelationReport, sharpness_measures

Section = tuple[str, Optional[pd.DataFrame], list[str]]


def sections(report: CorrelationReport) -> list[Section]:
    """(heading, table or None, lines) for each part of the report, in reading order."""
    out: list[Section] = [("Runs in the correlations", None, [report.eligibility, _confound_line(report)])]
    if report.warnings:
        out.append(("What this design cannot support", None, [f"WARNING: {w}" for w in report.warnings]))
    if not len(report.overall):
        return out
    out.append(("Kendall tau-b over all eligible runs", _display_overall(report),
                [f"tau [low, high]: the {report.confidence:.0%} bootstrap interval resamples configurations, then "
                 "seeds within each. Sharper-is-worse shows as tau < 0 with test accuracy and tau > 0 with a gap "
                 "(test - train)."]))
    first = True
    for target, name in TARGETS.items():
        rows = report.granulated[report.granulated["target"] == target]
        if rows.empty:
            continue
        out.append(_granulated_section(rows, name, first))
        first = first and out[-1][1] is None       # the explanation goes with the first table shown
    first = True
    for target, name in TARGETS.items():
        rows = report.coupled[report.coupled["target"] == target] if len(report.coupled) else report.coupled
        if rows.empty:
            continue
        out.append(_coupled_section(rows, target, name, first))
        first = first and out[-1][1] is None
    if len(report.mutual_information):
        out.append(_mutual_information_section(report.mutual_information))
    return out


def _names(notion: str) -> str:
    return sharpness_measures().get(notion, notion)


def _confound_line(report: CorrelationReport) -> str:
    if report.warning:
        return "WARNING: " + report.warning
    if report.tolerance is None:
        return "no confound check: the study sets no confound_tolerance"
    return (f"confound check passed: the configurations' mean train loss spans {report.train_loss_span:.3g} "
            f"<= confound_tolerance {report.tolerance:g}")


def _interval(row) -> str:
    if math.isnan(row["tau"]):
        return "n/a"
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


def _p_text(p: float) -> str:
    return f"p {p:.2g}" if p >= 0.001 else f"p {p:.1e}"


def _reasons(rows: pd.DataFrame, key: str) -> list[str]:
    """'not applicable: <key>: <why>' once per distinct reason."""
    found = dict.fromkeys((r[key], r["reason"]) for _, r in rows.iterrows() if isinstance(r["reason"], str))
    return [f"not applicable: {k}: {why}" for k, why in found]


def _granulated_section(rows: pd.DataFrame, name: str, first: bool) -> Section:
    heading = f"Granulated Kendall (Jiang et al. 2019) with {name}"
    axes = [a for a in dict.fromkeys(rows["axis"]) if a != "overall"]
    if rows[rows["axis"] != "overall"]["tau"].isna().all():
        reason = rows["reason"].dropna()
        return heading, None, ["not applicable: " + (reason.iloc[-1] if len(reason) else "no axis has a group")]
    groups = rows.groupby("axis", sort=False)["groups"].max()
    header = {a: f"{a} [{int(groups[a])}]" for a in axes}
    out = []
    for notion, part in rows.groupby("notion", sort=False):
        row = {"sharpness notion": _names(notion)}
        for _, r in part.iterrows():
            if r["axis"] == "overall":
                row["overall"] = "n/a" if math.isnan(r["tau"]) else f"{r['tau']:+.2f}"
            else:
                row[header[r["axis"]]] = "n/a" if math.isnan(r["tau"]) else f"{r['tau']:+.2f} ({_p_text(r['p'])})"
        out.append(row)
    lines = []
    if first:
        lines.append("Per axis: psi, the mean tau-b over groups of configurations (seed means) that differ only along "
                     "that axis (a parameter a configuration does not use matches any value; a group whose targets "
                     "or measures all tie scores 0); groups in brackets. p: the exact permutation p-value, one-sided "
                     "in the direction sharper-is-worse predicts. overall: the mean over every axis the design varies.")
    monte = sorted({m for m in rows["p_method"].dropna() if m.startswith("Monte")})
    if monte:
        lines.append(f"Some p-values are {monte[0]} (a group too large to enumerate).")
    shared = sorted({r["axis"] for _, r in rows.iterrows() if r.get("overlapping") is True})
    if shared:
        lines.append(f"Groups along {', '.join(shared)} share configurations; their p-values treat the groups as "
                     "independent.")
    lines += _reasons(rows, "axis")
    return heading, pd.DataFrame(out).fillna(""), lines


def _coupled_section(rows: pd.DataFrame, target: str, name: str, first: bool) -> Section:
    heading = f"Coupled pairs (Dziugaite et al. 2020) with {name}"
    means = rows[rows["axis"] == "mean"]
    if means["agree"].isna().all():
        reason = means["reason"].dropna()
        return heading, None, ["not applicable: " + (reason.iloc[0] if len(reason) else "no coupled pair")]
    out = []
    for notion, part in rows.groupby("notion", sort=False):
        row = {"sharpness notion": _names(notion)}
        for _, r in part.iterrows():
            value = "n/a" if math.isnan(r["agree"]) else f"{r['agree']:.2f}"
            if r["axis"] == "mean":
                row["mean"] = f"{value} ({int(r['counted'])}/{int(r['pairs'])})"
                row["worst axis"] = "n/a" if math.isnan(r["worst"]) else f"{r['worst']:.2f} ({r['worst_axis']})"
            else:
                row[r["axis"]] = f"{value} ({int(r['counted'])}/{int(r['pairs'])})"
        out.append(row)
    lines = []
    if first:
        lines.append("The fraction of coupled pairs (configurations that differ in one hyperparameter) that the "
                     "measure orders as sharper-is-worse predicts, over the pairs whose |delta target| exceeds twice "
                     "its standard error from the seeds (counted/total in brackets); the worst axis beside the mean.")
    lines += _reasons(rows[rows["axis"] != "mean"], "axis")
    return heading, pd.DataFrame(out).fillna(""), lines


def _mutual_information_section(rows: pd.DataFrame) -> Section:
    heading = "Conditional mutual information (Jiang et al. 2019)"
    out = []
    for notion, part in rows.groupby("notion", sort=False):
        row = {"sharpness notion": _names(notion)}
        for _, r in part.iterrows():
            given = f"S: {r['subset']}" if r["subset"] else "S empty"
            cell = "n/a" if math.isnan(r["score"]) else f"{r['score']:.2f} ({given})"
            row[TARGETS.get(r["target"], r["target"])] = cell
        out.append(row)
    lines = ["min over hyperparameter sets S (|S| <= 2, at least one axis left free) of I(sign delta measure; sign "
             "delta target | S) / H(sign delta target | S) over ordered pairs of configurations; 1: the measure's "
             "order determines the target's, 0: it carries no information once S is known. S: the minimizing set. "
             "Mutual information has no direction: a measure that orders every pair backwards also scores 1; read "
             "it beside tau."]
    lines += _reasons(rows.assign(key=[f"{_names(n)} vs {TARGETS.get(t, t)}" for n, t in
                                       zip(rows["notion"], rows["target"])]), "key")
    return heading, pd.DataFrame(out).fillna(""), lines
