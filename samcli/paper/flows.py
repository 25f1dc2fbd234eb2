"""The paper's limiting flows on the manifold of minimizers, integrated numerically.

Phase II of full-batch SAM (Thm 4.5) and of 1-SAM (Thm 5.4): the projection Phi(x_t) follows

    dX/dtau = -(1/2) P_T(X) grad S(X),     tau = eta rho^2 t,

with S = lambda_1(H) for full-batch SAM and S = Tr(H) for 1-SAM. (lambda_M, the ascent-direction loss's
limit regularizer, can be integrated too, but the paper gives no flow for GD on that loss: its Thm 4.2 /
E.4 concern the loss's minimizers.) P_T(X) projects onto the tangent
space of Gamma at X, which for a manifold of minimizers is the null space of H(X).

Everything comes from the task's own `Objective`: H(X) is the dense Hessian of the same mean
loss that training descends (torch.func.hessian), and grad S is its derivative by autograd
(third derivatives of L), so a user's toy needs no hand-written flow. Dense, so for small D only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..config import SamcliError
from ..objective import Batch, Objective

MAX_FLOW_PARAMETERS = 200
REGULARIZERS = ("lambda_1", "trace", "lambda_m")
FLOW_OF_METHOD = {"sam-full": "lambda_1", "sam-1": "trace"}


def _regularizer_value(H: Tensor, name: str, zero_tol: float) -> Tensor:
    if name == "trace":
        return torch.diagonal(H).sum()
    values = torch.linalg.eigvalsh(H)
    if name == "lambda_1":
        return values[-1]
    if name == "lambda_m":      # smallest eigenvalue above zero_tol * lambda_1 (index chosen on detached values)
        detached = values.detach()
        above = torch.nonzero(detached > zero_tol * detached[-1].clamp_min(0)).flatten()
        if len(above) == 0:
            raise SamcliError("lambda_M is undefined: the Hessian has no eigenvalue above zero_tol * lambda_1")
        return values[int(above[0])]
    raise SamcliError(f"unknown regularizer {name!r}; choose from {', '.join(REGULARIZERS)}")


class ManifoldFlow:
    """dX/dtau = -(1/2) P_T grad S on Gamma, for the mean loss of `objective` over `data`."""

    def __init__(self, objective: Objective, data: Batch, regularizer: str, zero_tol: float = 1e-6,
                 project: Optional[Callable[[Tensor], Tensor]] = None):
        if regularizer not in REGULARIZERS:
            raise SamcliError(f"unknown regularizer {regularizer!r}; choose from {', '.join(REGULARIZERS)}")
        if objective.dim > MAX_FLOW_PARAMETERS:
            raise SamcliError(f"the limiting flow uses dense Hessians and third derivatives; {objective.dim} "
                              f"parameters exceed its limit of {MAX_FLOW_PARAMETERS}")
        self.data = data.to(dtype=torch.float64)
        self.objective, self.regularizer, self.zero_tol = objective, regularizer, zero_tol
        self.project = project

    def _hessian_graph(self, x: Tensor) -> Tensor:
        """H(x) row by row by double backward, keeping the graph (so S(H) can be differentiated)."""
        (g,) = torch.autograd.grad(self.objective.loss(x, self.data), x, create_graph=True)
        rows = [torch.autograd.grad(g[i], x, create_graph=True, allow_unused=True)[0] for i in range(len(x))]
        return torch.stack([r if r is not None else torch.zeros_like(x) for r in rows])

    def hessian(self, x: Tensor) -> Tensor:
        """The dense float64 Hessian H(x) of the objective over its data."""
        with torch.enable_grad():
            leaf = x.detach().to(torch.float64).requires_grad_(True)
            return self._hessian_graph(leaf).detach()

    def value(self, x: Tensor) -> float:
        """The regularizer S(H(x)) (lambda_1, lambda_M or Tr) at x."""
        return float(_regularizer_value(self.hessian(x), self.regularizer, self.zero_tol))

    def tangent_basis(self, x: Tensor) -> Tensor:
        """An orthonormal basis (columns) of the null space of H(x): Gamma's tangent space at x."""
        values, vectors = torch.linalg.eigh(self.hessian(x))
        null = values.abs() <= self.zero_tol * values.abs().max().clamp_min(1e-300)
        return vectors[:, null]

    def velocity(self, x: Tensor) -> Tensor:
        """-(1/2) P_T grad S. For a simple eigenvalue, grad lambda_i = grad_x (v_i^T H(x) v_i) with v_i
        held fixed (Hellmann-Feynman); grad Tr = grad_x sum_j H_jj(x)."""
        with torch.enable_grad():
            leaf = x.detach().to(torch.float64).requires_grad_(True)
            H = self._hessian_graph(leaf)
            values, vectors = torch.linalg.eigh(H.detach())
            scale = values.abs().max().clamp_min(1e-300)
            basis = vectors[:, values.abs() <= self.zero_tol * scale]
            if self.regularizer == "trace":
                s = torch.diagonal(H).sum()
            else:
                if self.regularizer == "lambda_1":
                    index = len(values) - 1
                else:
                    above = torch.nonzero(values > self.zero_tol * values[-1].clamp_min(0)).flatten()
                    if len(above) == 0:
                        raise SamcliError("lambda_M is undefined: no Hessian eigenvalue above zero_tol * lambda_1")
                    index = int(above[0])
                v = vectors[:, index]
                s = v @ H @ v
            if not s.requires_grad:          # H does not depend on x: S is constant
                return torch.zeros_like(leaf.detach())
            (g,) = torch.autograd.grad(s, leaf, allow_unused=True)
        if g is None:
            return torch.zeros_like(leaf.detach())
        return -0.5 * basis @ (basis.T @ g)

    def _rk4(self, x: Tensor, dt: float) -> Tensor:
        k1 = self.velocity(x)
        k2 = self.velocity(x + 0.5 * dt * k1)
        k3 = self.velocity(x + 0.5 * dt * k2)
        k4 = self.velocity(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return self.project(x) if self.project is not None else x

    def integrate(self, x0: Tensor, taus: Sequence[float], dt: float = 0.01) -> FlowPath:
        """X(tau) at each requested tau (ascending, >= 0) by RK4 with steps of at most dt."""
        taus = sorted(float(t) for t in taus)
        if taus and taus[0] < 0:
            raise SamcliError("flow times tau must be >= 0")
        x = x0.detach().to(torch.float64)
        x = self.project(x) if self.project is not None else x
        now, points = 0.0, []
        for target in taus:
            while target - now > 1e-15:
                h = min(dt, target - now)
                x = self._rk4(x, h)
                now += h
            points.append(x.clone())
        return FlowPath(self.regularizer, tuple(taus), torch.stack(points) if points else torch.empty(0))


@dataclass(frozen=True)
class FlowPath:
    """A limiting flow's points at the requested tau, for one regularizer."""
    regularizer: str
    taus: tuple[float, ...]
    points: Tensor           # (len(taus), D), float64


def tau_of(steps, eta: float, rho: float):
    """The paper's slow time tau = eta rho^2 t."""
    return eta * rho ** 2 * steps


__all__ = ["ManifoldFlow", "FlowPath", "FLOW_OF_METHOD", "REGULARIZERS", "tau_of"]
