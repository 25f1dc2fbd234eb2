"""The paper's toys as engine tasks (samcli.paper.toys) and the limiting flows (samcli.paper.flows),
against closed forms written here by hand."""
from __future__ import annotations

import math

import pytest
import torch

from samcli.curvature.dense import dense_hessian
from samcli.objective import Batch
from samcli.paper.flows import ManifoldFlow
from samcli.paper.toys import Figure1Toy, quadratic
from samcli.train import train

DT = torch.float64


def F1(a, b):
    return 2.5 + 2 * (a ** 2 + b ** 2)


def F2(a, b):
    return 0.25 + (a - 1) ** 2 + b ** 2


def test_figure1_per_example_losses_and_mean():
    toy = Figure1Toy()
    x = torch.tensor([0.3, -0.7, 0.4, -0.2], dtype=DT)
    objective = toy.objective()
    losses = objective.per_example_losses(x, toy.data())
    f1, f2 = F1(0.3, -0.7), F2(0.3, -0.7)
    torch.testing.assert_close(losses, torch.tensor([2 * f1 * 0.16, 2 * f2 * 0.04], dtype=DT))
    assert objective.loss(x, toy.data()).item() == pytest.approx(f1 * 0.16 + f2 * 0.04, rel=1e-14)
    only_second = Batch(torch.tensor([1.0], dtype=DT), torch.zeros(1, dtype=DT))
    assert objective.loss(x, only_second).item() == pytest.approx(2 * f2 * 0.04, rel=1e-14)


def test_figure1_hessian_on_gamma_is_diag_of_2F():
    toy = Figure1Toy()
    x = torch.tensor([0.2, 0.9, 0.0, 0.0], dtype=DT)
    H = dense_hessian(toy.objective(), x, toy.data())
    torch.testing.assert_close(H, torch.diag(torch.tensor([0, 0, 2 * F1(0.2, 0.9), 2 * F2(0.2, 0.9)], dtype=DT)))
    assert toy.on_gamma(0.2, 0.9) == pytest.approx(
        {"lambda_1": 2 * F1(0.2, 0.9), "lambda_m": 2 * F2(0.2, 0.9), "trace": 2 * (F1(0.2, 0.9) + F2(0.2, 0.9))})


def test_builtin_minimizers_apart_and_order_holds():
    toy = Figure1Toy()
    m = toy.minimizers((0.5, 1.0))
    assert m["argmin F1"] == pytest.approx((0.0, 0.0), abs=1e-9)
    assert m["argmin F2"] == pytest.approx((1.0, 0.0), abs=1e-9)
    assert m["argmin F1+F2"] == pytest.approx((1 / 3, 0.0), abs=1e-9)
    grid = torch.linspace(-10, 10, 201, dtype=DT)
    X, Y = torch.meshgrid(grid, grid, indexing="xy")
    assert toy.check_order(X, Y) is None
    assert Figure1Toy(F2, F1).check_order(X, Y) is not None


def test_one_engine_sam_step_on_the_toy_is_the_hand_update():
    """train() on the toy Task with full-batch SAM = x - lr grad L(x + rho g/||g||), closed-form gradients."""
    toy = Figure1Toy()
    x0 = [0.5, 1.0, 0.3, -0.2]

    def grad(x):
        a, b, c, d = x.tolist()
        return torch.tensor([4 * a * c ** 2 + 2 * (a - 1) * d ** 2, 4 * b * c ** 2 + 2 * b * d ** 2,
                             2 * F1(a, b) * c, 2 * F2(a, b) * d], dtype=DT)
    lr, rho = 0.05, 0.1
    cfg = {"steps": 3, "eval_every": 1, "chunk_size": 2, "optimizer": {"method": "sam", "lr": lr, "rho": rho,
                                                                     "batch_size": "full", "momentum": 0.0}}
    result = train(cfg, task=toy.task(x0), write=False)
    x = torch.tensor(x0, dtype=DT)
    for _ in range(3):
        g = grad(x)
        x = x - lr * grad(x + rho * g / g.norm())
    torch.testing.assert_close(result.theta, x, rtol=1e-12, atol=1e-14)


def test_user_supplied_F_drift_of_full_batch_sam_goes_to_argmin_F1():
    """From Python: any smooth F1 > F2 > 0; full-batch SAM (the engine's) drifts to argmin F1."""
    def G1(a, b):
        return 3.0 + (a - 0.5) ** 2 + 2 * (b + 0.25) ** 2

    def G2(a, b):
        return 1.0 + 0.5 * torch.tanh(a ** 2 + b ** 2)
    toy = Figure1Toy(G1, G2, "user")
    assert toy.argmin("F1", (0.0, 0.0)) == pytest.approx((0.5, -0.25), abs=1e-8)
    cfg = {"steps": 400, "eval_every": 400, "chunk_size": 2,
           "optimizer": {"method": "sam", "lr": 0.04, "rho": 0.4, "batch_size": "full", "momentum": 0.0}}
    end = train(cfg, task=toy.task([-0.3, 0.6, 0.2, 0.2]), write=False).theta
    assert math.dist(end[:2].tolist(), (0.5, -0.25)) < 0.05


@pytest.mark.parametrize("regularizer, expected", [
    ("lambda_1", lambda a, b: [-4 * a, -4 * b]),                    # -1/2 grad (2 F1) = -grad F1
    ("trace", lambda a, b: [-4 * a - 2 * (a - 1), -6 * b]),           # -grad (F1 + F2)
    ("lambda_m", lambda a, b: [-2 * (a - 1), -2 * b]),                # -grad F2
])
def test_flow_velocity_is_minus_half_projected_gradient(regularizer, expected):
    toy = Figure1Toy()
    flow = ManifoldFlow(toy.objective(), toy.data(), regularizer, project=toy.project)
    v = flow.velocity(torch.tensor([0.4, -0.6, 0.0, 0.0], dtype=DT))
    torch.testing.assert_close(v, torch.tensor(expected(0.4, -0.6) + [0.0, 0.0], dtype=DT), rtol=1e-10, atol=1e-12)


def test_flow_integration_matches_closed_form():
    """dX/dtau = -grad F1 = -4 X: X(tau) = X0 exp(-4 tau)."""
    toy = Figure1Toy()
    flow = ManifoldFlow(toy.objective(), toy.data(), "lambda_1", project=toy.project)
    x0 = torch.tensor([0.5, 1.0, 0.0, 0.0], dtype=DT)
    path = flow.integrate(x0, [0.1, 0.5], dt=0.02)
    for tau, point in zip(path.taus, path.points):
        torch.testing.assert_close(point, x0 * math.exp(-4 * tau), rtol=1e-6, atol=1e-9)


def test_quadratic_examples_average_to_A():
    quad = quadratic([1.0, 0.5, 0.25], seed=3)
    data = quad.data()
    A = data.inputs.T @ data.inputs / len(data)
    torch.testing.assert_close(A, quad.A, rtol=1e-12, atol=1e-12)
    x = torch.tensor([0.1, -0.2, 0.3], dtype=DT)
    assert quad.objective().loss(x, data).item() == pytest.approx(0.5 * (x @ quad.A @ x).item(), rel=1e-12)
    assert quad.predicted_radius(0.5, 0.1, 1.0) == pytest.approx(0.05 / 1.5)
    with pytest.raises(Exception, match="unique largest"):
        quadratic([1.0, 1.0])
