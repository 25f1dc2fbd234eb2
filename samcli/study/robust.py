"""The coupled-pair view (Dziugaite et al. 2020), the conditional mutual information score (Jiang et
al. 2019; the PGDL competition) and the warnings where a study's design cannot support a claim.

All on configuration means (stats.config_frame); docs/statistics.md states each definition and when
it is not applicable.
- coupled pairs: two configurations that differ in exactly one hyperparameter (a parameter one of
  them does not use matches any value, as in the granulated groups); the measure ranks the pair
  correctly when sign(delta measure) == sign(delta gap) (== -sign(delta accuracy)); a pair counts
  only where |delta target| > 2 se, se = sqrt(s_a^2 / n_a + s_b^2 / n_b) from the seed replicates,
  so each configuration needs >= 2 seeds. Per axis the fraction correct; the mean over axes and the
  worst axis beside it;
- conditional mutual information: over ordered pairs (a, b) of distinct configurations, V_mu =
  sign(mu_a - mu_b) and V_g = sign(g_a - g_b) in {-1, 0, 1}; for a set S of axes, U_S = the pair of
  values (a_S, b_S); score(S) = I(V_mu; V_g | U_S) / H(V_g | U_S); the score is the minimum over
  |S| <= min(2, axes - 1) (conditioning on every axis leaves one pair per cell: nothing to measure),
  skipping S where H(V_g | U_S) = 0 (the gap's order is fixed by S).
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from .stats import MISSING, compatible, config_frame, varying_axes

MIN_SEEDS = 4            # below this a study's seed means and standard errors are rough
MIN_CONFIGURATIONS = 3


# ---- coupled pairs -----------------------------------------------------------------------------

def coupled_pairs(configs: pd.DataFrame, axes: Sequence[str]) -> list[tuple[str, str, str]]:
    """(axis, label a, label b) for every pair of configurations that have different values on one
    axis and agree (compatible) on every other."""
    out = []
    labels = list(configs.index)
    for a, b in itertools.combinations(labels, 2):
        ra, rb = configs.loc[a], configs.loc[b]
        differ = [x for x in axes if not compatible(ra[x], rb[x])]
        if len(differ) == 1 and MISSING not in (ra[differ[0]], rb[differ[0]]):
            out.append((differ[0], a, b))
    return out


@dataclass(frozen=True)
class AxisPairs:
    """The coupled pairs along one axis: how many, how many the 2-se filter kept, the fraction ranked right."""
    axis: str
    pairs: int
    counted: int
    agree: float               # NaN when no pair is counted
    reason: Optional[str] = None


@dataclass(frozen=True)
class CoupledPairs:
    """Dziugaite et al. (2020)'s robust view of a notion against a target."""
    notion: str
    target: str
    axes: tuple[AxisPairs, ...]
    mean: float                # over axes with a counted pair; NaN when not applicable
    worst: float
    worst_axis: Optional[str]
    pairs: int
    counted: int
    reason: Optional[str] = None


