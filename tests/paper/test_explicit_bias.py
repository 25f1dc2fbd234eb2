"""The sharpness-aware losses of the figure-1 toy (samcli.paper.explicit_bias) against closed forms,
brute force and finite differences; and their L-BFGS minimizers against Thm 4.2 / Table 1."""
from __future__ import annotations

import math

import pytest
import torch

from samcli.config import SamcliError
from samcli.paper import explicit_bias as eb
from samcli.paper.toys import Figure1Toy

DT = torch.float64
BUILTIN = Figure1Toy()


def user_F1(a, b):                       # not polynomial: L^Avg's design is no longer exact, argmins shift
    return 3 + torch.exp(a) - a + b ** 2 + a * b


def user_F2(a, b):
    return 0.5 + (a - 1) ** 2 + torch.exp(b) - b


USER = Figure1Toy(user_F1, user_F2, "user")


def x_of(*values):
    return torch.tensor(values, dtype=DT)


def by_hand_loss(x):
    x1, x2, x3, x4 = x
    return (2.5 + 2 * (x1 ** 2 + x2 ** 2)) * x3 ** 2 + (0.25 + (x1 - 1) ** 2 + x2 ** 2) * x4 ** 2


# ---- the loss and the directions --------------------------------------------------------------------

def test_toy_loss_is_the_objectives_loss():
    objective, data = BUILTIN.objective(), BUILTIN.data()
    for seed in range(3):
        x = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=DT)
        assert float(eb.toy_loss(BUILTIN, x)) == pytest.approx(float(objective.loss(x, data)), rel=1e-14)
        assert float(eb.toy_loss(BUILTIN, x)) == pytest.approx(float(by_hand_loss(x)), rel=1e-14)


def test_six_hundred_cell_is_a_spherical_11_design():
    u = eb.SPHERE_DESIGN
    assert u.shape == (120, 4)
    assert torch.allclose(u.norm(dim=1), torch.ones(120, dtype=DT), atol=1e-15)
    assert float((torch.cdist(u, u) + 9 * torch.eye(120, dtype=DT)).min()) > 0.6   # distinct points
    for seed in range(3):
        a = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=DT)
        a = a / a.norm()
        for k in range(1, 12):      # E (a.u)^k on S^3: 0 for odd k, (k-1)!! / (4 6 ... (k+2)) for even k
            exact = 0.0 if k % 2 else math.prod(range(1, k, 2)) / math.prod(range(4, k + 3, 2))
            assert float(((u @ a) ** k).mean()) == pytest.approx(exact, abs=1e-14)


# ---- the three losses, one point at a time ----------------------------------------------------------

@pytest.mark.parametrize("x", [(0.5, 1.0, 0.3, 0.3), (0.2, -0.4, 0.01, -0.05), (1.0, 0.0, 0.0, 0.0)])
@pytest.mark.parametrize("rho", [0.3, 0.05])
def test_average_loss_matches_the_closed_sphere_average(x, rho):
    # F = c + k |y - m|^2: E[F(y + rho u12)(x3 + rho u3)^2] = (c + k|y-m|^2)(x3^2 + rho^2/4)
    #   + k rho^2 x3^2 / 2 + k rho^4 / 12   (E u_i^2 = 1/4, E |u12|^2 = 1/2, E |u12|^2 u3^2 = 1/12)
    x1, x2, x3, x4 = x
    f1, f2 = 2.5 + 2 * (x1 ** 2 + x2 ** 2), 0.25 + (x1 - 1) ** 2 + x2 ** 2
    expected = (f1 * (x3 ** 2 + rho ** 2 / 4) + 2 * rho ** 2 * x3 ** 2 / 2 + 2 * rho ** 4 / 12
                + f2 * (x4 ** 2 + rho ** 2 / 4) + rho ** 2 * x4 ** 2 / 2 + rho ** 4 / 12)
    assert float(eb.average_loss(BUILTIN, x_of(*x), rho)) == pytest.approx(expected, rel=1e-13)


