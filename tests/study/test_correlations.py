"""Correlations of sharpness with generalization: bootstrap intervals (seeds only, and two levels:
configurations then seeds), granulated Kendall (Jiang et al. 2019) against a hand-computed two-axis
example, gaps, exclusions and confounds. tests/study/test_stats.py has the statistics' own cases."""
from __future__ import annotations

import math

import pytest

from samcli.config import SamcliError
from samcli.sharpness.adaptive import AdaptiveSharpness
from samcli.study.correlations import (ADAPTIVE_NOTIONS, MISSING, confound_warning, correlation_report, eligibility,
                                       granulated_kendall, kendall_interval, study_axes, with_axes, with_gaps)
from samcli.study.rundir import RunRecord
from samcli.study.table import kendall_tau_b, runs_frame

# (method, lr) -> (lambda_1, test accuracy) configuration means; worked out by hand below
GRID = {("a", 1): (1.0, 1.0), ("a", 2): (2.0, 3.0), ("a", 3): (3.0, 4.0),
        ("b", 1): (4.0, 0.0), ("b", 2): (5.0, 6.0), ("b", 3): (3.5, 5.0)}


def record(label, seed, method, lam, acc, status="completed", train_loss=0.01, **extra):
    final = {"test_accuracy": acc, "test_loss": 1.0 - acc / 10, "train_loss": train_loss, "train_accuracy": 1.0}
    return RunRecord(label=label, seed=seed, hash=f"{label}-{seed}", method=method, run_dir="", status=status,
                     final=final, sharpness_summary={"lambda_1": lam, "trace": 2 * lam, **extra}, steps=10,
                     seconds=1.0)


def grid_runs(jitter=0.01):
    """Two seeds per configuration, symmetric about the configuration mean."""
    records = [record(f"{m} lr={lr}", seed, m, lam + sign * jitter, acc + sign * jitter)
               for (m, lr), (lam, acc) in GRID.items() for seed, sign in ((0, 1), (1, -1))]
    values = {f"{m} lr={lr}": {"optimizer.method": m, "optimizer.lr": lr, "optimizer.batch_size": 32}
              for m, lr in GRID}
    return with_axes(runs_frame(records), values)


def test_granulated_kendall_matches_the_hand_computed_example():
    runs = grid_runs()
    assert study_axes(runs, ["method", "lr", "batch_size"]) == ["method", "lr"]
    result = granulated_kendall(runs, "lambda_1", "test_accuracy", ["method", "lr"])
    by_axis = {a.axis: a for a in result.axes}
    # method axis: within lr=1 (1,1) vs (4,0) discordant, lr=2 concordant, lr=3 (3,4) vs (3.5,5) concordant
    assert by_axis["method"].tau == pytest.approx((-1 + 1 + 1) / 3)
    assert (by_axis["method"].groups, by_axis["method"].configurations) == (3, 6)
    # lr axis: method a all three pairs concordant (1); method b: C, D, C -> 1/3
    assert by_axis["lr"].tau == pytest.approx((1 + 1 / 3) / 2)
    assert result.overall == pytest.approx(((-1 + 1 + 1) / 3 + (1 + 1 / 3) / 2) / 2)
    assert result.reason is None
    lam, acc = zip(*GRID.values())
    assert not math.isclose(result.overall, kendall_tau_b(lam, acc))    # not the pooled tau


def test_a_parameter_a_configuration_does_not_use_matches_any_value():
    # was: GD (no rho) formed no method group and overall was rho's alone; now GD joins each rho's group
    records = [record("GD", 0, "sgd", 1.0, 0.5), record("SAM 0.05", 0, "sam", 2.0, 0.6),
               record("SAM 0.1", 0, "sam", 3.0, 0.4)]
    values = {"GD": {"method": "sgd", "rho": None}, "SAM 0.05": {"method": "sam", "rho": 0.05},
              "SAM 0.1": {"method": "sam", "rho": 0.1}}
    runs = with_axes(runs_frame(records), values)
    assert runs.loc[runs["label"] == "GD", "rho"].item() == MISSING
    result = granulated_kendall(runs, "lambda_1", "test_accuracy", ["method", "rho"], sign=-1)
    by_axis = {a.axis: a for a in result.axes}
    # method: {GD, SAM 0.05} concordant (+1), {GD, SAM 0.1} discordant (-1) -> 0
    assert by_axis["method"].tau == 0.0 and by_axis["method"].groups == 2 and by_axis["method"].overlapping
    # p = P(sum of two independent +-1 <= 0) = 3/4
    assert by_axis["method"].p == pytest.approx(0.75)
    assert by_axis["rho"].tau == -1.0 and by_axis["rho"].groups == 1 and by_axis["rho"].p == pytest.approx(0.5)
    assert result.overall == pytest.approx(-0.5)


