"""The speed paths change no number: the lazy gradient of the worst-direction ascent against the
eager value_and_grad, the ascent itself against the loop it replaced, the mean of one loss taken
as a view against the reduction, and SAM's reused gradient norm against the formula."""
from __future__ import annotations

import torch
from torch import nn

from conftest import descent_direction
from samcli.config import OptimizerConfig
from samcli.objective import Batch, Objective
from samcli.sharpness import Settings
from samcli.sharpness.finite import worst_direction_ascent


def _model_and_data(batchnorm: bool):
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()]
    layers += [nn.BatchNorm2d(3)] if batchnorm else []
    module = nn.Sequential(*layers, nn.Flatten(), nn.Linear(3 * 16, 4)).double()
    if batchnorm:
        module[2].running_mean.uniform_(-0.5, 0.5)
        module[2].running_var.uniform_(0.5, 2.0)
    module.eval()
    objective, theta = Objective.from_module(module, "cross-entropy")
    data = Batch(torch.randn(10, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (10,)))
    return objective, theta, data


def test_lazy_gradient_is_value_and_grad():
    for batchnorm in (False, True):
        objective, theta, data = _model_and_data(batchnorm)
        for chunk_size in (4096, 3):          # one chunk (graph kept for later) and several (eager)
            value, g = objective.value_and_grad(theta, data, chunk_size)
            lazy_value, gradient = objective.value_and_lazy_grad(theta, data, chunk_size)
            assert torch.equal(lazy_value, value)
            assert torch.equal(gradient(), g)
            assert not torch.equal(g, torch.zeros_like(g))


class _Eager:
    """The objective without value_and_lazy_grad: the ascent then takes a full value_and_grad at every
    candidate, accepted or not, which is the loop as it was before the lazy gradient."""

    def __init__(self, objective):
        self._objective = objective

    def __getattr__(self, name):
        if name == "value_and_lazy_grad":
            raise AttributeError(name)
        return getattr(self._objective, name)


def test_worst_direction_ascent_unchanged():
    objective, theta, data = _model_and_data(batchnorm=True)
    loss = objective.loss(theta, data).item()
    v1 = torch.randn(objective.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lazy, counts = objective.value_and_lazy_grad, {"points": 0, "gradients": 0}

    def counting(*args):
        value, gradient = lazy(*args)
        counts["points"] += 1

        def counted():
            counts["gradients"] += 1
            return gradient()
        return value, counted
    objective.value_and_lazy_grad = counting
    for rho in (0.01, 0.3, 1.0):      # a small radius accepts every step, larger ones reject some
        settings = Settings(rho=rho, ascent_iters=30, ascent_restarts=3, ascent_tol=0.0)   # no early stop
        ours = worst_direction_ascent(objective, theta, data, rho, v1, loss, settings, torch.Generator().manual_seed(1))
        reference = worst_direction_ascent(_Eager(objective), theta, data, rho, v1, loss, settings,
                                           torch.Generator().manual_seed(1))
        assert ours == reference
        assert ours[0] > 0
    assert counts["gradients"] < counts["points"]       # rejected candidates skipped their backward


def test_mean_of_one_loss_is_the_loss():
    objective, theta, data = _model_and_data(batchnorm=False)
    one = Batch(data.inputs[:1], data.targets[:1])
    assert torch.equal(objective.loss(theta, one), objective.per_example_losses(theta, one)[0])

    def reference(t):           # the reduction the view replaces
        return objective.per_example_losses(t, one).mean()
    x = theta.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference(x), x)
    assert torch.equal(objective.value_and_grad(theta, one, 4096)[1], expected)


def test_sam_reuses_the_norm_bit_for_bit():
    objective, theta, data = _model_and_data(batchnorm=False)
    cfg = OptimizerConfig(method="sam", rho=0.1)
    result = descent_direction(objective, theta, data, cfg, 4096)
    g = objective.grad(theta, data, 4096)
    expected = objective.grad(theta + cfg.rho * g / (g.norm() + cfg.grad_eps), data, 4096)
    assert torch.equal(result.direction, expected)
    assert result.grad_norm == g.norm().item()
