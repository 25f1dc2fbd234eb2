"""The study table: aggregation over seeds, diverged runs, runs trained to a target (reached, epochs),
Kendall tau-b against hand computations, table.md."""
from __future__ import annotations

import math

import numpy as np
import pytest

from samcli.study import RunRecord, load_study
from samcli.study.correlations import correlation_report, with_axes
from samcli.study.report import table_markdown
from samcli.study.table import aggregate, display, kendall_tau_b, runs_frame
from study_helpers import tiny_study


def record(label, seed, status="completed", acc=None, loss=None, lam=None, trace=None, steps=100, seconds=1.0,
           reached=None, epochs=None, **sharp_extra):
    final = {} if acc is None else {"test_accuracy": acc, "test_loss": 1 - acc, "train_loss": loss,
                                    "train_accuracy": 1.0}
    sharp = {} if lam is None else {"lambda_1": lam, "trace": trace, "r_max": lam / 100, "r_asc": lam / 200,
                                    "r_avg": trace / 1e4, "alignment": 0.5, **sharp_extra}
    return RunRecord(label, seed, f"{label}-{seed}", "sam", f"runs/{label}-{seed}", status, final=final,
                     sharpness_summary=sharp, steps=steps, seconds=seconds, reached=reached, epochs=epochs)


def test_kendall_tau_b_hand_example_with_ties():
    """x = [1, 2, 2, 3], y = [1, 3, 2, 2]; the 6 pairs:
    (1,2): dx+ dy+ C   (1,3): dx+ dy+ C   (1,4): dx+ dy+ C
    (2,3): dx0 (tie x) (2,4): dx+ dy- D   (3,4): dx+ dy0 (tie y)
    C - D = 3 - 1 = 2; P = 6, Tx = 1, Ty = 1 -> tau_b = 2 / sqrt(5 * 5) = 0.4."""
    assert kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(0.4)
    # ties on both sides of one pair count in both Tx and Ty: x = [1, 1, 2], y = [5, 5, 6]
    # pairs: (1,2) tied in x and y, (1,3) C, (2,3) C -> 2 / sqrt((3-1)(3-1)) = 1
    assert kendall_tau_b([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))      # constant x
    assert math.isnan(kendall_tau_b([1], [2]))


