"""`samcli reproduce network --quick` and `batchsize --quick`. At the quick settings the theorems' regimes
hold for both methods, and what they guarantee is asserted: each method's drift along Gamma follows its own
flow (cosine near 1 with -P grad lambda_1 for SAM, -P grad Tr for 1-SAM, and clearly lower with the other
flow), the ratio test, and GD standing still; verdicts outside a regime are reported, not judged."""
from __future__ import annotations

import json
import math

import pytest

from samcli.paper import reproduce_study as reproduce


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    return reproduce("network", tmp_path_factory.mktemp("paper") / "network", quick=True)


def test_network_verdicts_and_regimes(network):
    ids = [v.id for v in network.verdicts]
    assert ids[:4] == ["setup-interpolation", "drift-direction-sam-full", "drift-direction-sam-1", "ratio-test"]
    assert "sam-alignment-rate" in ids and "sam-alignment-angle-O(rho)" not in ids
    assert [i for i in ids if i.startswith("sam-alignment-rho")] == [
        "sam-alignment-rho/eta=0.1", "sam-alignment-rho/eta=0.3", "sam-alignment-rho/eta=1", "sam-alignment-rho/eta=12.5"]
    claims = [i for i in ids if not i.startswith("control:")]
    assert claims[-4:] == ["gd-changes-neither", "which-lowers-lambda1-more", "which-lowers-trace-more", "test-accuracy"]
    for v in network.verdicts:
        if v.id.startswith("sam-alignment-rho"):
            inside = v.settings["rho/eta"] <= 0.3 + 1e-12
            assert v.in_regime is inside
            if not inside:
                assert v.passed is None and "outside the theorem's regime" in v.condition_text()
    for vid in ("which-lowers-lambda1-more", "which-lowers-trace-more", "test-accuracy"):
        assert network.verdict(vid).passed is None


def test_network_drift_follows_each_methods_flow(network):
    for vid, other in (("drift-direction-sam-full", "cos_trace"), ("drift-direction-sam-1", "cos_lambda_1")):
        v = network.verdict(vid)
        assert v.in_regime is True and v.passed, v.measured
        assert all(c >= 0.95 for c in v.measured["cosines"][1:])
        own, cross = v.measured["cosines"][1:], v.measured[f"cosines with the other flow ({other})"][1:]
        assert all(c - x >= 0.1 for c, x in zip(own, cross))       # the two flows are told apart


def test_network_ratio_test_and_gd(network):
    v = network.verdict("ratio-test")
    assert v.in_regime is True and v.passed, v.measured
    assert v.measured["predicted at the start: a/c (SAM)"] >= v.measured["c/b (1-SAM)"]     # c^2 <= ab
    assert network.verdict("setup-interpolation").passed
    assert network.verdict("gd-changes-neither").passed, network.verdict("gd-changes-neither").measured


def test_network_alignment_rate_is_open_not_fail_before_phase_two(network):
    """At the quick settings the slowest normal mode relaxes in ~2k steps, as long as the runs: the angles
    still change, so the rate test must say "open: not in Phase II" (never FAIL), and say why."""
    v = network.verdict("sam-alignment-rate")
    assert v.passed is None and v.label.startswith("open: not in Phase II"), v.label
    m = v.measured
    taus = [0.05 * r * r * s for s, r in zip(m["steps"], m["rho"])]      # equal tau (to the even step)
    assert m["rho"] == [0.015, 0.0106, 0.0075] and max(taus) / min(taus) - 1 < 2e-3 and abs(taus[0] - 0.006) < 1e-4
    assert all(c >= 0.1 for c in m["change over last half"]) and m["not settled"] == m["rho"]
    assert m["lambda_M on Gamma"] > 0 and m["relaxation steps 1/(eta lambda_M)"] > 0.5 * m["steps"][-1]
    assert network.ok          # the open rate test no longer fails the study


def test_network_negative_controls_reject(network):
    """Each judged criterion on dynamics it must reject: every control FAILs, at the quick settings."""
    controls = {v.id: v for v in network.verdicts if v.kind == "control"}
    assert set(controls) == {"control:drift-direction-sam-full-on-sam-1", "control:drift-direction-sam-1-on-sam-full",
                             "control:gd-changes-neither-on-sam-full", "control:sam-alignment-on-gd",
                             "control:sam-alignment-rate-on-gd"}
    for v in controls.values():
        assert v.passed is False and v.status == "FAIL" and not v.failed, (v.id, v.measured)
        assert v.label.startswith("control FAIL")
    rate = controls["control:sam-alignment-rate-on-gd"].measured
    assert abs(rate["slope"]) < 0.1 and rate["not settled"] == []     # judged (settled), and rejected


def test_network_files(network):
    data = json.loads((network.out_dir / "results.json").read_text())
    assert [row["status"] for row in data["tables"]["summary"]] == ["completed"] * 3
    v = data["verdicts"][1]
    assert {"theorem", "condition", "settings", "in_regime", "regime"} <= set(v) and v["theorem"] == "Thm 4.5"
    for name in ("sharpness.png", "alignment_ladder.png", "drift_directions.csv", "verdicts.md"):
        assert (network.out_dir / name).is_file(), name
    assert "outside the theorem's regime" in (network.out_dir / "verdicts.md").read_text()


def test_batchsize_quick(tmp_path):
    result = reproduce("batchsize", tmp_path / "batchsize", quick=True)
    assert result.verdict("setup-interpolation").passed
    assert all(v.passed is None for v in result.verdicts[1:])     # the open case: reported, not judged
    rows = result.tables["by_batch_size"]
    assert [r["batch_size"] for r in rows] == [1, 4, "full"]
    assert all(r["status"] == "completed" and math.isfinite(r["trace"]) for r in rows)
    # b = 1: the one-example Hessian is rank one, so its gradient is its top eigenvector
    assert rows[0]["batch_alignment"] > 0.999
    assert (tmp_path / "batchsize" / "by_batch_size.png").is_file()
