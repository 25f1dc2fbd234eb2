"""Granulated Kendall (Jiang et al. 2019) with exact permutation p-values, on configuration means.

Pure functions on pandas frames; robust.py builds the coupled-pair view and the conditional mutual
information on the same configuration frame (`config_frame`).

Definitions (docs/statistics.md states them with their sources):
- a configuration is one label of the study; its measure and target are the means over its
  eligible seeds (Jiang et al. rank one trained model per hyperparameter setting; seeds only sharpen
  the means);
- along axis i, a group is a set of configurations that have a value on i and agree on every other
  axis, where a parameter a configuration does not use (MISSING: rho for sgd) matches any value;
  groups with identical members count once (the same trained models are one piece of evidence), and
  a group needs >= 2 configurations with >= 2 distinct values on i;
- tau of a group is Kendall tau-b of measure against target over its configurations, 0 when the
  targets all tie or the measures all tie (scored, not dropped: a measure that cannot order a group
  has not predicted it); psi_i is the mean over groups; the overall score is the mean of psi_i over
  every axis the design varies, not applicable when one of them has no group;
- the p-value of psi_i: under the null the measure's order within each group is a uniformly random
  permutation, independently across groups; the distribution of psi_i is the convolution of the
  per-group distributions, each enumerated over all k! permutations (Monte Carlo only when that is too
  large, with the number of draws stated). One-sided, in the direction sharper-is-worse predicts.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .table import kendall_tau_b

MISSING = "n/a"        # the value of an axis that does not apply to a configuration (rho for sgd)
EXACT_MAX_GROUP = 8    # 8! = 40320 permutations: enumerated; a larger group goes to Monte Carlo
EXACT_MAX_SUPPORT = 200_000   # distinct values of the convolved sum kept before falling back
MONTE_CARLO_DRAWS = 20_000
DECIMALS = 12          # tau values are rationals; rounded to merge equal sums in the convolution


def config_frame(runs: pd.DataFrame, notion: str, target: str, axes: Sequence[str]) -> pd.DataFrame:
    """One row per configuration (index: label) with `measure`, `target` (means over the runs where
    both are finite), `target_std` (sample std, NaN for one seed), `seeds` and one column per axis."""
    both = runs[["label", notion, target]].replace([np.inf, -np.inf], np.nan).dropna(subset=[notion, target])
    grouped = both.groupby("label", sort=False)
    out = pd.DataFrame({"measure": grouped[notion].mean(), "target": grouped[target].mean(),
                        "target_std": grouped[target].std(ddof=1), "seeds": grouped[target].size()})
    if len(axes):
        values = runs.drop_duplicates("label").set_index("label")[list(axes)]
        out = out.join(values.map(axis_value))
    return out


def axis_value(value):
    """A configuration's value on an axis as a hashable cell: MISSING for None / NaN, repr for a container."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (list, dict, set, tuple)):
        return repr(value)
    return value