def test_kendall_tau_b_matches_scipy_on_random_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 15), rng.integers(0, 5, 15)
        assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_aggregation_mean_std_and_diverged_rows():
    records = [record("A", 0, acc=0.5, loss=0.1, lam=10.0, trace=100.0, seconds=2.0),
               record("A", 1, acc=0.7, loss=0.3, lam=20.0, trace=300.0, seconds=4.0),
               record("A", 2, status="diverged", steps=37, seconds=9.0),
               record("B", 0, status="diverged", steps=10, seconds=1.0),
               record("B", 1, status="diverged", steps=20, seconds=3.0),
               record("C", 0, acc=0.9, loss=0.05, lam=1.0, trace=5.0)]
    runs = runs_frame(records)
    table = aggregate(runs, ["A", "B", "C"])
    assert list(table.index) == ["A", "B", "C"]
    a = table.loc["A"]
    assert a["runs"] == 3 and a["completed"] == 2 and a["diverged"] == 1
    assert a["test_accuracy_mean"] == pytest.approx(0.6)
    assert a["test_accuracy_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert a["lambda_1_mean"] == pytest.approx(15.0) and a["trace_mean"] == pytest.approx(200.0)
    assert a["lambda_1_std"] == pytest.approx(math.sqrt(50.0))
    # steps and seconds count every run that trained, the diverged one too
    assert a["steps_mean"] == pytest.approx((100 + 100 + 37) / 3)
    assert a["seconds_mean"] == pytest.approx(5.0)
    assert a["status"] == "2 completed, 1 diverged"
    b = table.loc["B"]
    assert b["completed"] == 0 and b["diverged"] == 2 and math.isnan(b["test_accuracy_mean"])
    assert b["steps_mean"] == pytest.approx(15.0)
    c = table.loc["C"]
    assert c["status"] == "ok" and math.isnan(c["test_accuracy_std"])     # one seed: no std

    shown = display(table).set_index("configuration")
    assert shown.loc["A", "runs"] == "3 (2 completed, 1 diverged)"
    assert shown.loc["A", "test acc"].startswith("0.6 ± 0.14")
    assert shown.loc["B", "test acc"] == "diverged" and shown.loc["B", "lambda_1"] == "diverged"
    assert shown.loc["B", "steps"] == "15"
    assert shown.loc["C", "test acc"] == "0.9"


def test_reached_count_and_epochs_to_the_target():
    records = [record("A", 0, acc=0.8, loss=0.009, lam=1.0, trace=2.0, reached=True, epochs=40.0),
               record("A", 1, acc=0.7, loss=0.5, lam=2.0, trace=3.0, reached=False, epochs=100.0),
               record("A", 2, status="diverged", reached=False, epochs=3.0),
               record("B", 0, acc=0.9, loss=0.008, lam=1.0, trace=2.0, reached=True, epochs=10.0),
               record("B", 1, acc=0.9, loss=0.007, lam=1.0, trace=2.0, reached=True, epochs=20.0)]
    runs = runs_frame(records)
    assert list(runs["reached"].iloc[:3]) == [1.0, 0.0, 0.0]
    table = aggregate(runs, ["A", "B"])
    assert table.loc["A", "reached"] == 1 and table.loc["B", "reached"] == 2
    assert table.loc["A", "epochs_mean"] == pytest.approx((40 + 100 + 3) / 3)     # every run that trained
    assert table.loc["B", "epochs_mean"] == pytest.approx(15.0)
    shown = display(table).set_index("configuration")
    assert list(shown.columns[:3]) == ["runs", "reached", "test acc"]
    assert shown.loc["A", "reached"] == "1/3" and shown.loc["B", "reached"] == "2/2"
    assert shown.loc["B", "epochs"] == "15"
    assert list(shown.columns[-5:]) == ["steps", "epochs", "seconds", "s/epoch", "grads/step"]
    # the run that missed the target is in the table (its accuracy averaged) but not in the correlations
    assert table.loc["A", "test_accuracy_mean"] == pytest.approx(0.75)
    report = correlation_report(runs, resamples=20)
    assert report.eligibility == "2 of 5 runs excluded from the correlations: 1 missed the stop target, 1 diverged"
    assert set(report.overall["runs"]) == {3}


def test_table_columns_without_a_target_and_with_adaptive_notions():
    plain = display(aggregate(runs_frame([record("A", 0, acc=0.5, loss=0.1, lam=1.0, trace=2.0)])))
    # the sharpness columns are the notion registry's, grouped by notion in its order
    assert list(plain.columns) == ["configuration", "runs", "test acc", "test loss", "train loss", "lambda_1",
                                   "R^Max_rho", "R^Asc_rho", "alignment", "Tr", "R^Avg_rho", "steps", "epochs",
                                   "seconds", "s/epoch", "grads/step"]
    adaptive = runs_frame([record("A", 0, acc=0.5, loss=0.1, lam=1.0, trace=2.0, ada_lambda_1=3.0, ada_trace=4.0,
                                  ada_r_max=0.5, ada_r_avg=0.25)])
    shown = display(aggregate(adaptive)).iloc[0]
    assert (shown["adaptive lambda_1"], shown["adaptive Tr"], shown["adaptive R^Max_rho"],
            shown["adaptive R^Avg_rho"]) == ("3", "4", "0.5", "0.25")
    assert list(display(aggregate(adaptive)).columns[-5:]) == ["steps", "epochs", "seconds", "s/epoch", "grads/step"]
    assert math.isnan(runs_frame([record("A", 0, acc=0.5, loss=0.1, lam=1.0, trace=2.0)])["ada_trace"].item())


def test_markdown_has_the_table_caption_and_correlations():
    study = load_study(tiny_study(seeds=[0]))
    records = [record(label, 0, acc=0.5 + 0.1 * i, loss=0.1, lam=3.0 - i, trace=10.0 - i)
               for i, label in enumerate(study.labels)]
    runs = with_axes(runs_frame(records), {label: {"optimizer.method": "sam"} for label in study.labels})
    text = table_markdown(study, aggregate(runs, study.labels), correlation_report(runs, resamples=20), ["a note"],
                          [32])
    assert "| configuration | runs | test acc |" in text and "| 1-SAM |" in text
    assert "Kendall tau-b over all eligible runs" in text and "a note" in text
    assert "whole training set (32 examples)" in text
    # one seed per configuration: nothing to resample, the interval is the point itself
    assert "| lambda_1 | -1.00 [-1.00, -1.00] | +1.00 [+1.00, +1.00] | +1.00 [+1.00, +1.00] | 3 |" in text
    assert "no confound check" in text
    assert "Granulated Kendall (Jiang et al. 2019) with test accuracy\n\nnot applicable: no hyperparameter axis" \
        in text
