"""Verdicts carry their theorem, its condition, the settings and whether they satisfy it; outside the
regime a verdict is reported, not judged. regimes.py reads each condition as numbers."""
from __future__ import annotations

import math

from samcli.paper import regimes
from samcli.paper.verdicts import OUTSIDE, Verdict


def test_full_batch_sam_regime_reading():
    assert regimes.full_batch_sam(0.05, 0.015, 9.0).in_regime is True          # rho/eta 0.3, eta l1 0.45
    assert regimes.full_batch_sam(0.05, 0.05, 9.0).in_regime is False          # rho/eta 1
    assert regimes.full_batch_sam(0.008, 0.1, 9.0).in_regime is False         # rho/eta 12.5 (the old network run)
    assert regimes.full_batch_sam(0.12, 0.03, 9.0).in_regime is False          # eta lambda_1 1.08: unstable
    assert regimes.full_batch_sam(0.2, 0.003, 1.0).in_regime is False          # eta ln(1/rho) 1.16
    r = regimes.full_batch_sam(0.05, 0.015, 9.0)
    assert math.isclose(r.settings["eta ln(1/rho)"], 0.05 * math.log(1 / 0.015))


def test_one_sam_regime_reading():
    assert regimes.one_sam(0.008, 0.0375, 62.3).in_regime is True               # the network's 1-SAM
    assert regimes.one_sam(0.04, 0.3, 20.0).in_regime is False                  # (eta+rho) ln(1/(eta rho)) 1.5
    assert regimes.one_sam(0.04, 0.1, 30.0).in_regime is False                  # eta max_k lambda 1.2
    assert regimes.quadratic(0.45, 0.2, [2.0, 1.5]).in_regime is True
    assert regimes.quadratic(0.6, 0.2, [2.0, 1.5]).in_regime is False
    assert regimes.quadratic(0.1, 0.2, [2.0, 2.0]).in_regime is False          # no unique top eigenvalue


def test_outside_the_regime_is_reported_not_judged():
    out = regimes.full_batch_sam(0.008, 0.1, 9.0).verdict("x", "a claim", "a criterion", {"m": 1.0}, False)
    assert out.passed is None and out.status == "open" and out.in_regime is False
    assert OUTSIDE in out.condition_text() and OUTSIDE in out.markdown_row()
    inside = regimes.full_batch_sam(0.05, 0.015, 9.0).verdict("y", "a claim", "a criterion", {"m": 1.0}, False,
                                                             steps=10)
    assert inside.passed is False and inside.status == "FAIL" and inside.settings["steps"] == 10
    data = inside.to_dict()
    assert data["theorem"] == "Thm 4.5" and data["in_regime"] is True and data["regime"] == "in the theorem's regime"
    assert math.isclose(data["settings"]["rho/eta"], 0.3)
    brief = inside.to_dict(brief=True)
    assert set(brief) == {"id", "status", "kind", "label", "claim", "theorem", "in_regime", "measured"}


def test_open_reason_is_never_fail():
    r = regimes.full_batch_sam(0.05, 0.015, 9.0)
    v = r.verdict("x", "a claim", "a criterion", {"m": 1.0}, False, reason="not in Phase II")
    assert v.passed is None and v.status == "open" and v.label == "open: not in Phase II" and not v.failed
    assert "**open: not in Phase II**" in v.markdown_row()
    outside = regimes.full_batch_sam(0.008, 0.1, 9.0).verdict("y", "c", "k", {}, True)
    assert outside.label == f"open: {OUTSIDE}"


def test_a_control_that_passes_fails_its_study():
    from samcli.paper.skeleton import StudyResult
    from samcli.paper.verdicts import count, count_text
    r = regimes.full_batch_sam(0.05, 0.015, 9.0)
    rejected = r.control("a", "criterion on wrong dynamics", "k", {}, False)
    accepted = r.control("b", "criterion on wrong dynamics", "k", {}, True)
    outside = regimes.full_batch_sam(0.008, 0.1, 9.0).control("c", "x", "k", {}, True)   # the regime cannot excuse it
    assert rejected.id == "control:a" and rejected.kind == "control" and not rejected.failed
    assert rejected.label == "control FAIL (rejected, as it must)"
    assert accepted.failed and accepted.label.startswith("control PASS") and outside.passed is True and outside.failed
    claim = r.verdict("d", "claim", "k", {}, True)
    assert StudyResult("s", None, [claim, rejected], 0.0, True).ok
    assert not StudyResult("s", None, [claim, accepted], 0.0, True).ok
    c = count([claim, rejected, accepted])
    assert (c["PASS"], c["FAIL"], c["control FAIL"], c["control PASS"]) == (1, 0, 1, 1)
    assert count_text([claim, rejected]) == "1 pass, 0 fail, 0 open; controls: 1 rejected, 0 accepted (broken), 0 open"


def test_observation_has_no_regime():
    v = regimes.observation(eta=0.1).verdict("z", "not a claim", "reported", {"m": 2.0}, None)
    assert isinstance(v, Verdict) and v.in_regime is None and v.status == "open" and v.regime_text == ""
    assert "no claim of the paper" in v.theorem
