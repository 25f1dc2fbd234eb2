"""Adaptive sharpness against ground truth in float64: T H T from the dense Hessian (torch.func.hessian),
the rho -> 0 limits at an exact minimizer, and invariance under rescaling a ReLU layer pair."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import hessian

from samcli.config import SamcliError
from samcli.models import mlp
from samcli.objective import Batch, Objective
from samcli.sharpness.adaptive import AdaptiveSharpness, adaptive_sharpness

DT = torch.float64


def tiny(activation=nn.ReLU, loss="cross-entropy", seed=0, n=12):
    """A 3-5-3 MLP (38 parameters) on random data; for mse the targets are the model's own outputs,
    so theta is an exact minimizer (L = 0, g = 0, H = J^T J / n)."""
    torch.manual_seed(seed)
    model = mlp(3, [5], 3, activation).to(DT)
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(n, 3, generator=gen, dtype=DT)
    targets = model(inputs).detach() if loss == "mse" else torch.randint(0, 3, (n,), generator=gen)
    objective, theta = Objective.from_module(model, loss)
    return objective, theta, Batch(inputs, targets)


def dense_scaled_hessian(objective, theta, data, eta_abs=0.0):
    h = hessian(lambda t: objective.loss(t, data))(theta)
    t = theta.abs() + eta_abs
    return t[:, None] * h * t[None, :], h


@pytest.mark.parametrize("eta_abs", [0.0, 0.1])
def test_limits_match_dense_t_h_t(eta_abs):
    objective, theta, data = tiny(nn.Tanh)
    d = objective.dim
    a, _ = dense_scaled_hessian(objective, theta, data, eta_abs)
    rho = 0.05
    # Lanczos run to D steps and a Hutch++ sketch of D vectors are exact up to rounding
    result = adaptive_sharpness(objective, theta, data, rho, eta_abs=eta_abs, lanczos_iters=d, lanczos_tol=1e-12,
                                trace_probes=d, finite=False)
    lam = torch.linalg.eigvalsh(a)[-1].item()
    assert result.lambda_1 == pytest.approx(lam, rel=1e-9)
    assert result.trace == pytest.approx(a.trace().item(), rel=1e-9)
    assert result.limit_worst == pytest.approx(rho ** 2 * lam / 2, rel=1e-9)
    assert result.limit_average == pytest.approx(rho ** 2 * a.trace().item() / (2 * d), rel=1e-9)
    assert result.worst is None and result.average is None and result.directions == 0


def test_trace_with_a_small_budget_is_within_its_standard_error():
    objective, theta, data = tiny(nn.Tanh)
    a, _ = dense_scaled_hessian(objective, theta, data)
    result = adaptive_sharpness(objective, theta, data, 0.05, trace_probes=4, finite=False)
    assert result.trace_method == "hutch++" and result.trace_matvecs == 12
    assert result.trace_stderr > 0
    assert abs(result.trace - a.trace().item()) <= 5 * result.trace_stderr


def test_finite_rho_approaches_the_limits_at_a_minimizer():
    objective, theta, data = tiny(nn.Tanh, loss="mse")
    a, _ = dense_scaled_hessian(objective, theta, data)
    lam = torch.linalg.eigvalsh(a)[-1].item()
    worst_errors = []
    for rho in (1e-1, 1e-2, 1e-3):
        r = adaptive_sharpness(objective, theta, data, rho, loss=0.0, lanczos_iters=objective.dim, lanczos_tol=1e-10,
                               trace_probes=objective.dim, directions=2000)
        assert r.loss == 0.0
        worst_errors.append(abs(r.worst / (rho ** 2 * lam / 2) - 1))
        # the average: u^T A u / 2 averaged over the sphere, Monte Carlo error only (its third-order term cancels)
        assert abs(r.average - r.limit_average) <= 4 * r.average_stderr + 1e-3 * r.limit_average
        assert r.average_stderr < 0.1 * r.limit_average
        assert r.worst >= r.average
    assert worst_errors[2] < worst_errors[0] and worst_errors[2] < 1e-3


def test_worst_at_least_average_and_diagnostics():
    objective, theta, data = tiny(nn.ReLU)
    r = adaptive_sharpness(objective, theta, data, 0.1, restarts=2, directions=32)
    assert isinstance(r, AdaptiveSharpness)
    assert r.worst >= r.average
    assert r.worst_restarts == 2 and r.worst_gradients >= 2 and r.directions == 32
    assert r.average_stderr > 0 and r.lambda_1_residual >= 0 and r.lanczos_iterations >= 1
    assert r.loss == pytest.approx(objective.loss(theta, data).item(), rel=1e-12)
    assert r.loss_resolution == pytest.approx(torch.finfo(DT).eps * r.loss)
    assert AdaptiveSharpness.from_dict(r.to_dict()) == r
    assert set(r.summary()) == {"ada_lambda_1", "ada_limit_max", "ada_trace", "ada_limit_avg", "ada_r_max",
                                "ada_r_avg"}
    again = adaptive_sharpness(objective, theta, data, 0.1, restarts=2, directions=32)
    assert (again.worst, again.average, again.trace) == (r.worst, r.average, r.trace)   # seeded


def _rescale_first_layer(objective: Objective, theta: torch.Tensor, a: float) -> torch.Tensor:
    """(W1, b1) -> (a W1, a b1), W2 -> W2 / a: the same function for a ReLU layer pair."""
    factors = {"1.weight": a, "1.bias": a, "3.weight": 1 / a, "3.bias": 1.0}   # 0 is the Flatten
    return torch.cat([theta_part.reshape(-1) * factors[name]
                      for name, theta_part in objective.unflatten(theta).items()])


def test_invariant_under_rescaling_a_relu_layer_pair():
    objective, theta, data = tiny(nn.ReLU)
    scaled = _rescale_first_layer(objective, theta, 4.0)
    assert objective.loss(scaled, data).item() == pytest.approx(objective.loss(theta, data).item(), rel=1e-12)
    kwargs = dict(restarts=2, directions=64, lanczos_iters=objective.dim, lanczos_tol=1e-10, trace_probes=6)
    before = adaptive_sharpness(objective, theta, data, 0.1, **kwargs)
    after = adaptive_sharpness(objective, scaled, data, 0.1, **kwargs)
    for field in ("lambda_1", "trace", "limit_worst", "limit_average", "worst", "average", "average_stderr"):
        assert getattr(after, field) == pytest.approx(getattr(before, field), rel=1e-8), field
    # the plain Hessian is not invariant: its top eigenvalue moves by a large factor
    _, h_before = dense_scaled_hessian(objective, theta, data)
    _, h_after = dense_scaled_hessian(objective, scaled, data)
    lam_before, lam_after = (torch.linalg.eigvalsh(h)[-1].item() for h in (h_before, h_after))
    assert not math.isclose(lam_before, lam_after, rel_tol=0.1)


def test_a_positive_eta_breaks_the_invariance():
    objective, theta, data = tiny(nn.ReLU)
    scaled = _rescale_first_layer(objective, theta, 4.0)
    before = adaptive_sharpness(objective, theta, data, 0.1, eta_abs=0.5, finite=False, lanczos_iters=objective.dim)
    after = adaptive_sharpness(objective, scaled, data, 0.1, eta_abs=0.5, finite=False, lanczos_iters=objective.dim)
    assert not math.isclose(before.lambda_1, after.lambda_1, rel_tol=1e-3)


@pytest.mark.parametrize("kwargs,match", [({"rho": 0.0}, "rho=0.0 must be > 0"),
                                          ({"rho": 0.1, "eta_abs": -1.0}, "eta_abs=-1.0 must be >= 0"),
                                          ({"rho": 0.1, "restarts": 0}, "restarts=0"),
                                          ({"rho": 0.1, "directions": 1}, "directions=1 >= 2")])
def test_bad_settings_are_refused_in_one_line(kwargs, match):
    objective, theta, data = tiny()
    with pytest.raises(SamcliError, match=match) as info:
        adaptive_sharpness(objective, theta, data, **kwargs)
    assert "\n" not in str(info.value)


def test_non_finite_parameters_are_refused():
    objective, theta, data = tiny()
    with pytest.raises(SamcliError, match="not finite"):
        adaptive_sharpness(objective, theta * math.inf, data, 0.1)


def test_adaptive_is_an_opt_in_notion_of_the_report():
    """notions including "adaptive": the report carries the same values as adaptive_sharpness at
    Settings.adaptive_rho, its summary the ada_ keys, and it survives to_dict/from_dict."""
    from samcli.sharpness import Settings, SharpnessReport, measure
    objective, theta, data = tiny()
    plain = measure(objective, theta, data, Settings(lanczos_iters=20, stochastic_examples=0, directions=8))
    assert plain.adaptive is None and not any(k.startswith("ada_") for k in plain.summary())
    settings = Settings(notions=("worst", "adaptive"), lanczos_iters=20, stochastic_examples=0, directions=8,
                        adaptive_rho=0.3, seed=4)
    report = measure(objective, theta, data, settings)
    direct = adaptive_sharpness(objective, theta, data, 0.3, restarts=settings.ascent_restarts,
                                ascent_iters=settings.ascent_iters, directions=8, lanczos_iters=20,
                                lanczos_tol=settings.lanczos_tol, trace_probes=settings.trace_probes, seed=4)
    assert report.adaptive.rho == 0.3
    assert report.adaptive.lambda_1 == pytest.approx(direct.lambda_1, rel=1e-9)
    assert report.adaptive.worst == pytest.approx(direct.worst, rel=1e-9)
    assert report.summary()["ada_lambda_1"] == report.adaptive.lambda_1
    assert "adaptive" in report.notion_seconds
    again = SharpnessReport.from_dict(report.to_dict())
    assert again.adaptive == report.adaptive


def test_ascent_tol_reaches_the_adaptive_ascent():
    """measure() hands Settings.ascent_tol on: with 0 every restart runs until its steps stop gaining."""
    from samcli.sharpness import Settings, measure
    objective, theta, data = tiny(nn.ReLU)
    reports = [measure(objective, theta, data, Settings(notions=("adaptive",), stochastic_examples=0, directions=8,
                                                         ascent_iters=50, ascent_tol=tol)).adaptive
               for tol in (1e-4, 0.0)]
    assert reports[0].worst_gradients < reports[1].worst_gradients
    assert reports[0].worst == pytest.approx(reports[1].worst, rel=1e-3) and reports[0].worst <= reports[1].worst
