"""`samcli reproduce corollaries --quick`: Cor 4.6 on the quadratic and the toy, Cor 5.6 on the toy, Phase I's
length and Thm 5.3 on a small network, each inside its theorem's regime; and the two new estimators against
ground truth (the quadratic's R^Max against brute force, the Gauss-Newton projection onto Gamma)."""
from __future__ import annotations

import math

import pytest
import torch

from samcli.paper import reproduce_study as reproduce
from samcli.paper.drift import Regression
from samcli.paper.studies.corollaries import gauss_newton_to_gamma, quadratic_worst
from samcli.paper.toys import quadratic

DT = torch.float64


def test_quadratic_worst_is_the_trust_region_maximum():
    quad = quadratic([3.0, 1.0], seed=0)
    x, rho = torch.tensor([0.3, -0.2], dtype=DT), 0.25
    angles = torch.linspace(0, 2 * math.pi, 200001, dtype=DT)
    v = rho * torch.stack([angles.cos(), angles.sin()], dim=1)
    brute = float((0.5 * ((x + v) @ quad.A * (x + v)).sum(1) - 0.5 * x @ quad.A @ x).max())
    assert quadratic_worst(quad, x, rho) == pytest.approx(brute, rel=1e-9)
    r = 0.1                                        # on v_1: (r + rho)^2 lambda_1/2 - r^2 lambda_1/2 exactly
    assert quadratic_worst(quad, r * quad.v1, rho) == pytest.approx(3.0 * ((r + rho) ** 2 - r ** 2) / 2, rel=1e-12)
    assert quadratic_worst(quad, torch.zeros(2, dtype=DT), rho) == pytest.approx(rho ** 2 * 3.0 / 2)


def test_gauss_newton_lands_on_gamma():
    """f(x) = (x0 x1 + sin x2, x0 + x2^2): two outputs, three parameters; Gamma = {f = y}."""
    model = Regression(lambda x: torch.stack([x[0] * x[1] + torch.sin(x[2]), x[0] + x[2] ** 2]).reshape(2, 1),
                       torch.tensor([[0.7], [1.2]], dtype=DT))
    start = torch.tensor([1.0, 0.5, 0.3], dtype=DT)
    x = gauss_newton_to_gamma(model, start, 8)
    assert float((model.outputs(x) - model.targets).abs().max()) < 1e-13
    assert float((x - start).norm()) < 0.5


@pytest.fixture(scope="module")
def corollaries(tmp_path_factory):
    return reproduce("corollaries", tmp_path_factory.mktemp("paper") / "corollaries", quick=True)


def test_corollary_bands_hold_in_regime(corollaries):
    ids = [v.id for v in corollaries.verdicts]
    assert ids == ["cor46-quadratic", "cor46-toy", "cor56-toy-worst", "cor56-toy-ascent", "phase1-length",
                   "sam-flow-gap-rate", "thm53-stochastic-worst", "thm53-stochastic-ascent", "thm53-stochastic-average",
                   "control:thm53-stochastic-worst-on-full-batch-worst",
                   "control:thm53-stochastic-average-on-full-batch-worst"]
    for v in corollaries.verdicts[:6]:
        assert v.in_regime is True and v.passed, (v.id, v.measured)
    for v in corollaries.verdicts[:4]:               # and the deviation is a vanishing fraction of the limit
        relative = v.measured["deviation / limit"]
        assert all(b < a for a, b in zip(relative, relative[1:]))


def test_thm53_stochastic_notions_tend_to_the_trace(corollaries):
    for v in corollaries.verdicts[6:8]:
        assert v.passed, v.measured
        assert v.measured["ratio by rho"][-1] == pytest.approx(1.0, abs=0.01)
    rows = corollaries.tables["thm53"]
    assert rows[0]["max residual"] < 1e-10           # measured at a point of Gamma
    # the negative control: the full-batch worst notion tends to rho^2 lambda_1 / 2, far from rho^2 Tr / 2
    control = corollaries.verdict("control:thm53-stochastic-worst-on-full-batch-worst")
    assert control.kind == "control" and control.passed is False and control.measured["ratio by rho"][-1] < 0.5
    average = corollaries.verdict("control:thm53-stochastic-average-on-full-batch-worst")
    assert average.passed is False and average.measured["ratio by rho"][-1] > 10       # D lambda_1 / Tr
    assert corollaries.ok
    assert (corollaries.out_dir / "bands.png").is_file()