def coupled_pair_agreement(runs: pd.DataFrame, notion: str, target: str, axes: Sequence[str],
                           sign: int = 1) -> CoupledPairs:
    """The fraction of coupled pairs whose measure difference has the sign `sign` * sign(delta target),
    over the pairs where |delta target| > 2 se (sign 1 for a gap, -1 for accuracy)."""
    configs = config_frame(runs, notion, target, axes)
    varying = varying_axes(configs, axes)
    pairs = coupled_pairs(configs, varying) if varying else []
    if not pairs:
        why = ("no hyperparameter axis varies" if not varying else
               "no two configurations differ in exactly one hyperparameter")
        return CoupledPairs(notion, target, (), math.nan, math.nan, None, 0, 0, why)
    per_axis = []
    for axis in varying:
        kept = right = total = 0
        too_few = 0
        for _, a, b in (p for p in pairs if p[0] == axis):
            total += 1
            ra, rb = configs.loc[a], configs.loc[b]
            if min(ra["seeds"], rb["seeds"]) < 2:
                too_few += 1
                continue
            delta = ra["target"] - rb["target"]
            se = math.sqrt(ra["target_std"] ** 2 / ra["seeds"] + rb["target_std"] ** 2 / rb["seeds"])
            if abs(delta) <= 2 * se:
                continue
            kept += 1
            right += int(np.sign(ra["measure"] - rb["measure"]) == sign * np.sign(delta))
        reason = None
        if not total:
            reason = f"no coupled pair along {axis}"
        elif not kept:
            reason = (f"{too_few} of {total} pairs have a configuration with < 2 seeds (no standard error)"
                      if too_few == total else f"no pair along {axis} has |delta {target}| > 2 se")
        per_axis.append(AxisPairs(axis, total, kept, right / kept if kept else math.nan, reason))
    scored = [a for a in per_axis if a.counted]
    total, kept = sum(a.pairs for a in per_axis), sum(a.counted for a in per_axis)
    if not scored:
        return CoupledPairs(notion, target, tuple(per_axis), math.nan, math.nan, None, total, 0,
                            f"none of the {total} coupled pairs has |delta {target}| > 2 se (or the seeds to tell)")
    worst = min(scored, key=lambda a: a.agree)
    return CoupledPairs(notion, target, tuple(per_axis), float(np.mean([a.agree for a in scored])), worst.agree,
                        worst.axis, total, kept)


# ---- conditional mutual information ------------------------------------------------------------

def _entropy(counts) -> float:
    p = np.asarray([c for c in counts if c], float)
    p = p / p.sum()
    return float(-(p * np.log2(p)).sum())


def _mutual_information(joint: Counter) -> float:
    total = sum(joint.values())
    left: Counter = Counter()
    right: Counter = Counter()
    for (u, v), c in joint.items():
        left[u] += c
        right[v] += c
    return float(sum(c / total * math.log2(c * total / (left[u] * right[v])) for (u, v), c in joint.items()))


@dataclass(frozen=True)
class MutualInformation:
    """The conditional mutual information score of a notion against a target: its minimum over subsets."""
    notion: str
    target: str
    score: float               # NaN when not applicable
    subset: tuple[str, ...]    # the minimizing S
    subsets: int               # subsets scored (those with H(V_g | U_S) > 0)
    pairs: int                 # ordered pairs of configurations
    reason: Optional[str] = None


def conditional_mi(measure, target, conditions: Sequence[tuple]) -> tuple[float, float]:
    """(I(V_mu; V_g | U), H(V_g | U)) in bits over ordered pairs of distinct points; `conditions[k]` is
    point k's values of the conditioning axes, and U of a pair is (conditions[a], conditions[b])."""
    m, g = np.asarray(measure, float), np.asarray(target, float)
    cells: dict[tuple, Counter] = {}
    for a, b in itertools.permutations(range(len(m)), 2):
        cell = cells.setdefault((tuple(conditions[a]), tuple(conditions[b])), Counter())
        cell[(int(np.sign(m[a] - m[b])), int(np.sign(g[a] - g[b])))] += 1
    total = sum(sum(c.values()) for c in cells.values())
    info = entropy = 0.0
    for joint in cells.values():
        weight = sum(joint.values()) / total
        gap: Counter = Counter()
        for (_, v), c in joint.items():
            gap[v] += c
        info += weight * _mutual_information(joint)
        entropy += weight * _entropy(gap.values())
    return info, entropy