def test_a_single_configuration_is_not_applicable():
    runs = with_axes(runs_frame([record("only", s, "sgd", float(s), float(s)) for s in range(3)]),
                     {"only": {"method": "sgd"}})
    result = granulated_kendall(runs, "lambda_1", "test_accuracy", ["method"])
    assert math.isnan(result.overall) and "single configuration" in result.reason
    report = correlation_report(runs, ["method"], resamples=20)
    overall = report.granulated[report.granulated["axis"] == "overall"]
    assert overall["reason"].str.contains("single configuration").all() and overall["tau"].isna().all()


def test_no_varying_axis_is_not_applicable():
    runs = with_axes(runs_frame([record("x", 0, "sgd", 1.0, 1.0), record("y", 0, "sgd", 2.0, 3.0)]),
                     {"x": {"method": "sgd"}, "y": {"method": "sgd"}})
    result = granulated_kendall(runs, "lambda_1", "test_accuracy", ["method"])
    assert math.isnan(result.overall) and "no hyperparameter axis varies" in result.reason


def test_bootstrap_interval_is_seeded_and_resamples_within_configurations():
    runs = grid_runs(jitter=0.8)
    first = kendall_interval(runs, "lambda_1", "test_accuracy", resamples=300, seed=3, level="seeds")
    again = kendall_interval(runs, "lambda_1", "test_accuracy", resamples=300, seed=3, level="seeds")
    other = kendall_interval(runs, "lambda_1", "test_accuracy", resamples=300, seed=4, level="seeds")
    assert first == again and first != other
    assert first.n == 12 and first.tau == pytest.approx(kendall_tau_b(runs["lambda_1"], runs["test_accuracy"]))
    assert first.low < first.high and first.low <= first.tau + 0.2 and first.high >= first.tau - 0.2
    # one seed per configuration: a within-configuration resample is the data itself, no spread
    single = runs[runs["seed"] == 0]
    collapsed = kendall_interval(single, "lambda_1", "test_accuracy", resamples=50, level="seeds")
    assert collapsed.low == collapsed.high == pytest.approx(collapsed.tau)


def test_gaps_and_exclusions():
    records = [record("a", 0, "sgd", 1.0, 0.8), record("a", 1, "sgd", 2.0, 0.7),
               record("b", 0, "sam", 3.0, 0.9), record("b", 1, "sam", math.nan, math.nan, status="diverged")]
    runs = with_gaps(runs_frame(records))
    assert runs["loss_gap"].iloc[0] == pytest.approx((1 - 0.08) - 0.01)
    assert runs["error_gap"].iloc[0] == pytest.approx((1 - 0.8) - (1 - 1.0))
    runs["reached"] = [1.0, 0.0, True, None]
    eligible, note = eligibility(runs)
    assert list(eligible["hash"]) == ["a-0", "b-0"]
    assert note == "2 of 4 runs excluded from the correlations: 1 missed the stop target, 1 diverged"
    assert eligibility(runs.drop(columns="reached"))[1].startswith("1 of 4 runs excluded")


def test_confound_warning():
    records = [record("fast", 0, "sgd", 1.0, 0.8, train_loss=0.01), record("slow", 0, "sam", 1.0, 0.8,
                                                                           train_loss=0.5)]
    runs = runs_frame(records)
    warning = confound_warning(runs, tolerance=0.1)
    assert warning is not None and "\n" not in warning and "slow" in warning and "fast" in warning
    assert confound_warning(runs, tolerance=1.0) is None