def test_average_loss_of_a_non_polynomial_toy_against_monte_carlo():
    x, rho = x_of(0.3, 0.2, 0.1, -0.2), 0.3
    z = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    u = torch.cat([z, -z]) / torch.cat([z, -z]).norm(dim=1, keepdim=True)
    samples = eb.toy_loss(USER, x + rho * u)
    stderr = float(samples.std()) / math.sqrt(len(samples))
    assert abs(float(eb.average_loss(USER, x, rho)) - float(samples.mean())) < 5 * stderr


@pytest.mark.parametrize("x", [(0.5, 1.0, 0.3, 0.3), (0.2, -0.4, 0.05, -0.02), (0.5, 1.0, 0.0, 0.2)])
def test_max_loss_is_the_maximum_over_the_sphere(x):
    x, rho = x_of(*x), 0.1
    value, _ = eb.max_loss(BUILTIN, x, rho)
    z = torch.randn(50_000, 4, generator=torch.Generator().manual_seed(2), dtype=DT)
    sampled = eb.toy_loss(BUILTIN, x + rho * z / z.norm(dim=1, keepdim=True))
    assert float(sampled.max()) <= float(value) + 1e-14
    # an independent local maximization (L-BFGS over w, v = rho w/||w||) from the best sample
    w = z[int(sampled.argmax())].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-18,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        negative = -eb.toy_loss(BUILTIN, x + rho * w / w.norm())
        negative.backward()
        return negative
    opt.step(closure)
    polished = float(eb.toy_loss(BUILTIN, x + rho * w.detach() / w.detach().norm()))
    assert polished == pytest.approx(float(value), rel=1e-12)
    assert float(eb.worst_perturbation(BUILTIN, x, rho).norm()) == pytest.approx(rho, rel=1e-14)
    assert float(value) >= float(eb.average_loss(BUILTIN, x, rho))   # worst >= average


def test_max_loss_at_argmin_F1_is_rho2_F1():
    # at y = 0 on Gamma: max (2.5 + 2|w|^2)(rho^2 - |w|^2) is at w = 0 for rho^2 < 1.25, and F2 < F1
    for rho in (0.3, 0.05):
        value, _ = eb.max_loss(BUILTIN, x_of(0, 0, 0, 0), rho)
        assert float(value) == pytest.approx(2.5 * rho ** 2, rel=1e-13)


def _central_difference(fn, x, h=1e-6):
    return torch.stack([(fn(x + h * e) - fn(x - h * e)) / (2 * h) for e in torch.eye(4, dtype=DT)])


@pytest.mark.parametrize("toy", [BUILTIN, USER], ids=["builtin", "user"])
def test_max_loss_gradient_is_danskins(toy):
    x, rho = x_of(0.3, 0.7, 0.05, 0.02), 0.1      # off the kink at x3 = 0
    _, grad = eb.max_loss(toy, x, rho)
    numeric = _central_difference(lambda p: eb.max_loss(toy, p, rho)[0], x)
    assert torch.allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_ascent_loss_and_its_gradient_against_papers_formula():
    x, rho = x_of(0.4, 0.9, 0.05, -0.03), 0.1
    x1, x2, x3, x4 = x
    f1, f2 = 2.5 + 2 * (x1 ** 2 + x2 ** 2), 0.25 + (x1 - 1) ** 2 + x2 ** 2
    g = torch.stack([4 * x1 * x3 ** 2 + 2 * (x1 - 1) * x4 ** 2, 4 * x2 * x3 ** 2 + 2 * x2 * x4 ** 2,
                     2 * f1 * x3, 2 * f2 * x4])
    n = g / g.norm()
    leaf = x.clone().requires_grad_(True)
    value = eb.ascent_loss(BUILTIN, leaf, rho)
    assert float(value.detach()) == pytest.approx(float(by_hand_loss(x + rho * n)), rel=1e-14)
    # docs/methods.md (ascent-gd): grad = g' + (rho/||g||) H (I - n n^T) g',  g' = grad L at x + rho n
    H = torch.func.hessian(by_hand_loss)(x)
    g_prime = torch.func.grad(by_hand_loss)(x + rho * n)
    expected = g_prime + (rho / g.norm()) * H @ (g_prime - n * (n @ g_prime))
    _, grad = eb.loss_and_grad(BUILTIN, "asc", x, rho)
    assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-14)


def test_ascent_loss_is_infinite_on_gamma():
    value, grad = eb.loss_and_grad(BUILTIN, "asc", x_of(0.5, 1.0, 0.0, 0.0), 0.1)
    assert math.isinf(float(value)) and torch.isnan(grad).all()


