"""Which trace path `measure` takes on convolutional and residual nets, what its report says, and that
the number is right: against the dense float64 Hessian of tiny instances."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from samcli.curvature.dense import dense_hessian
from samcli.models import _BasicBlock, cnn
from samcli.objective import Batch, Objective
from samcli.sharpness import Settings, measure

DT = torch.float64
AVERAGE_ONLY = dict(notions=("average",), finite=False, stochastic_examples=0)


def measured(model, shape, loss="cross-entropy", n=8, **settings):
    torch.manual_seed(0)
    model = model.to(DT)
    gen = torch.Generator().manual_seed(1)
    data = Batch(torch.randn(n, *shape, generator=gen, dtype=DT), torch.randint(0, 3, (n,), generator=gen))
    objective, theta = Objective.from_module(model, loss)
    report = measure(objective, theta, data, Settings(**{**AVERAGE_ONLY, **settings}))
    return report.average, torch.trace(dense_hessian(objective, theta, data)).item()


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_relu_cnn_trace_is_exact_and_says_so(loss):
    average, dense = measured(cnn(1, [2, 3], 3, "batch"), (1, 6, 6), loss)
    assert average.trace_method == ("exact Tr(G), per-layer factorization (Conv2d x2 by materialized, BatchNorm2d x2, "
                                    "Linear x1); piecewise-linear so Tr(H) = Tr(G)")
    assert average.trace_stderr == 0.0 and average.trace_matvecs == 0
    assert average.trace == pytest.approx(dense, rel=1e-10)


def test_residual_net_trace_is_exact():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
                          _BasicBlock(3, 4, 2, "batch"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    average, dense = measured(model, (1, 5, 5))
    assert average.trace_method.startswith("exact Tr(G), per-layer factorization (Conv2d x")
    assert average.trace == pytest.approx(dense, rel=1e-10)


def test_smooth_cnn_keeps_the_control_variate_and_names_the_activation():
    average, dense = measured(cnn(1, [2], 3, "none", nn.Tanh), (1, 4, 4), trace_probes=32)
    assert average.trace_method.startswith("ggn+block-hutchinson: Tr(G) exact (per-layer factorization (Conv2d")
    assert average.trace_method.endswith("since Tanh '2' is not piecewise-linear")
    assert average.trace_stderr > 0
    assert abs(average.trace - dense) <= 5 * average.trace_stderr


def test_layer_outside_the_rules_is_measured_by_the_fallback_and_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 3))
    average, dense = measured(model, (1, 4, 4), trace_probes=32)
    assert "vmapped per-example gradients for LayerNorm '3'" in average.trace_method
    assert average.trace_method.endswith("since LayerNorm '3' is not piecewise-linear")
    assert abs(average.trace - dense) <= 5 * average.trace_stderr + 1e-12


def test_batch_statistics_fall_back_to_hutchpp_and_say_why():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.ReLU(),
                          nn.Linear(5, 3))
    average, _ = measured(model, (4,))
    assert average.trace_method == ("hutch++: a BatchNorm uses batch statistics, which couple the examples: "
                                     "no per-example Tr(G)")
