"""`samcli reproduce bias --quick`: the minimizers of L^Max, L^Asc and L^Avg (Thm 4.2 / Table 1) end at
argmin F1, argmin F2 and argmin (F1 + F2) of the built-in toy, with L_rho / rho^2 at the limit's infimum
(L^Avg's gap is exactly rho^2/4 on the built-in toy: its rho^4 term)."""
from __future__ import annotations

import json

import pytest

from samcli.paper import reproduce_study as reproduce
from samcli.paper.toys import Figure1Toy


def test_bias_quick(tmp_path):
    result = reproduce("bias", tmp_path / "bias", quick=True)
    assert [v.id for v in result.verdicts] == ["bias-max", "bias-asc", "bias-avg", "control:bias-max-on-avg",
                                               "control:bias-asc-on-max", "control:bias-avg-on-asc"]
    assert result.ok and all(v.passed for v in result.verdicts if v.kind == "claim")
    # each criterion on another loss's minimizers (its negative control) rejects them, by their distance
    for v in result.verdicts[3:]:
        assert v.kind == "control" and v.passed is False and min(v.measured[k][-1] for k in v.measured
                                                                 if k.endswith("by rho")) > 0.3, v.measured
    rows = result.tables["minimizers_of_L_rho"]
    targets = {"max": (0.0, 0.0), "asc": (1.0, 0.0), "avg": (1 / 3, 0.0)}
    for row in rows:
        assert (row["x1"], row["x2"]) == pytest.approx(targets[row["notion"]], abs=1e-5)
        assert row["off Gamma"] < 1e-6 and row["converged"]
        if row["notion"] == "avg":
            assert row["gap"] == pytest.approx(row["rho"] ** 2 / 4, rel=1e-4)
        else:
            assert abs(row["gap"]) < 1e-8
    v = result.verdict("bias-asc")
    assert v.theorem.endswith("Thm E.4") and v.in_regime is None
    data = json.loads((tmp_path / "bias" / "results.json").read_text())
    assert data["verdicts"][0]["settings"]["rhos"] == [0.3, 0.1]
    assert (tmp_path / "bias" / "bias.png").read_bytes()[:4] == b"\x89PNG"


def test_bias_with_a_users_toy(tmp_path):
    """F1 = 5 + ||x - (-1, 0)||^2, F2 = 1 + ||x - (0, 1)||^2 (F1 - F2 = 4 + 2 x1 + 2 x2 > 0 near the path): the targets move."""
    toy = Figure1Toy(lambda a, b: 5 + (a + 1) ** 2 + b ** 2, lambda a, b: 1 + a ** 2 + (b - 1) ** 2, "mine")
    result = reproduce("bias", tmp_path / "bias", quick=True, overrides=["rhos=[0.1]"], toy=toy)
    assert result.ok, [v.measured for v in result.verdicts]
    ends = {r["notion"]: (r["x1"], r["x2"]) for r in result.tables["minimizers_of_L_rho"]}
    assert ends["max"] == pytest.approx((-1.0, 0.0), abs=1e-5)
    assert ends["asc"] == pytest.approx((0.0, 1.0), abs=1e-5)
    assert ends["avg"] == pytest.approx((-0.5, 0.5), abs=1e-5)
