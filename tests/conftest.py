"""Shared tiny fixtures: float64 analytic objectives, a 3-4-2 MLP, and small synthetic configs.

Ground truths used across the tests are computed WITHOUT the engine's code paths:
closed forms for the linear least-squares objective, and a plain `nn.Module` + autograd
(flat parameters loaded into a copy of the module, gradients w.r.t. its parameters) for models.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from samcli.methods import direction_for
from samcli.models import mlp
from samcli.objective import Batch, Objective
from samcli.task import Task

DT = torch.float64


def descent_direction(objective: Objective, theta, batch: Batch, cfg, chunk_size: int):
    """One step's direction as the training loop takes it: the registered direction of cfg.method."""
    return direction_for(objective, cfg)(objective, theta, batch, cfg, chunk_size)

# Tiny tensors: intra-op threads only add contention (on a busy 2-core machine a BatchNorm1d
# forward on 8x4 went from ~0.1 ms to ~100 ms with 2 threads).
torch.set_num_threads(1)


def assert_close(actual, expected, rtol=1e-12, atol=1e-14):
    """|actual - expected| <= atol + rtol |expected| elementwise, same shape and dtype.
    (torch.testing.assert_close imports torch.distributed on first use: seconds, for nothing.)"""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        diff = (actual - expected).abs().max().item()
        raise AssertionError(f"not close: max |diff| = {diff:.3e} (rtol={rtol}, atol={atol})\n"
                             f"actual={actual}\nexpected={expected}")


# ---- linear least squares: L_k(x) = 0.5 (a_k . x - y_k)^2, everything in closed form -------------

def linreg_objective(dim: int) -> Objective:
    def per_example(params, buffers, inputs, targets):
        return 0.5 * (inputs @ params["x"] - targets) ** 2
    return Objective(per_example, {"x": torch.Size([dim])}, {})


def linreg_loss(A, y, x):
    return 0.5 * ((A @ x - y) ** 2).mean()


def linreg_grad(A, y, x):
    """Closed form: A^T (A x - y) / n."""
    return A.T @ (A @ x - y) / A.shape[0]


def linreg_hessian(A):
    return A.T @ A / A.shape[0]


def sam_closed_form(A, y, x, rho, normalized=True):
    g = linreg_grad(A, y, x)
    e = rho * g / g.norm() if normalized else rho * g
    return linreg_grad(A, y, x + e)


@pytest.fixture
def linreg():
    """n = 6 examples in R^3 with fixed, non-degenerate values."""
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(6, 3, generator=gen, dtype=DT)
    y = torch.randn(6, generator=gen, dtype=DT)
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    return linreg_objective(3), Batch(A, y), x0


def linreg_task(A, y, x0, test=None) -> Task:
    test = test if test is not None else Batch(A[:0], y[:0])
    return Task(linreg_objective(A.shape[1]), x0.clone(), Batch(A, y), test, 0)


# ---- a 3-4-2 tanh MLP (smooth, so finite differences are clean) -----------------------------------

def make_mlp(seed: int = 0, activation=nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return mlp(3, [4], 2, activation).to(DT)


def mlp_batch(n: int = 8, seed: int = 2) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 3, generator=gen, dtype=DT), torch.randint(0, 2, (n,), generator=gen))


@pytest.fixture
def mlp_setup():
    module = make_mlp()
    objective, theta = Objective.from_module(module, "cross-entropy")
    return module, objective, theta, mlp_batch()


class ModuleRef:
    """Reference gradients through a private copy of a module (independent of Objective)."""

    def __init__(self, module: nn.Module, loss=F.cross_entropy):
        self.module = copy.deepcopy(module)
        self.loss_fn = loss

    def loss(self, theta, inputs, targets, train=True):
        vector_to_parameters(theta.detach().clone(), self.module.parameters())
        self.module.train(train)
        return self.loss_fn(self.module(inputs), targets)

    def grad(self, theta, inputs, targets, train=True):
        vector_to_parameters(theta.detach().clone(), self.module.parameters())
        self.module.train(train)
        self.module.zero_grad()
        self.loss_fn(self.module(inputs), targets).backward()
        return torch.cat([p.grad.reshape(-1) for p in self.module.parameters()])

    def sam(self, theta, inputs, targets, rho, normalized=True):
        g = self.grad(theta, inputs, targets)
        e = rho * g / g.norm() if normalized else rho * g
        return self.grad(theta + e, inputs, targets)

    def flat(self) -> torch.Tensor:
        return parameters_to_vector(self.module.parameters()).detach()


# ---- tiny end-to-end configs ----------------------------------------------------------------------

def tiny_config(**dotted) -> dict:
    """Synthetic 3-dim, 2-class task, 16 train / 8 test examples, a 3-4-2 MLP, float64 on CPU."""
    raw = {
        "seed": 0, "device": "cpu", "dtype": "float64", "steps": 5, "eval_every": 1, "chunk_size": 64,
        "data": {"name": "synthetic", "n_train": 16, "n_test": 8, "dim": 3, "classes": 2},
        "model": {"name": "mlp", "widths": [4], "activation": "tanh"},
        "optimizer": {"method": "sam", "lr": 0.1, "batch_size": 4, "rho": 0.05},
    }
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def matrix_with_spectrum(values, seed=0):
    """A symmetric float64 matrix Q diag(values) Q^T with a seeded random orthogonal Q; returns (matrix, Q)."""
    values = torch.as_tensor(values, dtype=DT)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(seed),
                                       dtype=DT))
    return q @ torch.diag(values) @ q.T, q