def test_each_loss_over_rho2_tends_to_its_limit_on_gamma():
    y, rho = (0.5, 1.0), 1e-3
    f1, f2 = (float(v) for v in BUILTIN.values(*y))
    on_gamma = x_of(*y, 0, 0)
    assert float(eb.max_loss(BUILTIN, on_gamma, rho)[0]) / rho ** 2 == pytest.approx(f1, rel=1e-4)
    assert float(eb.average_loss(BUILTIN, on_gamma, rho)) / rho ** 2 == pytest.approx((f1 + f2) / 4, rel=1e-4)
    # L^Asc near Gamma depends on the side it is approached from: along x4 it sees lambda_M/2 = F2
    # (its infimum), along x3 lambda_1/2 = F1
    delta = 1e-6 * rho
    assert float(eb.ascent_loss(BUILTIN, x_of(*y, 0, delta), rho)) / rho ** 2 == pytest.approx(f2, rel=1e-4)
    assert float(eb.ascent_loss(BUILTIN, x_of(*y, delta, 0), rho)) / rho ** 2 == pytest.approx(f1, rel=1e-4)


# ---- the minimizers (Thm 4.2, Table 1, Thm E.4) -------------------------------------------------

@pytest.mark.parametrize("notion, rho", [("max", 0.05), ("asc", 0.3), ("avg", 0.05)])
def test_minimizers_of_the_builtin_toy_reach_their_predicted_points(notion, rho):
    result = eb.minimize(BUILTIN, notion, rho)
    expected = {"max": (0.0, 0.0), "asc": (1.0, 0.0), "avg": (1 / 3, 0.0)}[notion]
    assert math.dist(expected, result.target) < 1e-6
    assert result.converged
    assert result.distance < 1e-5, result
    assert result.off_gamma < 1e-6
    infimum = {"max": 2.5, "asc": 0.25, "avg": (2.5 + 2 / 9 + 0.25 + 4 / 9) / 4}[notion]
    assert result.predicted_infimum == pytest.approx(infimum, rel=1e-10)
    # L^Avg's gap is exactly rho^2 (k1 + k2)/12 = rho^2/4 at the minimizer (closed form above)
    # (L^Asc creeps toward its infimum on Gamma: its gap stops at the optimizer's resolution, ~1e-8)
    tolerance = {"max": 1e-12, "asc": 1e-7, "avg": 1e-10}[notion]
    assert result.gap == pytest.approx(rho ** 2 / 4 if notion == "avg" else 0.0, abs=tolerance)


def test_average_minimizer_of_a_non_polynomial_toy_approaches_argmin_F1_plus_F2_like_rho2():
    distances = [eb.minimize(USER, "avg", rho).distance for rho in (0.2, 0.1, 0.05)]
    assert distances[2] < 2e-4
    for far, near in zip(distances, distances[1:]):
        assert 3 < far / near < 5                # O(rho^2): halving rho divides it by about 4


def test_ascent_minimizer_of_a_non_polynomial_toy_reaches_argmin_F2():
    result = eb.minimize(USER, "asc", 0.05)
    assert result.distance < 1e-4 and abs(result.gap) < 1e-6, result


def test_explicit_bias_runs_every_pair_and_bad_input_raises():
    results = eb.explicit_bias(BUILTIN, rhos=(0.3,), notions=("avg",))
    assert [(r.notion, r.rho) for r in results] == [("avg", 0.3)]
    assert results[0].to_dict()["target_name"] == "argmin F1+F2"
    with pytest.raises(SamcliError, match="notion"):
        eb.explicit_bias(BUILTIN, notions=("worst",))
    with pytest.raises(SamcliError, match="rho"):
        eb.loss_and_grad(BUILTIN, "avg", x_of(0, 0, 0, 0), 0.0)
    with pytest.raises(SamcliError, match="Gamma"):
        eb.minimize(BUILTIN, "asc", 0.1, start=(0.5, 1.0, 0.0, 0.0))
    with pytest.raises(SamcliError, match="4 numbers"):
        eb.minimize(BUILTIN, "avg", 0.1, start=(0.5, 1.0))
