"""`samcli reproduce quadratic --quick` and `timescale --quick`: Thm 4.8's radius to 1e-6 relative (it
converges to machine precision), and the 1/(eta rho^2) time scale."""
from __future__ import annotations

import pytest

from samcli.paper import reproduce_study as reproduce


def test_quadratic_radius_and_direction(tmp_path):
    result = reproduce("quadratic", tmp_path / "quadratic", quick=True)
    claims = [v for v in result.verdicts if v.kind == "claim"]
    assert len(claims) == 6 and result.ok
    assert all(v.theorem == "Thm 4.8" and v.in_regime is True for v in result.verdicts)
    controls = [v for v in result.verdicts if v.kind == "control"]
    # negative controls: both criteria on GD (which converges to 0 along the slowest eigenvector) must reject
    assert sorted(v.id for v in controls) == sorted(f"control:{c.id}-on-gd" for c in claims)
    for v in controls:
        assert v.passed is False, (v.id, v.measured)
        assert v.measured.get("relative error", 1.0) > 0.99 and v.measured.get("1 - |cos|", 1.0) > 0.99
    for v in claims:
        if v.id.startswith("radius"):
            assert v.measured["relative error"] <= 1e-6
            assert float(v.measured["measured"]) == pytest.approx(float(v.measured["predicted"]), rel=1e-6)
        else:
            assert v.measured["1 - |cos|"] <= 1e-6
    assert (tmp_path / "quadratic" / "convergence.png").is_file()
    assert (tmp_path / "quadratic" / "radius.csv").is_file()


def test_timescale_quadruples(tmp_path):
    result = reproduce("timescale", tmp_path / "timescale", quick=True)
    assert result.ok, [v.measured for v in result.verdicts]
    for v in result.verdicts:
        assert v.in_regime is True
        (ratio,) = [x for k, x in v.measured.items() if k.startswith("steps(")]
        assert 3.6 <= ratio <= 4.4
    assert (tmp_path / "timescale" / "drift.png").is_file()