def test_axis_columns_are_recorded_and_never_shadow_a_metric():
    runs = with_axes(runs_frame([record("x", 0, "sgd", 1.0, 1.0), record("y", 0, "sam", 2.0, 3.0)]),
                     {"x": {"steps": 10, "optimizer.rho": None}, "y": {"steps": 20, "optimizer.rho": 0.1}})
    assert runs.attrs["axes"] == ["method", "axis:steps", "rho"]
    assert list(runs["steps"]) == [10.0, 10.0] and list(runs["axis:steps"]) == [10, 20]
    assert list(runs["method"]) == ["sgd", "sam"] and list(runs["rho"]) == [MISSING, 0.1]


def test_bad_bootstrap_settings_are_refused():
    with pytest.raises(SamcliError, match="resamples=0 must be >= 1"):
        kendall_interval(grid_runs(), "lambda_1", "test_accuracy", resamples=0)


def test_report_covers_every_notion_and_target():
    runs = grid_runs()
    report = correlation_report(runs, resamples=50, tolerance=1.0)
    assert report.axes == ("method", "lr") and report.warning is None and report.eligibility == "all 12 runs used"
    assert set(zip(report.overall["notion"], report.overall["target"])) == {
        (n, t) for n in ("lambda_1", "trace") for t in ("test_accuracy", "loss_gap", "error_gap")}
    granulated = report.granulated.set_index(["notion", "target", "axis"])
    assert granulated.loc[("lambda_1", "test_accuracy", "overall"), "tau"] == pytest.approx(
        granulated_kendall(runs, "lambda_1", "test_accuracy", ["method", "lr"]).overall)
    # train accuracy is 1 everywhere, so the error gap is minus the test accuracy: the taus flip sign
    row = report.overall.set_index(["notion", "target"])
    assert row.loc[("lambda_1", "error_gap"), "tau"] == pytest.approx(-row.loc[("lambda_1", "test_accuracy"), "tau"])


def test_adaptive_notion_keys_are_those_adaptive_sharpness_reports():
    fields = {f: 1.0 for f in AdaptiveSharpness.__dataclass_fields__}
    fields.update(trace_method="hutch++", lanczos_converged=True)
    assert set(ADAPTIVE_NOTIONS) <= set(AdaptiveSharpness(**fields).summary())


def test_bootstrap_interval_holds_the_estimate_when_seeds_barely_differ():
    # copies of one run scored as data would lose the concordant within-configuration pairs
    runs = grid_runs(jitter=0.01)
    result = kendall_interval(runs, "lambda_1", "test_accuracy", resamples=300, level="seeds")
    assert result.low <= result.tau <= result.high


def test_multiplicity_tau_with_unit_weights_is_kendall_tau_b():
    import numpy as np
    from samcli.study.correlations import _multiplicity_tau
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 15).astype(float), rng.integers(0, 5, 15).astype(float)   # with ties
    upper = np.triu_indices(15, 1)
    concordance = (np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :]))[upper]
    tied_x, tied_y = (x[:, None] == x[None, :])[upper], (y[:, None] == y[None, :])[upper]
    assert _multiplicity_tau(np.ones(len(concordance)), concordance, tied_x, tied_y) == pytest.approx(
        kendall_tau_b(x, y), rel=1e-12)
    # weight 2 on a point = two copies of it, minus the pair of the copies with each other
    w = np.ones(15)
    w[3] = 2
    copies_x, copies_y = np.append(x, x[3]), np.append(y, y[3])
    up2 = np.triu_indices(16, 1)
    keep = ~((up2[0] == 3) & (up2[1] == 15))
    dx = np.sign(copies_x[:, None] - copies_x[None, :])[up2][keep]
    dy = np.sign(copies_y[:, None] - copies_y[None, :])[up2][keep]
    expected = (dx * dy).sum() / math.sqrt(((dx != 0).sum()) * ((dy != 0).sum()))
    assert _multiplicity_tau(np.outer(w, w)[upper], concordance, tied_x, tied_y) == pytest.approx(expected, rel=1e-12)
