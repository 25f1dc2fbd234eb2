"""Factorized m-SAM (samcli.msam) against the vmapped per-group reference and plain module autograd.

The factorized direction must equal the vmapped one to float64 precision on MLPs and CNNs (Conv1d,
Conv2d, pooling), with both per-layer factor choices (patch Grams and materialized group kernels)
forced in turn; a model with a layer outside Linear/Conv must take the vmapped path and still match.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import DT, ModuleRef, assert_close, descent_direction
from samcli import msam
from samcli.config import ConfigError
from samcli.models import cnn, mlp
from samcli.msam import msam_direction, msam_path, vmapped_msam_direction
from samcli.objective import Batch, Objective

RHO, EPS = 0.3, 1e-12
CLOSE = dict(rtol=1e-10, atol=1e-10)


def setup(module: nn.Module, input_shape, n=8, classes=3, seed=0):
    torch.manual_seed(seed)
    module = module.to(DT)
    for p in module.parameters():      # away from init so that every layer's gradient matters
        p.data.add_(0.2 * torch.randn_like(p))
    objective, theta = Objective.from_module(module, "cross-entropy")
    gen = torch.Generator().manual_seed(seed + 1)
    batch = Batch(torch.randn(n, *input_shape, generator=gen, dtype=DT), torch.randint(0, classes, (n,), generator=gen))
    return module, objective, theta, batch


def conv1d_net():
    return nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, stride=2), nn.Tanh(), nn.MaxPool1d(2),
                         nn.Conv1d(3, 4, 2, dilation=2, bias=False), nn.ReLU(), nn.AvgPool1d(2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(4, 3))


MODELS = {
    "mlp-relu": (lambda: mlp(5, [7, 6], 3, nn.ReLU), (5,)),
    "mlp-tanh": (lambda: mlp(5, [7, 6], 3, nn.Tanh), (5,)),
    "cnn2d": (lambda: cnn(2, [3, 4], 3, "none"), (2, 6, 5)),          # Conv2d, MaxPool2d, AdaptiveAvgPool2d
    "cnn1d": (conv1d_net, (2, 16)),
    # a Linear layer over 3 positions per example: several patches, as a 1x1 convolution
    "linear-over-positions": (lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Flatten(), nn.Linear(15, 3)),
                              (3, 4)),
}


def assert_same(fast, reference):
    direction, loss, grad_norm = fast
    assert_close(direction, reference[0], **CLOSE)
    assert loss == pytest.approx(reference[1], rel=1e-12)
    assert grad_norm == pytest.approx(reference[2], rel=1e-10)


FORCED = {"grams": lambda rows, features, channels: False,
          "kernels": lambda rows, features, channels: True,
          # both within one model: a scale error in one choice no longer cancels in g_j / ||g_j||
          "mixed": lambda rows, features, channels: features % 2 == 0}


@pytest.fixture(params=["auto", *FORCED])
def factor_choice(request, monkeypatch):
    """Each layer picks Grams or group kernels by cost; force each choice in turn."""
    if request.param != "auto":
        monkeypatch.setattr(msam, "use_kernel", FORCED[request.param])
    return request.param


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("m", [1, 2, 4])
def test_factorized_equals_vmapped(name, m, factor_choice):
    build, shape = MODELS[name]
    _, objective, theta, batch = setup(build(), shape)
    assert msam_path(objective) == "factorized"
    fast = msam_direction(objective, theta, batch, RHO, m, EPS, chunk_size=64)
    assert_same(fast, vmapped_msam_direction(objective, theta, batch, RHO, m, EPS, chunk_size=64))


@pytest.mark.parametrize("name", ["mlp-tanh", "cnn2d"])
@pytest.mark.parametrize("m,chunk_size", [(1, 3), (2, 3), (2, 5)])
def test_chunks_hold_whole_groups(name, m, chunk_size):
    """Chunked (ragged) accumulation equals one chunk, and both equal per-group SAM by module autograd."""
    build, shape = MODELS[name]
    module, objective, theta, batch = setup(build(), shape)
    chunked = msam_direction(objective, theta, batch, RHO, m, EPS, chunk_size)
    whole = msam_direction(objective, theta, batch, RHO, m, EPS, chunk_size=len(batch))
    assert_same(chunked, whole)
    ref = ModuleRef(module)
    groups = [batch.take(slice(j, j + m)) for j in range(0, len(batch), m)]
    expected = sum(ref.sam(theta, g.inputs, g.targets, RHO) for g in groups) / len(groups)
    assert_close(chunked[0], expected, **CLOSE)
    assert chunked[2] == pytest.approx(ref.grad(theta, batch.inputs, batch.targets).norm().item(), rel=1e-10)
    # m < b differs from SAM on the whole batch: the groups' ascent steps really are separate
    assert (chunked[0] - ref.sam(theta, batch.inputs, batch.targets, RHO)).norm() > 1e-6


def test_m_equal_to_the_batch_is_sam():
    build, shape = MODELS["cnn2d"]
    module, objective, theta, batch = setup(build(), shape)
    direction, _, _ = msam_direction(objective, theta, batch, RHO, len(batch), EPS, chunk_size=64)
    assert_close(direction, ModuleRef(module).sam(theta, batch.inputs, batch.targets, RHO), **CLOSE)


class Scaled(nn.Module):
    """A Linear layer followed by a learned per-output scale: a parameter outside Linear/Conv."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.linear(x) * self.scale


