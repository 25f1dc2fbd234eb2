"""The paper's analytic toys as tasks of the engine (docs/theorems.md, "figure1").

Each toy is an `Objective` with per-example losses plus its data, wrapped in a `Task`, so
`samcli.train.train` runs the real update rules on it exactly as it runs them on a network:

- Figure 1: L(x) = F1(x1, x2) x3^2 + F2(x1, x2) x4^2 with F1 > F2 > 0. Its two "examples" are
  L_0 = 2 F1 x3^2 and L_1 = 2 F2 x4^2 (so L = (L_0 + L_1)/2). The data set is the example ids
  [0, 1]; a batch holding id k makes the objective return L_k. On Gamma = {x3 = x4 = 0} the
  Hessian is diag(0, 0, 2 F1, 2 F2): lambda_1 = 2 F1, lambda_M = 2 F2, Tr = 2 (F1 + F2).
- Quadratic (Thm 4.8): L(x) = 0.5 x^T A x written as D rank-one examples
  L_k(x) = 0.5 (a_k . x)^2 with a_k = sqrt(D lambda_k) q_k, so mean_k a_k a_k^T = A.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..config import SamcliError
from ..objective import Batch, Objective
from ..task import Task

PlaneFn = Callable[[Tensor, Tensor], Tensor]   # F(x1, x2), elementwise over tensors (torch ops only)

DT = torch.float64


# ---- Figure 1 ---------------------------------------------------------------------------------------

def builtin_F1(x1: Tensor, x2: Tensor) -> Tensor:
    """2.5 + 2 ||x - (0, 0)||^2: argmin (0, 0)."""
    return 2.5 + 2.0 * (x1 ** 2 + x2 ** 2)


def builtin_F2(x1: Tensor, x2: Tensor) -> Tensor:
    """0.25 + ||x - (1, 0)||^2: argmin (1, 0).

    F1 - F2 = (x1 + 1)^2 + x2^2 + 0.25 > 0 everywhere, so F1 > F2 > 0 on the whole plane, and
    argmin (F1 + F2) = (2 a + b)/3 = (1/3, 0): the three minimizers are 1/3 and 2/3 apart on a line.
    """
    return 0.25 + (x1 - 1.0) ** 2 + x2 ** 2


@dataclass(frozen=True)
class Figure1Toy:
    """The figure-1 toy L = F1 x3^2 + F2 x4^2 for plane functions F1 > F2 > 0."""
    F1: PlaneFn = builtin_F1
    F2: PlaneFn = builtin_F2
    name: str = "builtin"

    # -- the task ------------------------------------------------------------------------------------
    def objective(self) -> Objective:
        """The toy as an Objective with two examples, L_0 = 2 F1 x3^2 and L_1 = 2 F2 x4^2."""
        F1, F2 = self.F1, self.F2

        def per_example(params, buffers, inputs, targets):
            x = params["x"]
            first = 2 * F1(x[0], x[1]) * x[2] ** 2
            second = 2 * F2(x[0], x[1]) * x[3] ** 2
            ids = inputs.reshape(-1)
            return torch.where(ids < 0.5, first, second)     # one loss per example id in the batch

        return Objective(per_example, {"x": torch.Size([4])}, {})

    @staticmethod
    def data(dtype=DT) -> Batch:
        """The toy's data set: the example ids 0 and 1 (targets unused)."""
        return Batch(torch.tensor([0.0, 1.0], dtype=dtype), torch.zeros(2, dtype=dtype))

    def task(self, start: Sequence[float], dtype=DT) -> Task:
        """The toy as a Task started at the 4-vector `start`."""
        theta = torch.as_tensor(list(start), dtype=dtype)
        if theta.shape != (4,):
            raise SamcliError(f"the figure-1 start must be 4 numbers (x1, x2, x3, x4), got {list(start)}")
        data = self.data(dtype)
        return Task(self.objective(), theta, data, data.take(slice(0, 0)), 0)

    # -- closed forms on Gamma ------------------------------------------------------------------------
    def values(self, x1, x2) -> tuple[Tensor, Tensor]:
        """F1 and F2 at (x1, x2), in float64."""
        x1, x2 = torch.as_tensor(x1, dtype=DT), torch.as_tensor(x2, dtype=DT)
        return self.F1(x1, x2), self.F2(x1, x2)

    def on_gamma(self, x1, x2) -> dict[str, float]:
        """lambda_1, lambda_M, Tr of the Hessian at the point (x1, x2, 0, 0) of Gamma."""
        f1, f2 = (float(v) for v in self.values(x1, x2))
        return {"lambda_1": 2 * f1, "lambda_m": 2 * f2, "trace": 2 * (f1 + f2)}

    @staticmethod
    def project(theta: Tensor) -> Tensor:
        """Orthogonal projection onto Gamma = {x3 = x4 = 0} (differs from the gradient-flow projection
        Phi by O(x3^2 + x4^2))."""
        out = theta.clone()
        out[..., 2:] = 0
        return out

    def argmin(self, which: str, start=(0.0, 0.0), steps: int = 200) -> tuple[float, float]:
        """Minimizer of F1, F2 or F1 + F2 over the plane (L-BFGS in float64 from `start`)."""
        fn = {"F1": lambda a, b: self.F1(a, b), "F2": lambda a, b: self.F2(a, b),
              "F1+F2": lambda a, b: self.F1(a, b) + self.F2(a, b)}[which]
        x = _lbfgs(lambda p: fn(p[0], p[1]), start, steps)
        if not torch.isfinite(x).all():
            raise SamcliError(f"argmin of {which} diverged: is it bounded below with a minimizer?")
        return float(x[0]), float(x[1])

    def minimizers(self, start=(0.0, 0.0)) -> dict[str, tuple[float, float]]:
        """The minimizers over the plane of F1, F2 and F1 + F2, found from `start`."""
        return {"argmin F1": self.argmin("F1", start), "argmin F2": self.argmin("F2", start),
                "argmin F1+F2": self.argmin("F1+F2", start)}

    def one_sam_finite_eta_point(self, eta: float, start=(0.0, 0.0), steps: int = 200) -> tuple[float, float]:
        """Where 1-SAM at finite eta stops drifting on this toy (a model, not a claim of the paper).

        Each example k = 0, 1 is a 1-D SAM on its own coordinate with curvature lambda_k = 4 F_k: when drawn,
        it sits in a 2-cycle at +-eta rho lambda_k / (2 - eta lambda_k), so the point where its gradient is
        taken lies 2 rho / (2 - eta lambda_k) off Gamma, and the drift of (x1, x2) is
        -(rho^2 / 2) sum_k w_k grad lambda_k with weights w_k = (2 / (2 - eta lambda_k))^2 (-> 1 as eta -> 0:
        the trace flow). It stops where w_0 grad F1 + w_1 grad F2 = 0."""
        def residual(point):
            a, b = point[0], point[1]
            grads = [torch.autograd.grad(F(a, b), point, create_graph=True)[0] for F in (self.F1, self.F2)]
            f1, f2 = self.F1(a, b), self.F2(a, b)
            w = [(2 / (2 - eta * 4 * f)) ** 2 for f in (f1, f2)]
            return (w[0] * grads[0] + w[1] * grads[1]).pow(2).sum()
        x = _lbfgs(residual, start, steps)
        return float(x[0]), float(x[1])

    def check_order(self, x1: Tensor, x2: Tensor) -> Optional[str]:
        """None when F1 > F2 > 0 on the given points; else a sentence saying where it fails."""
        f1, f2 = self.values(x1, x2)
        if not (f2 > 0).all():
            return f"F2 <= 0 somewhere (min {float(f2.min()):.3g}); the toy needs F1 > F2 > 0"
        if not (f1 > f2).all():
            return f"F1 <= F2 somewhere (min F1 - F2 = {float((f1 - f2).min()):.3g}); the toy needs F1 > F2 > 0"
        return None