def mutual_information_score(runs: pd.DataFrame, notion: str, target: str, axes: Sequence[str],
                             max_subset: int = 2) -> MutualInformation:
    """min over axis sets S, |S| <= min(max_subset, varying axes - 1), of I(V_mu; V_g | U_S) / H(V_g | U_S)."""
    configs = config_frame(runs, notion, target, axes)
    pairs = len(configs) * (len(configs) - 1)
    if len(configs) < 2:
        return MutualInformation(notion, target, math.nan, (), 0, pairs, "fewer than 2 configurations")
    varying = varying_axes(configs, axes)
    largest = min(max_subset, max(len(varying) - 1, 0))
    best, scored = math.inf, 0
    subset: tuple[str, ...] = ()
    for size in range(largest + 1):
        for s in itertools.combinations(varying, size):
            conditions = [tuple(row) for row in configs[list(s)].itertuples(index=False)]
            info, entropy = conditional_mi(configs["measure"], configs["target"], conditions)
            if entropy <= 1e-12:
                continue
            scored += 1
            if info / entropy < best:
                best, subset = info / entropy, s
    if not scored:
        return MutualInformation(notion, target, math.nan, (), 0, pairs,
                                 f"the targets' order is the same in every pair (H(sign delta {target}) = 0)")
    return MutualInformation(notion, target, float(max(best, 0.0)), tuple(subset), scored, pairs)


# ---- what the design cannot support ------------------------------------------------------------

def design_warnings(runs: pd.DataFrame, overall: pd.DataFrame) -> list[str]:
    """Plain-words warnings on eligible `runs` and the pooled-tau table `overall` (tau, low, high):
    too few seeds or configurations, intervals that are a single point, test-accuracy differences
    below their standard error (sqrt(p(1-p)/n) from the test-set size n, column test_examples)."""
    out = []
    seeds = runs.groupby("label", sort=False).size()
    if len(seeds) and seeds.min() < MIN_SEEDS:
        few = int((seeds < MIN_SEEDS).sum())
        out.append(f"{few} of {len(seeds)} configurations have fewer than {MIN_SEEDS} seeds (fewest: "
                   f"{int(seeds.min())}): seed means, standard errors and bootstrap intervals from so few runs are "
                   f"rough; use at least {MIN_SEEDS} seeds")
    if len(seeds) < MIN_CONFIGURATIONS:
        out.append(f"only {len(seeds)} configuration{'s' if len(seeds) != 1 else ''}: a correlation across "
                   f"configurations rests on {len(seeds) * (len(seeds) - 1) // 2} pair(s) of them; use at least "
                   f"{MIN_CONFIGURATIONS}")
    points = overall[(overall["low"] == overall["high"]) & overall["low"].notna()]
    if len(points):
        named = ", ".join(f"{r['notion']} vs {r['target']} ({r['low']:+.2f})" for _, r in points.iterrows())
        out.append(f"{len(points)} interval(s) are a single point ({named}): no resample moved them, which says the "
                   "design is too small to vary them, not that they are certain")
    accuracy = _accuracy_noise(runs)
    if accuracy:
        out.append(accuracy)
    return out


def _accuracy_noise(runs: pd.DataFrame) -> Optional[str]:
    if "test_accuracy" not in runs:
        return None
    acc = runs.groupby("label", sort=False)["test_accuracy"].mean().dropna()
    if len(acc) < 2:
        return None
    if "test_examples" not in runs or runs["test_examples"].isna().all():
        return ("test accuracy's standard error not checked: the runs do not record their test-set size")
    n = runs.groupby("label", sort=False)["test_examples"].median().reindex(acc.index)
    se = np.sqrt(acc * (1 - acc) / n)
    close = total = 0
    for a, b in itertools.combinations(acc.index, 2):
        if math.isnan(se[a]) or math.isnan(se[b]):
            continue
        total += 1
        close += int(abs(acc[a] - acc[b]) < math.sqrt(se[a] ** 2 + se[b] ** 2))
    if not close:
        return None
    return (f"{close} of {total} pairs of configurations differ in mean test accuracy by less than the standard error "
            f"of the difference (sqrt(p(1-p)/n) per accuracy, n = {int(n.min())} test examples at the fewest): "
            "their order is within test-set noise; use a larger test set")
