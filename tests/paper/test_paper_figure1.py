"""`samcli reproduce figure1 --quick`: the verdicts the theory guarantees at the quick settings, and the files."""
from __future__ import annotations

import json

import pytest

from samcli.paper import reproduce_study as reproduce


@pytest.fixture(scope="module")
def figure1(tmp_path_factory):
    return reproduce("figure1", tmp_path_factory.mktemp("paper") / "figure1", quick=True)


def test_gd_does_not_drift(figure1):
    v = figure1.verdict("gd-no-drift")
    assert v.passed, v.measured
    assert v.measured["moved after"] < 1e-6


def test_sam_ends_at_argmin_F1(figure1):
    v = figure1.verdict("sam-to-argmin-F1")
    assert v.passed and v.measured["to argmin F1"] <= 0.05, v.measured


def test_one_sam_ends_at_argmin_of_the_sum(figure1):
    v = figure1.verdict("1sam-to-argmin-sum")
    assert v.passed and v.measured["to argmin F1+F2"] <= 0.1, v.measured
    assert v.measured["to argmin F1+F2"] < min(v.measured["to argmin F1"], v.measured["to argmin F2"])


def test_sam_bounce_alignment_and_regularizers(figure1):
    for vid in ("sam-bounce", "sam-lambda1-alignment", "sam-vs-1sam-regularizers"):
        assert figure1.verdict(vid).passed, figure1.verdict(vid).measured
    assert figure1.verdict("sam-bounce").measured["relative error"] < 1e-3


def test_gap_to_the_flow_shrinks(figure1):
    for vid in ("flow-gap-sam-full", "flow-gap-sam-1"):
        assert figure1.verdict(vid).passed, figure1.verdict(vid).measured


def test_ascent_gd_is_reported_as_open(figure1):
    assert figure1.verdict("ascent-gd-to-argmin-F2").status == "open"


def test_files(figure1):
    out = figure1.out_dir
    for name in ("verdicts.md", "results.json", "config.yaml", "endpoints.csv", "endpoints.md", "flow_gap.csv",
                 "along_the_way.csv", "minimizers.md", "trajectories.png", "sharpness.png", "flow_gap.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    assert data["quick"] is True and {v["id"] for v in data["verdicts"]} >= {"gd-no-drift", "sam-to-argmin-F1"}
    assert set(data["trajectories"]) == {"gd", "sam-full", "sam-1", "ascent-gd"}
    assert (out / "trajectories.png").read_bytes()[:4] == b"\x89PNG"