def batch_statistics():
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, affine=False, track_running_stats=False), nn.Tanh(),
                         nn.Linear(4, 3))


@pytest.mark.parametrize("build,layer,shape", [(Scaled, "Scaled", (5,)),
                                               (lambda: cnn(2, [8], 3, "group"), "GroupNorm", (2, 6, 5)),
                                               (batch_statistics, "BatchNorm1d", (5,))])
def test_unsupported_layer_falls_back_and_matches(build, layer, shape):
    module, objective, theta, batch = setup(build(), shape)
    path = msam_path(objective)
    assert path.startswith("vmapped") and layer in path
    result = msam_direction(objective, theta, batch, RHO, 2, EPS, chunk_size=64)
    ref = ModuleRef(module)
    groups = [batch.take(slice(j, j + 2)) for j in range(0, len(batch), 2)]
    expected = sum(ref.sam(theta, g.inputs, g.targets, RHO) for g in groups) / len(groups)
    assert_close(result[0], expected, **CLOSE)


def test_a_layer_called_twice_falls_back():
    shared = nn.Linear(4, 4)
    module = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 3))
    _, objective, theta, batch = setup(module, (4,))
    assert msam_path(objective) == "factorized"     # only visible while running: caught there
    fast = msam_direction(objective, theta, batch, RHO, 2, EPS, chunk_size=64)
    assert_same(fast, vmapped_msam_direction(objective, theta, batch, RHO, 2, EPS, chunk_size=64))


def test_bad_input_is_refused():
    _, objective, theta, batch = setup(MODELS["mlp-relu"][0](), (5,))
    with pytest.raises(ConfigError, match="optimizer.m=3"):
        msam_direction(objective, theta, batch, RHO, 3, EPS, chunk_size=64)
    _, bn_objective, bn_theta, bn_batch = setup(cnn(2, [4], 3, "batch"), (2, 6, 5))
    with pytest.raises(ConfigError, match="BatchNorm"):
        msam_direction(bn_objective, bn_theta, bn_batch, RHO, 2, EPS, chunk_size=64)


@pytest.mark.parametrize("m", [1, 4])
def test_equals_the_methods_msam_entry(m):
    """The methods' msam direction (vmapped before this module, factorized once wired to it)."""
    from samcli.config import OptimizerConfig
    build, shape = MODELS["cnn2d"]
    _, objective, theta, batch = setup(build(), shape)
    cfg = OptimizerConfig(method="msam", m=m, rho=RHO, grad_eps=EPS, batch_size=len(batch))
    result = descent_direction(objective, theta, batch, cfg, chunk_size=64)
    assert_same(msam_direction(objective, theta, batch, RHO, m, EPS, 64),
                (result.direction, result.loss, result.grad_norm))