def varying_axes(configs: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """The axes on which >= 2 configurations have distinct values they use (an axis missing for some
    configurations and one value for the rest does not vary: it is another axis, method, that does)."""
    return [a for a in axes if a in configs and configs[a].map(axis_value)[lambda v: v != MISSING].nunique() > 1]


def compatible(a, b) -> bool:
    """Two values of one axis agree: equal, or one of them is a parameter its configuration does not use."""
    return a == MISSING or b == MISSING or a == b


def axis_groups(configs: pd.DataFrame, axis: str, axes: Sequence[str]) -> list[tuple[str, ...]]:
    """The groups along `axis` (labels, in frame order): configurations with a value on `axis` that agree
    on every other axis of `axes` (MISSING matches any value); distinct member sets of >= 2
    configurations holding >= 2 distinct values on `axis`."""
    members = configs[configs[axis] != MISSING]
    others = [a for a in axes if a != axis]
    choices = []
    for a in others:
        used = list(dict.fromkeys(v for v in members[a] if v != MISSING))
        choices.append(used or [MISSING])
    keys: dict[tuple, None] = {}
    for _, row in members.iterrows():
        options = [choices[k] if row[a] == MISSING else [row[a]] for k, a in enumerate(others)]
        keys.update(dict.fromkeys(itertools.product(*options)))
    groups: dict[tuple[str, ...], None] = {}
    for key in keys:
        mask = np.ones(len(members), dtype=bool)
        for a, value in zip(others, key):
            mask &= members[a].map(lambda v, value=value: compatible(v, value)).to_numpy(bool)
        chosen = members[mask]
        if len(chosen) >= 2 and chosen[axis].nunique() >= 2:
            groups[tuple(chosen.index)] = None
    return list(groups)


def group_tau(measure, target) -> float:
    """Kendall tau-b of a group, 0 when the measures or the targets all tie (tau-b is 0/0 there)."""
    tau = kendall_tau_b(measure, target)
    return 0.0 if math.isnan(tau) else tau


# ---- the null distribution: permutations within groups ---------------------------------------------

def permutation_distribution(measure, target) -> dict[float, float]:
    """{tau: probability} of the group's tau when the measure's values are assigned to its configurations
    in a uniformly random order (all k! permutations, ties in the measure kept as they are)."""
    m, g = np.asarray(measure, float), np.asarray(target, float)
    k = len(m)
    if k > EXACT_MAX_GROUP:
        raise ConfigError(f"a group of {k} configurations is too large to enumerate (> {EXACT_MAX_GROUP}); "
                          "use permutation_p, which falls back to Monte Carlo")
    taus = _permuted_taus(m, g, np.array(list(itertools.permutations(range(k)))))
    values, counts = np.unique(np.round(taus, DECIMALS), return_counts=True)
    return {float(v): float(c) / len(taus) for v, c in zip(values, counts)}


def _permuted_taus(m: np.ndarray, g: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """tau of measure m[order] against g, one per row of `orders`; tau-b's denominator is the same for
    every order (the number of tied pairs does not change), so only the numerator is recomputed."""
    k = len(m)
    i, j = np.triu_indices(k, 1)
    dy = np.sign(g[i] - g[j])
    pairs = k * (k - 1) / 2
    tied_m = float((m[i] == m[j]).sum())
    denominator = math.sqrt((pairs - tied_m) * (pairs - float((dy == 0).sum())))
    if denominator == 0:
        return np.zeros(len(orders))
    permuted = m[orders]
    return (np.sign(permuted[:, i] - permuted[:, j]) * dy).sum(axis=1) / denominator


@dataclass(frozen=True)
class PValue:
    """A permutation p-value and how it was computed."""
    p: float
    method: str                # "exact" or "Monte Carlo, N draws"


def permutation_p(groups: Sequence[tuple], observed: float, sign: int = 1, *, draws: int = MONTE_CARLO_DRAWS,
                  seed: int = 0) -> PValue:
    """P(sign * mean tau >= sign * observed) under independent uniform permutations of the measure within
    each group; `groups` holds (measure, target) arrays. Exact (enumeration and convolution) when every
    group has <= EXACT_MAX_GROUP configurations and the sum's support stays small, else Monte Carlo
    with `draws` draws, p = (1 + hits) / (1 + draws)."""
    if sign not in (1, -1):
        raise ConfigError(f"sign={sign} must be 1 (tau >= observed) or -1 (tau <= observed)")
    if draws < 1:
        raise ConfigError(f"draws={draws} must be >= 1")
    if not groups:
        raise ConfigError("permutation_p needs at least one group")
    total = sign * observed * len(groups)
    tolerance = 10.0 ** -(DECIMALS - 3)
    if all(len(m) <= EXACT_MAX_GROUP for m, _ in groups):
        support: Optional[dict[float, float]] = {0.0: 1.0}
        for m, g in groups:
            step = permutation_distribution(m, g)
            new: dict[float, float] = {}
            for s, ps in support.items():       # type: ignore[union-attr]
                for t, pt in step.items():
                    key = round(s + sign * t, DECIMALS)
                    new[key] = new.get(key, 0.0) + ps * pt
            support = new if len(new) <= EXACT_MAX_SUPPORT else None
            if support is None:
                break
        if support is not None:
            p = sum(prob for value, prob in support.items() if value >= total - tolerance)
            return PValue(float(min(1.0, p)), "exact")
    rng = np.random.default_rng(seed)
    sums = np.zeros(draws)
    for m, g in groups:
        m, g = np.asarray(m, float), np.asarray(g, float)
        orders = np.argsort(rng.random((draws, len(m))), axis=1)
        sums += sign * _permuted_taus(m, g, orders)
    hits = int((sums >= total - tolerance).sum())
    return PValue((1 + hits) / (1 + draws), f"Monte Carlo, {draws} draws")


# ---- granulated Kendall ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AxisScore:
    """psi_i of one axis: the mean tau over its groups, with its permutation p-value."""
    axis: str
    tau: float                 # NaN when not applicable
    groups: int
    configurations: int        # distinct configurations in the groups
    p: float = math.nan        # one-sided, in the direction `sign` says sharper-is-worse predicts
    p_method: str = ""
    overlapping: bool = False  # groups share configurations (a wildcard): p treats them as independent
    reason: Optional[str] = None   # why not applicable
    p_min: float = math.nan    # the smallest p these groups can give (every group at its extreme tau)


@dataclass(frozen=True)
class Granulated:
    """Granulated Kendall of a notion against a target: psi_i per varying axis and their mean."""
    notion: str
    target: str
    axes: tuple[AxisScore, ...]
    overall: float             # NaN when not applicable
    reason: Optional[str] = None


def granulated_kendall(runs: pd.DataFrame, notion: str, target: str, axes: Sequence[str], sign: int = 1,
                       *, draws: int = MONTE_CARLO_DRAWS, seed: int = 0) -> Granulated:
    """Jiang et al. (2019)'s granulated Kendall of `notion` against `target` over the axes of `axes` that
    vary across configurations, each with its permutation p-value (`sign` 1: P(psi >= observed), the
    direction for a gap; -1: P(psi <= observed), for accuracy)."""
    configs = config_frame(runs, notion, target, axes)
    if configs.empty:
        return Granulated(notion, target, (), math.nan, f"no eligible run has both {notion} and {target}")
    if len(configs) < 2:
        return Granulated(notion, target, (), math.nan, "a single configuration: nothing to rank")
    varying = varying_axes(configs, axes)
    if not varying:
        return Granulated(notion, target, (), math.nan, "no hyperparameter axis varies across configurations")
    scores = tuple(_axis_score(configs, axis, varying, sign, draws, seed) for axis in varying)
    empty = [s.axis for s in scores if math.isnan(s.tau)]
    if empty:
        return Granulated(notion, target, scores, math.nan,
                          f"the design varies {', '.join(empty)} but no two configurations differ only along "
                          f"{'it' if len(empty) == 1 else 'them'}, so the mean over every varied axis cannot be formed")
    return Granulated(notion, target, scores, float(np.mean([s.tau for s in scores])))


def _axis_score(configs: pd.DataFrame, axis: str, varying: list[str], sign: int, draws: int,
                seed: int) -> AxisScore:
    groups = axis_groups(configs, axis, varying)
    if not groups:
        return AxisScore(axis, math.nan, 0, 0, reason=f"no two configurations differ only along {axis}")
    arrays = [(configs.loc[list(g), "measure"].to_numpy(float), configs.loc[list(g), "target"].to_numpy(float))
              for g in groups]
    taus = [group_tau(m, g) for m, g in arrays]
    psi = float(np.mean(taus))
    p = permutation_p(arrays, psi, sign, draws=draws, seed=seed)
    labels = [label for g in groups for label in g]
    return AxisScore(axis, psi, len(groups), len(set(labels)), p.p, p.method, len(labels) > len(set(labels)),
                     p_min=smallest_p(arrays, sign))


def smallest_p(groups: Sequence[tuple], sign: int = 1) -> float:
    """The smallest one-sided permutation p-value `groups` ((measure, target) arrays) can give whatever the
    measure's order: P(every group at its most extreme tau in the direction `sign`), the product over
    groups (independent under the null). Three groups of three distinct values: (1/6)^3; two groups of
    two: 1/4, so such an axis cannot reach p < 0.05 whatever the measure does. NaN when a group is too
    large to enumerate."""
    p = 1.0
    for m, g in groups:
        if len(m) > EXACT_MAX_GROUP:
            return math.nan
        distribution = permutation_distribution(m, g)
        extreme = max(distribution, key=lambda tau: sign * tau)
        p *= distribution[extreme]
    return p
