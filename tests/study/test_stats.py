"""The study's statistics against hand-computed small cases: granulated Kendall with ties and
wildcards, exact permutation p-values (checked against brute force over the joint permutations),
coupled pairs with the 2-se filter, the conditional mutual information on toy designs with a known
answer, the two-level bootstrap, and each warning. Tiny frames built here; nothing trains."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from samcli.errors import ConfigError
from samcli.study.correlations import correlation_report, kendall_interval, with_axes
from samcli.study.robust import (
    conditional_mi,
    coupled_pair_agreement,
    design_warnings,
    mutual_information_score,
)
from samcli.study.sections import sections
from samcli.study.stats import (
    MISSING,
    axis_groups,
    config_frame,
    granulated_kendall,
    permutation_distribution,
    permutation_p,
)
from samcli.study.table import kendall_tau_b


def frame(rows, seeds=1, jitter=0.0, target="test_accuracy"):
    """One run per (configuration, seed) from rows of (label, {axis: value}, measure, target)."""
    out = []
    for label, axes, m, t in rows:
        for s in range(seeds):
            offset = jitter * (s - (seeds - 1) / 2)
            out.append({"label": label, "seed": s, "lambda_1": m + offset, target: t + offset, **axes})
    return pd.DataFrame(out)


# ---- granulated Kendall -------------------------------------------------------------------------

def tied_design():
    # method x: the targets all tie along lr; method y: measure (3, 1, 2) against accuracy (.1, .2, .3)
    return frame([("x1", {"method": "x", "lr": 1}, 1.0, 0.5), ("x2", {"method": "x", "lr": 2}, 2.0, 0.5),
                  ("x3", {"method": "x", "lr": 3}, 3.0, 0.5), ("y1", {"method": "y", "lr": 1}, 3.0, 0.1),
                  ("y2", {"method": "y", "lr": 2}, 1.0, 0.2), ("y3", {"method": "y", "lr": 3}, 2.0, 0.3)])


def test_a_group_whose_targets_tie_scores_zero_and_is_not_dropped():
    result = granulated_kendall(tied_design(), "lambda_1", "test_accuracy", ["method", "lr"], sign=-1)
    by = {a.axis: a for a in result.axes}
    # lr: group x ties (0), group y: pairs D, D, C -> -1/3; mean over both groups
    assert by["lr"].tau == pytest.approx(-1 / 6) and by["lr"].groups == 2
    # method, per lr: (1, .5) vs (3, .1) D; (2, .5) vs (1, .2) C; (3, .5) vs (2, .3) C
    assert by["method"].tau == pytest.approx(1 / 3) and by["method"].groups == 3
    assert result.overall == pytest.approx((-1 / 6 + 1 / 3) / 2)
    # p(lr): the tied group is 0 under every permutation; the other: P(tau <= -1/3) = 1/6 + 2/6
    assert by["lr"].p == pytest.approx(1 / 2) and by["lr"].p_method == "exact"
    # p(method): three independent +-1: P(sum <= 1) = 1 - 1/8
    assert by["method"].p == pytest.approx(7 / 8)


def test_a_perfect_axis_over_three_groups_of_three_has_p_one_sixth_cubed():
    rows = [(f"r{r}b{b}", {"rho": r, "batch": b}, 10.0 * b + r, 10.0 * b + r) for r in range(3) for b in range(3)]
    result = granulated_kendall(frame(rows, target="loss_gap"), "lambda_1", "loss_gap", ["rho", "batch"])
    for axis in result.axes:
        assert axis.tau == 1.0 and axis.groups == 3 and axis.p == pytest.approx((1 / 6) ** 3, rel=1e-9)
    assert result.overall == 1.0


def test_a_group_of_two_configurations_has_p_one_half():
    assert permutation_p([([1.0, 2.0], [3.0, 4.0])], 1.0).p == pytest.approx(0.5)
    assert permutation_p([([1.0, 2.0], [3.0, 4.0])], -1.0, sign=-1).p == pytest.approx(0.5)
    assert permutation_p([([1.0, 2.0], [3.0, 4.0])], -1.0).p == pytest.approx(1.0)


def test_exact_p_matches_brute_force_over_joint_permutations():
    groups = [(np.array([1.0, 1.0, 2.0, 5.0]), np.array([0.1, 0.3, 0.2, 0.4])),   # ties in the measure
              (np.array([2.0, 3.0, 1.0]), np.array([1.0, 2.0, 3.0]))]
    observed = (kendall_tau_b(*groups[0]) + kendall_tau_b(*groups[1])) / 2
    hits = total = 0
    for p0 in itertools.permutations(range(4)):
        for p1 in itertools.permutations(range(3)):
            t = (kendall_tau_b(groups[0][0][list(p0)], groups[0][1]) + kendall_tau_b(groups[1][0][list(p1)],
                                                                                    groups[1][1])) / 2
            hits += t >= observed - 1e-12
            total += 1
    assert permutation_p(groups, observed).p == pytest.approx(hits / total, rel=1e-12)
    assert sum(permutation_distribution(*groups[0]).values()) == pytest.approx(1.0)


def test_a_group_too_large_to_enumerate_goes_to_monte_carlo_and_says_so():
    x = np.arange(9.0)
    p = permutation_p([(x, x)], 1.0, draws=500)
    assert p.method == "Monte Carlo, 500 draws" and p.p == pytest.approx(1 / 501)
    with pytest.raises(ConfigError, match="draws=0 must be >= 1"):
        permutation_p([(x, x)], 1.0, draws=0)


def test_an_unused_parameter_matches_any_value_in_a_group():
    runs = frame([("GD", {"method": "sgd", "rho": MISSING, "b": 32}, 1.0, 0.5),
                  ("SAM.05", {"method": "sam", "rho": 0.05, "b": 32}, 2.0, 0.6),
                  ("SAM.1", {"method": "sam", "rho": 0.1, "b": 32}, 3.0, 0.4),
                  ("SAM.1full", {"method": "sam", "rho": 0.1, "b": "full"}, 3.0, 0.4)])
    configs = config_frame(runs, "lambda_1", "test_accuracy", ["method", "rho", "b"])
    assert axis_groups(configs, "method", ["method", "rho", "b"]) == [("GD", "SAM.05"), ("GD", "SAM.1")]
    assert axis_groups(configs, "rho", ["method", "rho", "b"]) == [("SAM.05", "SAM.1")]   # GD has no rho value
    assert axis_groups(configs, "b", ["method", "rho", "b"]) == [("SAM.1", "SAM.1full")]


def test_an_axis_without_a_group_is_not_applicable_and_so_is_the_overall():
    runs = frame([("a", {"lr": 1, "m": "x"}, 1.0, 0.1), ("b", {"lr": 2, "m": "x"}, 2.0, 0.2),
                  ("c", {"lr": 3, "m": "y"}, 3.0, 0.3)])
    result = granulated_kendall(runs, "lambda_1", "test_accuracy", ["lr", "m"])
    by = {a.axis: a for a in result.axes}
    assert by["lr"].tau == 1.0 and math.isnan(by["m"].tau) and "no two configurations differ only along m" in \
        by["m"].reason
    assert math.isnan(result.overall) and "varies m" in result.reason


# ---- coupled pairs -----------------------------------------------------------------------------

def coupled_design():
    # gap seeds: A (1.0, 1.2), B (2.0, 2.2), C (1.0, 1.6), D (3.0, 3.2); measures A 1, B 2, C 5, D 0
    rows = []
    for label, axes, m, gaps in [("A", {"lr": 1, "m": "x"}, 1.0, (1.0, 1.2)),
                                 ("B", {"lr": 2, "m": "x"}, 2.0, (2.0, 2.2)),
                                 ("C", {"lr": 1, "m": "y"}, 5.0, (1.0, 1.6)),
                                 ("D", {"lr": 2, "m": "y"}, 0.0, (3.0, 3.2))]:
        rows += [{"label": label, "seed": s, "lambda_1": m, "loss_gap": g, **axes} for s, g in enumerate(gaps)]
    return pd.DataFrame(rows)


def test_coupled_pairs_count_only_differences_beyond_two_standard_errors():
    result = coupled_pair_agreement(coupled_design(), "lambda_1", "loss_gap", ["lr", "m"])
    by = {a.axis: a for a in result.axes}
    # lr: (A, B) delta 1.0 > 2 sqrt(.02/2 + .02/2) = .28, right; (C, D) 1.8 > 2 sqrt(.18/2 + .02/2) = .63, wrong
    assert (by["lr"].pairs, by["lr"].counted, by["lr"].agree) == (2, 2, 0.5)
    # m: (A, C) delta .2 < 2 sqrt(.02/2 + .18/2) = .63, not counted; (B, D) delta 1.0 > .28, wrong
    assert (by["m"].pairs, by["m"].counted, by["m"].agree) == (2, 1, 0.0)
    assert result.mean == pytest.approx(0.25) and (result.worst, result.worst_axis) == (0.0, "m")
    assert (result.counted, result.pairs) == (3, 4)


def test_coupled_pairs_need_two_seeds():
    one = coupled_design().groupby("label").head(1)
    result = coupled_pair_agreement(one, "lambda_1", "loss_gap", ["lr", "m"])
    assert math.isnan(result.mean) and result.counted == 0 and "> 2 se" in result.reason
    assert all("< 2 seeds" in a.reason for a in result.axes)


# ---- conditional mutual information ------------------------------------------------------------

def grid(measure, gap):
    return frame([(f"a{a}b{b}", {"a": a, "b": b}, measure(a, b), gap(a, b)) for a in range(3) for b in range(3)],
                 target="loss_gap")


def test_mutual_information_on_a_two_axis_toy():
    def score(measure, gap):
        return mutual_information_score(grid(measure, gap), "lambda_1", "loss_gap", ["a", "b"])
    assert score(lambda a, b: a + 3 * b, lambda a, b: a + 3 * b).score == pytest.approx(1.0)
    # a measure that tracks only axis a: once a is known (S = {a}) it says nothing about the gap
    only_a = score(lambda a, b: a, lambda a, b: a + 3 * b)
    assert only_a.score == pytest.approx(0.0, abs=1e-12) and only_a.subset == ("a",)
    # a measure of b while the gap is a's: given b, the measure's order is fixed
    assert score(lambda a, b: b, lambda a, b: a).score == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_of_three_points_by_hand():
    # ordered pairs: (-,-) x2, (+,+) x2, (-,+), (+,-): I = 2/3 log2(4/3) + 1/3 log2(2/3) = 1 - H2(1/3), H = 1
    info, entropy = conditional_mi([0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [(), (), ()])
    assert entropy == pytest.approx(1.0)
    h = -(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3)
    assert info == pytest.approx(1 - h, rel=1e-12)


def test_mutual_information_is_not_applicable_without_two_configurations():
    result = mutual_information_score(frame([("x", {"a": 1}, 1.0, 1.0)]), "lambda_1", "test_accuracy", ["a"])
    assert math.isnan(result.score) and "fewer than 2 configurations" in result.reason


# ---- the two-level bootstrap -------------------------------------------------------------------

def test_two_level_interval_reaches_zero_when_configurations_disagree():
    # configuration means: (0, 0), (1, 2), (2, 3), (3, 1): tau 1/3 from 4 configurations; seeds barely differ
    runs = frame([(c, {"k": c}, m, t) for c, m, t in [("p", 0.0, 0.0), ("q", 1.0, 2.0), ("r", 2.0, 3.0),
                                                      ("s", 3.0, 1.0)]], seeds=4, jitter=0.01)
    runs["status"] = "completed"
    seeds = kendall_interval(runs, "lambda_1", "test_accuracy", resamples=400, level="seeds")
    both = kendall_interval(runs, "lambda_1", "test_accuracy", resamples=400)
    assert seeds.low > 0                       # seed noise alone never reaches 0
    assert both.level == "configurations" and both.low < 0 < both.high
    with pytest.raises(Exception, match="level='x' is not one of configurations, seeds"):
        kendall_interval(runs, "lambda_1", "test_accuracy", level="x")


# ---- warnings and the rendering ----------------------------------------------------------------

def overall_row(low, high):
    return pd.DataFrame([{"notion": "lambda_1", "target": "test_accuracy", "tau": 1.0, "low": low, "high": high}])


def test_each_warning():
    three_seeds = frame([(c, {}, float(i), 0.5 + 0.1 * i) for i, c in enumerate("abc")], seeds=3)
    warned = design_warnings(three_seeds, overall_row(0.1, 0.9))
    assert any("3 of 3 configurations have fewer than 4 seeds (fewest: 3)" in w for w in warned)
    assert not any("only" in w for w in warned)
    assert any("do not record their test-set size" in w for w in warned)
    two = frame([("a", {}, 0.0, 0.80), ("b", {}, 1.0, 0.81)], seeds=4).assign(test_examples=1000)
    warned = design_warnings(two, overall_row(1.0, 1.0))
    assert any(w.startswith("only 2 configurations") for w in warned)
    assert any("single point (lambda_1 vs test_accuracy (+1.00))" in w for w in warned)
    # se of the difference: sqrt(.8 * .2 / 1000 + .81 * .19 / 1000) = .0177 > .01
    assert any("1 of 1 pairs of configurations differ in mean test accuracy by less than" in w for w in warned)
    apart = frame([("a", {}, 0.0, 0.80), ("b", {}, 1.0, 0.90), ("c", {}, 2.0, 0.70)], seeds=4).assign(
        test_examples=1000)
    assert design_warnings(apart, overall_row(0.1, 0.9)) == []


def test_a_two_run_study_warns_that_its_interval_is_a_point():
    runs = frame([("GD", {"method": "sgd"}, 1.0, 0.5), ("SAM", {"method": "sam"}, 2.0, 0.4)])
    runs = runs.assign(status="completed", test_loss=1.0, train_loss=0.1, train_accuracy=1.0, test_examples=16)
    runs = with_axes(runs, {"GD": {"method": "sgd"}, "SAM": {"method": "sam"}})
    report = correlation_report(runs, notions={"lambda_1": "lambda_1"}, resamples=50)
    row = report.overall.set_index("target").loc["test_accuracy"]
    assert row["tau"] == row["low"] == row["high"] == -1.0
    assert any("single point" in w for w in report.warnings) and any("only 2" in w for w in report.warnings)
    text = "\n".join(line for _, _, lines in sections(report) for line in lines)
    assert "WARNING: only 2 configurations" in text
    # one configuration per method: no group has two, coupled pairs need seeds; each says why, no number
    assert "not applicable: no coupled pair" not in text and "not applicable:" in text
    granulated = report.granulated.set_index(["target", "axis"])
    assert granulated.loc[("test_accuracy", "method"), "tau"] == -1.0       # a group of two: a number with p 1/2
    assert granulated.loc[("test_accuracy", "method"), "p"] == pytest.approx(0.5)
    coupled = report.coupled.set_index(["target", "axis"]).loc[("test_accuracy", "mean")]
    assert math.isnan(coupled["agree"]) and "se" in coupled["reason"]


def test_an_axis_that_only_a_missing_value_varies_is_no_axis():
    # GD has no rho and SAM one radius: only method varies, and the overall score is method's
    runs = frame([("GD", {"method": "sgd", "rho": MISSING}, 1.0, 0.5), ("SAM", {"method": "sam", "rho": 0.05}, 2.0, 0.4)])
    result = granulated_kendall(runs, "lambda_1", "test_accuracy", ["method", "rho"])
    assert [a.axis for a in result.axes] == ["method"] and result.overall == -1.0


def test_mutual_information_has_no_direction():
    # a measure that orders every pair backwards determines the gap's order as much as one that orders it right
    backwards = mutual_information_score(grid(lambda a, b: -(a + 3 * b), lambda a, b: a + 3 * b), "lambda_1",
                                         "loss_gap", ["a", "b"])
    assert backwards.score == pytest.approx(1.0)
