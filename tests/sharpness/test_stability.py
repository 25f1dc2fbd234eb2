"""The stability thresholds (samcli/sharpness/stability.py) against the methods' own steps on
quadratics, computed here in numpy: the top direction's multiplier crosses -1 (or the heavy-ball
companion matrix's spectral radius crosses 1) exactly at the threshold."""
from __future__ import annotations

import numpy as np
import pytest

from samcli.sharpness.stability import stability_threshold, threshold_source


def gd_multiplier(lam, lr):
    return 1 - lr * lam


def heavy_ball_radius(lam, lr, mu):
    # x_{t+1} = x_t - lr v_{t+1}, v_{t+1} = mu v_t + lam x_t  (torch's SGD): a 2x2 linear map on (x, v)
    step = np.array([[1 - lr * lam, -lr * mu], [lam, mu]])
    return max(abs(np.linalg.eigvals(step)))


def usam_multiplier(lam, lr, rho):
    x = 1.0
    return (x - lr * lam * (x + rho * lam * x)) / x


def sam_multiplier(lam, lr, rho, mu=0.3, w=50.0, u=1e-7):
    """One normalized SAM step on 0.5 (lam u^2 + mu w^2), u tiny: the gradient norm is mu w's."""
    x = np.array([u, w])
    h = np.array([lam, mu])
    g = h * x
    e = rho * g / np.linalg.norm(g)
    x_new = x - lr * h * (x + e)
    return x_new[0] / x[0], np.linalg.norm(g)


@pytest.mark.parametrize("lr", [0.01, 0.1, 0.5])
def test_gd_threshold_is_where_the_multiplier_is_minus_one(lr):
    t = stability_threshold("sgd", lr)
    assert gd_multiplier(t, lr) == pytest.approx(-1, abs=1e-12)
    assert abs(gd_multiplier(1.05 * t, lr)) > 1 > abs(gd_multiplier(0.95 * t, lr))


@pytest.mark.parametrize("mu", [0.5, 0.9])
def test_heavy_ball_threshold_is_where_the_spectral_radius_reaches_one(mu):
    lr = 0.1
    t = stability_threshold("sgd", lr, momentum=mu)
    assert heavy_ball_radius(1.01 * t, lr, mu) > 1 > heavy_ball_radius(0.99 * t, lr, mu)


@pytest.mark.parametrize("rho", [0.01, 0.1])
def test_usam_threshold_is_where_the_multiplier_is_minus_one(rho):
    lr = 0.1
    t = stability_threshold("usam", lr, rho)
    assert usam_multiplier(t, lr, rho) == pytest.approx(-1, abs=1e-12)
    assert t < stability_threshold("sgd", lr)          # USAM's threshold sits below GD's


@pytest.mark.parametrize("rho", [0.01, 0.05])
def test_sam_threshold_is_where_its_step_along_the_top_direction_is_minus_one(rho):
    lr = 0.1
    _, g_norm = sam_multiplier(1.0, lr, rho)
    t = stability_threshold("sam", lr, rho, grad_norm=g_norm)
    at, _ = sam_multiplier(t, lr, rho)
    assert at == pytest.approx(-1, abs=1e-6)
    assert abs(sam_multiplier(1.05 * t, lr, rho)[0]) > 1 > abs(sam_multiplier(0.95 * t, lr, rho)[0])
    assert t < stability_threshold("sgd", lr)


def test_no_threshold_where_none_is_stated():
    assert stability_threshold("sam", 0.1, 0.05, momentum=0.9, grad_norm=1.0) is None
    assert stability_threshold("sam", 0.1, 0.05) is None                     # no gradient norm
    assert stability_threshold("asam", 0.1, 0.5, grad_norm=1.0) is None
    assert stability_threshold("sgd", 0.1, nesterov=True, momentum=0.9) is None
    assert stability_threshold("sam", 0.1, 0.0) == pytest.approx(20)         # rho = 0: GD's
    assert "Long & Bartlett" in threshold_source("sam") and "no threshold" in threshold_source("gsam")
