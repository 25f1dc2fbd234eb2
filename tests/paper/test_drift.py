"""The drift-direction pieces (samcli.paper.drift) against dense references on a tiny tanh net
(module autograd, dense Hessians, finite differences) and closed forms on the figure-1 toy."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from samcli.config import SamcliError
from samcli.curvature.dense import dense_hessian
from samcli.models import mlp
from samcli.objective import Batch, Objective
from samcli.paper import drift
from samcli.paper.toys import Figure1Toy

DT = torch.float64


# ---- a tiny regression net at an interpolating point -------------------------------------------------

@pytest.fixture(scope="module")
def net():
    """3-5-1 tanh MLP (D = 26), 4 examples, and an interpolating point found by L-BFGS."""
    torch.manual_seed(0)
    module = mlp(3, [5], 1, nn.Tanh).to(DT)
    gen = torch.Generator().manual_seed(3)
    data = Batch(torch.randn(4, 3, generator=gen, dtype=DT), torch.rand(4, generator=gen, dtype=DT) * 2 - 1)
    objective, theta = Objective.from_module(module, "mse")
    x = theta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=500, tolerance_grad=1e-20, tolerance_change=1e-30,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective.loss(x, data)
        value.backward()
        return value
    opt.step(closure)
    interpolating = x.detach()
    assert float(objective.loss(interpolating, data)) < 1e-25
    off_gamma = theta + 0.1 * torch.randn(len(theta), generator=gen, dtype=DT)
    return module, objective, data, interpolating, off_gamma


def reference_jacobian(module, theta, data):
    """Row k = grad f_k by backward through a private copy of the module (no Objective, no torch.func)."""
    copy_ = copy.deepcopy(module)
    rows = []
    for k in range(len(data)):
        vector_to_parameters(theta.clone(), copy_.parameters())
        copy_.zero_grad()
        copy_(data.inputs[k:k + 1]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in copy_.parameters()]))
    return torch.stack(rows)


def dense_projector(J):
    return torch.eye(J.shape[1], dtype=DT) - J.T @ torch.linalg.solve(J @ J.T, J)


def finite_difference(fn, x, h=1e-5):
    return torch.stack([(fn(x + h * e) - fn(x - h * e)) / (2 * h) for e in torch.eye(len(x), dtype=DT)])


def test_regression_loss_is_the_objectives_loss(net):
    _, objective, data, x, off = net
    model = drift.Regression.from_objective(objective, data)
    for point in (x, off):
        assert float(model.loss(point)) == pytest.approx(float(objective.loss(point, data)), rel=1e-13)


def test_jacobian_and_projector_against_dense(net):
    module, objective, data, x, _ = net
    model = drift.Regression.from_objective(objective, data)
    J = drift.output_jacobian(model, x)
    reference = reference_jacobian(module, x, data)
    assert torch.allclose(J, reference, rtol=1e-12, atol=1e-14)
    P = dense_projector(reference)
    project = drift.tangent_projector(model, x)
    vectors = torch.randn(5, objective.dim, generator=torch.Generator().manual_seed(4), dtype=DT)
    for v in vectors:
        assert torch.allclose(project(v), P @ v, atol=1e-12)
    assert torch.allclose(J @ project(vectors[0]), torch.zeros(len(data), dtype=DT), atol=1e-12)


@pytest.mark.parametrize("where", ["interpolating", "off_gamma"])
def test_grad_lambda_1_is_the_derivative_of_the_top_eigenvalue(net, where):
    _, objective, data, x, off = net
    point = x if where == "interpolating" else off
    model = drift.Regression.from_objective(objective, data)
    pair = drift.top_eigenpair(model, point)
    dense = dense_hessian(objective, point, data)
    assert pair.converged
    assert pair.value == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-10)
    numeric = finite_difference(lambda t: torch.linalg.eigvalsh(dense_hessian(objective, t, data))[-1], point)
    assert torch.allclose(drift.grad_lambda_1(model, point, pair.vector), numeric, rtol=1e-6, atol=1e-8)


def test_grad_trace_is_grad_of_the_gauss_newton_trace_everywhere(net):
    module, objective, data, _, off = net
    model = drift.Regression.from_objective(objective, data)
    numeric = finite_difference(lambda t: reference_jacobian(module, t, data).pow(2).sum() / len(data), off)
    assert torch.allclose(drift.grad_trace(model, off), numeric, rtol=1e-6, atol=1e-8)


def test_projected_grad_trace_equals_projected_grad_of_the_hessian_trace_on_gamma(net):
    _, objective, data, x, _ = net
    model = drift.Regression.from_objective(objective, data)
    numeric = finite_difference(lambda t: torch.diagonal(dense_hessian(objective, t, data)).sum(), x)
    P = dense_projector(drift.output_jacobian(model, x))
    ours = drift.grad_trace(model, x)
    assert torch.allclose(P @ ours, P @ numeric, rtol=1e-6, atol=1e-8)
    # the unprojected vectors differ by (1/n) sum_k Tr(grad^2 f_k) grad f_k, a normal vector
    assert float((ours - numeric).norm()) > 1e-3 * float(numeric.norm())


def test_drift_direction_on_the_net_against_dense_references(net):
    _, objective, data, x, _ = net
    model = drift.Regression.from_objective(objective, data)
    dense = dense_hessian(objective, x, data)
    values, vectors = torch.linalg.eigh(dense)
    P = dense_projector(drift.output_jacobian(model, x))
    g_lambda = P @ finite_difference(lambda t: torch.linalg.eigvalsh(dense_hessian(objective, t, data))[-1], x)
    g_trace = P @ finite_difference(lambda t: torch.diagonal(dense_hessian(objective, t, data)).sum(), x)
    normal = vectors[:, -1]                             # v1 is a normal direction on Gamma
    x_t = x - 1e-3 * g_lambda + 1e-2 * normal           # a lambda_1 flow step plus an oscillation across Gamma
    result = drift.drift_direction(model, x, x_t)
    assert result.cos_lambda_1 == pytest.approx(1.0, abs=1e-9)
    expected_cos = float(g_lambda @ g_trace) / float(g_lambda.norm() * g_trace.norm())
    assert result.cos_trace == pytest.approx(expected_cos, abs=1e-6)
    assert result.a == pytest.approx(float(g_lambda @ g_lambda), rel=1e-6)
    assert result.b == pytest.approx(float(g_trace @ g_trace), rel=1e-6)
    assert result.c == pytest.approx(float(g_lambda @ g_trace), rel=1e-6, abs=1e-8)
    assert result.normal_drift == pytest.approx(1e-2, rel=1e-9)
    assert result.lambda_1 == pytest.approx(float(values[-1]), rel=1e-10)


# ---- the figure-1 toy, where Gamma = {x3 = x4 = 0} and P = diag(1, 1, 0, 0) ---------------------------

def test_figure1_regression_is_the_toy():
    toy = Figure1Toy()
    model = drift.figure1_regression(toy)
    objective, data = toy.objective(), toy.data()
    for seed in range(3):
        x = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=DT)
        assert float(model.loss(x)) == pytest.approx(float(objective.loss(x, data)), rel=1e-13)


def test_toy_projector_and_gradients_in_closed_form():
    toy = Figure1Toy()                 # F1 = 2.5 + 2|y|^2, F2 = 0.25 + |y - e1|^2
    model = drift.figure1_regression(toy)
    x = torch.tensor([0.5, 1.0, 0.0, 0.0], dtype=DT)
    project = drift.tangent_projector(model, x)
    assert torch.allclose(torch.stack([project(e) for e in torch.eye(4, dtype=DT)]),
                          torch.diag(torch.tensor([1.0, 1, 0, 0], dtype=DT)), atol=1e-15)
    pair = drift.top_eigenpair(model, x)
    assert pair.value == pytest.approx(10.0, rel=1e-12)             # lambda_1 = 2 F1(0.5, 1) = 10
    p_lambda = project(drift.grad_lambda_1(model, x, pair.vector))
    p_trace = project(drift.grad_trace(model, x))
    # grad lambda_1 = 2 grad F1 = 8 y; grad Tr = 2 grad (F1 + F2) = 8 y + 4 (y - e1)
    assert torch.allclose(p_lambda, torch.tensor([4.0, 8, 0, 0], dtype=DT), atol=1e-10)
    assert torch.allclose(p_trace, torch.tensor([2.0, 12, 0, 0], dtype=DT), atol=1e-10)


def test_toy_drift_along_the_lambda_1_flow():
    model = drift.figure1_regression(Figure1Toy())
    x_s = torch.tensor([0.5, 1.0, 0.0, 0.0], dtype=DT)
    x_t = x_s - 1e-3 * torch.tensor([4.0, 8, 0, 0], dtype=DT) + torch.tensor([0, 0, 0.01, -0.02], dtype=DT)
    result = drift.drift_direction(model, x_s, x_t)
    assert result.cos_lambda_1 == pytest.approx(1.0, abs=1e-12)
    assert (result.a, result.b, result.c) == pytest.approx((80.0, 148.0, 104.0), rel=1e-10)
    assert result.cos_trace == pytest.approx(104 / math.sqrt(80 * 148), rel=1e-10)
    assert result.sam_rates == pytest.approx((-40.0, -52.0)) and result.one_sam_rates == pytest.approx((-52.0, -74.0))
    # c > a here: the lambda_1 flow lowers Tr faster than lambda_1, yet a/c >= c/b (c^2 <= ab)
    assert result.c > result.a and result.a / result.c >= result.c / result.b
    assert result.normal_drift == pytest.approx(math.sqrt(5e-4), rel=1e-12)


def test_user_toy_projected_grad_lambda_1_is_parallel_to_grad_F1():
    def F1(a, b):
        return 3 + torch.exp(a) - a + b ** 2 + a * b

    def F2(a, b):
        return 0.5 + (a - 1) ** 2 + torch.exp(b) - b
    toy = Figure1Toy(F1, F2, "user")
    model = drift.figure1_regression(toy)
    x = torch.tensor([0.3, -0.4, 0.0, 0.0], dtype=DT)
    pair = drift.top_eigenpair(model, x)
    p_lambda = drift.tangent_projector(model, x)(drift.grad_lambda_1(model, x, pair.vector))
    y = x[:2].clone().requires_grad_(True)
    (grad_F1,) = torch.autograd.grad(F1(y[0], y[1]), y)
    assert torch.allclose(p_lambda[:2], 2 * grad_F1, atol=1e-10) and float(p_lambda[2:].abs().max()) < 1e-12


# ---- bad input ---------------------------------------------------------------------------------------------

def test_bad_input_raises(net):
    module, objective, data, x, _ = net
    doubled = Batch(torch.cat([data.inputs, data.inputs[:1]]), torch.cat([data.targets, data.targets[:1]]))
    with pytest.raises(SamcliError, match="rank deficient"):
        drift.tangent_projector(drift.Regression.from_objective(objective, doubled), x)
    with pytest.raises(SamcliError, match="parameters"):
        drift.TangentProjector.from_jacobian(torch.randn(5, 4, dtype=DT))
    with pytest.raises(SamcliError, match="mse"):
        drift.Regression.from_objective(Objective.from_module(module, "cross-entropy")[0], data)
    with pytest.raises(SamcliError, match="real-valued"):
        drift.Regression.from_objective(objective, Batch(data.inputs, torch.zeros(4, dtype=torch.long)))
    assert math.isnan(drift.cosine(torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)))