def _lbfgs(fn: Callable[[Tensor], Tensor], start, steps: int) -> Tensor:
    """argmin of fn over the plane by L-BFGS (strong Wolfe, float64) from `start`."""
    x = torch.tensor(list(start), dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=steps, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = fn(x)
        value.backward()
        return value
    opt.step(closure)
    return x.detach()


# ---- Quadratic (Thm 4.8) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Quadratic:
    """L(x) = 0.5 x^T A x with A's eigendecomposition, as D rank-one examples."""
    A: Tensor             # (D, D) symmetric positive definite
    eigenvalues: Tensor   # descending
    eigenvectors: Tensor  # columns, matching eigenvalues

    @property
    def lambda_1(self) -> float:
        """The top eigenvalue of A."""
        return float(self.eigenvalues[0])

    @property
    def v1(self) -> Tensor:
        """The top eigenvector of A."""
        return self.eigenvectors[:, 0]

    def objective(self) -> Objective:
        """The quadratic as an Objective whose example k is 0.5 (a_k . x)^2."""
        def per_example(params, buffers, inputs, targets):
            return 0.5 * (inputs @ params["x"]) ** 2
        return Objective(per_example, {"x": torch.Size([self.A.shape[0]])}, {})

    def data(self) -> Batch:
        """Rows a_k = sqrt(D lambda_k) q_k: (1/D) sum_k a_k a_k^T = A."""
        d = self.A.shape[0]
        rows = (self.eigenvectors * (d * self.eigenvalues).sqrt()).T
        return Batch(rows.contiguous(), torch.zeros(d, dtype=DT))

    def task(self, start: Tensor) -> Task:
        """The quadratic as a Task started at `start`."""
        data = self.data()
        return Task(self.objective(), start.to(DT).clone(), data, data.take(slice(0, 0)), 0)

    @staticmethod
    def predicted_radius(eta: float, rho: float, lambda_1: float) -> float:
        """Thm 4.8: ||x_t|| -> eta rho lambda_1 / (2 - eta lambda_1)."""
        return eta * rho * lambda_1 / (2 - eta * lambda_1)


def quadratic(eigenvalues: Sequence[float], seed: int = 0) -> Quadratic:
    """A = Q diag(eigenvalues) Q^T with a seeded random orthogonal Q (float64)."""
    values = torch.tensor(sorted(eigenvalues, reverse=True), dtype=DT)
    if len(values) < 1 or not (values > 0).all():
        raise SamcliError(f"quadratic eigenvalues {list(eigenvalues)} must all be > 0 (A positive definite)")
    if len(values) > 1 and not values[0] > values[1]:
        raise SamcliError(f"quadratic eigenvalues {list(eigenvalues)} need a unique largest one (Thm 4.8)")
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(len(values), len(values), generator=generator, dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    return Quadratic(q @ torch.diag(values) @ q.T, values, q)


def random_unit(dim: int, seed: int) -> Tensor:
    """A seeded random unit vector of length `dim` in float64."""
    z = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return z / z.norm()


def angle_cos(a: Tensor, b: Tensor) -> float:
    """|cos| of the angle between a and b."""
    return abs(float(a @ b) / (float(a.norm()) * float(b.norm()) + 1e-300))


__all__ = ["Figure1Toy", "builtin_F1", "builtin_F2", "Quadratic", "quadratic", "random_unit", "angle_cos"]
