"""findings.md from hand-built runs frames (nothing trains): a design whose perfect measure is significant
along both axes, one whose perfect measure cannot be (two groups of two: p >= 1/4) and must say that
nothing is significant, a measure that orders everything backwards, and the smallest attainable p."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from samcli.study.correlations import correlation_report, with_axes
from samcli.study.findings import findings_markdown, significant
from samcli.study.stats import smallest_p


def runs_frame(cells, measure, seeds=4, jitter=1e-3):
    """One run per (configuration, seed): cells are {label: (rho, batch, gap)}; lambda_1 = measure(gap);
    test accuracy falls as the loss gap grows, so both targets rank the same way."""
    rows = []
    for label, (rho, batch, gap) in cells.items():
        for s in range(seeds):
            g = gap + jitter * (s - (seeds - 1) / 2)
            rows.append({"label": label, "seed": s, "hash": f"{label}-{s}", "method": "sam", "status": "completed",
                         "reached": 1.0, "test_examples": 4000, "train_loss": 0.01, "test_loss": 0.01 + g,
                         "train_accuracy": 1.0, "test_accuracy": 0.95 - 0.1 * g, "lambda_1": measure(g)})
    runs = pd.DataFrame(rows)
    return with_axes(runs, {label: {"rho": rho, "batch_size": batch} for label, (rho, batch, _) in cells.items()})


def grid(rhos, batches):
    # the gap grows with rho and with the batch index: each axis has a strict order inside every group
    return {f"rho={r} b={b}": (r, b, 0.1 + 0.2 * r + 0.05 * i) for r in rhos for i, b in enumerate(batches)}


def report_of(runs):
    return correlation_report(runs, notions={"lambda_1": "lambda_1"}, tolerance=0.01, resamples=200)


def section(text: str, heading: str) -> list[str]:
    lines = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0].splitlines()
    return [line[2:] for line in lines if line.startswith("- ")]


def test_a_perfect_measure_on_three_groups_of_three_is_significant_with_its_figure():
    runs = runs_frame(grid([0.0, 0.02, 0.05], [32, 64, "full"]), lambda g: 3 * g)
    report = report_of(runs)
    text = findings_markdown(report, "toy", runs)
    hits = significant(report)
    # rho and batch_size, each 3 groups of 3 configurations: psi = 1, p = (1/6)^3, for every target
    assert set(hits["axis"]) == {"rho", "batch_size"} and len(hits) == 6
    assert hits["p"].to_numpy() == pytest.approx([(1 / 6) ** 3] * 6)
    short = section(text, "In short")
    assert "Along rho, 1 notion ranks test - train loss as sharper-is-worse predicts, significantly: lambda_1 " \
           "(psi = +1.00, p = 0.0046)." in short
    assert "Along rho (0.0, 0.02, 0.05), over 3 groups: significant for lambda_1 (psi = +1.00, p = 0.0046)." in \
           section(text, "Along which axis: granulated Kendall with test - train loss")
    # against accuracy, sharper-is-worse is psi = -1
    assert "significant for lambda_1 (psi = -1.00, p = 0.0046)." in " ".join(
        section(text, "Along which axis: granulated Kendall with test accuracy"))
    assert "Nothing is significant" not in text
    assert "9 configurations with 4 seeds each" in text
    # 6 p-values (1 notion x 3 targets x 2 axes), all below 0.05 and below 0.05 / 6 too
    assert "6 of the 6 per-axis p-values" in text and "below the Bonferroni threshold 0.0083" in text
    # every headline and every granulated sentence carries a figure
    for heading in ("In short", "Along which axis: granulated Kendall with test - train loss"):
        assert all(re.search(r"\d", line) for line in section(text, heading)), heading


def test_two_groups_of_two_cannot_be_significant_and_it_says_so():
    runs = runs_frame(grid([0.0, 0.05], [32, "full"]), lambda g: 3 * g)
    report = report_of(runs)
    text = findings_markdown(report, "small", runs)
    assert significant(report).empty
    rows = report.granulated[report.granulated["axis"] != "overall"]
    assert rows["p"].to_numpy() == pytest.approx([0.25] * len(rows)) and rows["p_min"].to_numpy() == pytest.approx(
        [0.25] * len(rows))
    short = section(text, "In short")
    assert len(short) == 1 and short[0].startswith(
        "Nothing is significant: no notion ranks any gap or the test accuracy along any axis at p < 0.05 "
        "(the smallest p-value, 0.25,")
    assert "Along rho the smallest p-value the design allows is 0.25: no result along it can be significant" in text
    assert "0 of the 6 per-axis p-values" in text
    assert "significant for" not in text


def test_a_backwards_measure_is_never_called_significant():
    runs = runs_frame(grid([0.0, 0.02, 0.05], [32, 64, "full"]), lambda g: -g)
    report = report_of(runs)
    text = findings_markdown(report, "backwards", runs)
    assert significant(report).empty and text.count("Nothing is significant") == 1
    assert "Along rho, 1 notion orders its groups the other way (sharper, yet better): lambda_1 (-1.00)." in text
    # the pooled interval lies wholly on the wrong side: said as such, never as sharper-is-worse
    pooled = " ".join(section(text, "Over all runs: pooled Kendall tau-b"))
    assert "excludes 0 the other way (sharper, yet better) for lambda_1 (-1.00" in pooled
    assert "the sharper-is-worse way for" not in pooled


def test_a_design_warning_becomes_a_caveat():
    runs = runs_frame(grid([0.0, 0.02, 0.05], [32, 64, "full"]), lambda g: 3 * g, seeds=2)
    text = findings_markdown(report_of(runs), "few-seeds", runs)
    assert "9 of 9 configurations have fewer than 4 seeds (fewest: 2)" in " ".join(section(text, "Caveats"))


def test_smallest_p_by_hand():
    three = ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert smallest_p([three] * 3) == pytest.approx((1 / 6) ** 3)
    assert smallest_p([([1.0, 2.0], [1.0, 2.0])] * 2, sign=-1) == pytest.approx(1 / 4)
    # targets that all tie give tau 0 under every order: the group cannot move the p-value
    assert smallest_p([([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]), ([1.0, 2.0], [1.0, 2.0])]) == pytest.approx(1 / 2)
    # a tie in the measure: orders (1, 1, 2) over targets (1, 2, 3): the best tau comes from the 2 orders
    # that put the 2 last, out of 3! = 6
    assert smallest_p([([1.0, 1.0, 2.0], [1.0, 2.0, 3.0])]) == pytest.approx(2 / 6)


def test_one_configuration_makes_no_claim():
    runs = runs_frame({"only": (0.05, 32, 0.3)}, lambda g: g)
    text = findings_markdown(report_of(runs), "one", runs)
    assert "no claim about any axis is made" in section(text, "In short")[0]
    assert "significant for" not in text and "1 configuration with 4 seeds each; the design varies no axis." in text
