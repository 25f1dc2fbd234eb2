"""Which way does a run drift along Gamma? Setting 5.1 pieces, with no dense D x D matrix.

Thm 4.5 (full-batch SAM) and Thm 5.4 (1-SAM) say that in Phase II the projection onto Gamma moves
along -P grad lambda_1 and -P grad Tr respectively (P: the tangent projector of Gamma). For a
regression in Setting 5.1, L(x) = (1/n) sum_k 1/2 ||f_k(x) - y_k||^2, everything needed comes from
the output Jacobian J (the m = n C training outputs by D parameters):

- Gamma = {f(x) = y} near a full-rank interpolating point, so its normal space is the row space of J
  and P = I - J^T (J J^T)^-1 J, applied as v - Q Q^T v with Q an orthonormal basis of the rows of
  J (reduced QR of J^T: the same projector, without squaring J's condition number).
- grad lambda_1 = grad_x (v1^T H(x) v1) with v1 held fixed (Hellmann-Feynman: exact wherever
  lambda_1 is simple, on or off Gamma), v1 from Lanczos on Hessian-vector products.
- grad Tr: the gradient of Tr G(x) = (l''/n) sum_k ||grad f_k(x)||_F^2 (l'' = 1 for 1/2 (f - y)^2),
  the Gauss-Newton trace, not of Tr H. They differ by (1/n) sum_k r_k Tr(grad^2 f_k) with
  residuals r_k = f_k - y_k, whose gradient is (1/n) sum_k [Tr(grad^2 f_k) grad r_k + r_k (...)].
  On Gamma r_k = 0 and grad r_k = grad f_k lies in the row space of J, so P grad Tr G = P grad Tr H
  there: equal after projection, which is all the flow uses (the unprojected vectors differ).
  Tr G needs only first derivatives of f inside the gradient; Tr H would need D third-derivative
  passes.

The drift of a run between two iterates is compared with both flows at one point (default the
earlier iterate): cosines of P(x_t - x_s) with -P grad lambda_1 and -P grad Tr, and the ratio
ingredients a = ||P grad lambda_1||^2, b = ||P grad Tr||^2, c = <P grad lambda_1, P grad Tr>. Along
the flows (lambda_1, Tr) move at rate -(a, c)/2 for SAM and -(c, b)/2 for 1-SAM; Cauchy-Schwarz
c^2 <= ab makes Delta lambda_1 / Delta Tr = a/c for SAM at least c/b for 1-SAM (when c > 0).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.func import grad, jacrev, jvp

from ..config import SamcliError
from ..curvature.lanczos import lanczos
from ..objective import Batch, Objective, squared_error
from .toys import Figure1Toy

# ---- Setting 5.1 ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Regression:
    """L(x) = (1/n) sum_k 1/2 ||f_k(x) - y_k||^2 with f(x) = outputs(x), shape (n, C)."""
    outputs: Callable[[Tensor], Tensor]
    targets: Tensor                      # (n, C)

    @property
    def examples(self) -> int:
        """The number of training examples n."""
        return self.targets.shape[0]

    def loss(self, x: Tensor) -> Tensor:
        """L(x) = (1/n) sum_k 1/2 ||f_k(x) - y_k||^2."""
        return 0.5 * (self.outputs(x) - self.targets).pow(2).sum() / self.examples

    @classmethod
    def from_objective(cls, objective: Objective, data: Batch) -> Regression:
        """A model task trained with loss "mse" on `data` (the same loss as objective.loss, tested)."""
        if objective.module is None or objective.output_loss is not squared_error:
            raise SamcliError("the drift directions need Setting 5.1: a model objective with loss 'mse'")
        if not data.targets.is_floating_point():
            raise SamcliError("the drift directions need real-valued targets (a regression, Setting 5.1), "
                              "not class labels")
        n, inputs = len(data), data.inputs

        def outputs(x: Tensor) -> Tensor:
            return objective.outputs(x, inputs).reshape(n, -1)
        return cls(outputs, data.targets.reshape(n, -1))


def figure1_regression(toy: Figure1Toy) -> Regression:
    """The figure-1 toy in Setting 5.1: outputs f_0 = 2 sqrt(F1) x3, f_1 = 2 sqrt(F2) x4, targets 0,
    so (1/2) mean_k f_k^2 = F1 x3^2 + F2 x4^2 (F1 > F2 > 0 keeps the roots real)."""
    def outputs(x: Tensor) -> Tensor:
        return torch.stack([2 * toy.F1(x[0], x[1]).sqrt() * x[2], 2 * toy.F2(x[0], x[1]).sqrt() * x[3]]).reshape(2, 1)
    return Regression(outputs, torch.zeros(2, 1, dtype=torch.float64))


def output_jacobian(model: Regression, x: Tensor) -> Tensor:
    """J (n C, D): row (k, c) is grad f_kc(x); differentiable in x (grad_trace differentiates it)."""
    return jacrev(lambda t: model.outputs(t).reshape(-1))(x)


@dataclass(frozen=True)
class TangentProjector:
    """P = I - J^T (J J^T)^-1 J, held as Q (D, m), an orthonormal basis of J's rows: P v = v - Q Q^T v."""
    normal_basis: Tensor

    @classmethod
    def from_jacobian(cls, J: Tensor, rank_tol: float = 1e-10) -> TangentProjector:
        """The projector onto the null space of J (Gamma's tangent space), from a reduced QR of J^T."""
        m, dim = J.shape
        if m >= dim:
            raise SamcliError(f"{m} outputs but only {dim} parameters: Gamma has no tangent space "
                              f"(Setting 5.1 needs more parameters than training outputs)")
        q, r = torch.linalg.qr(J.T)
        scale = r.diagonal().abs()
        if not bool((scale > rank_tol * scale.max()).all()):
            raise SamcliError("the output Jacobian is rank deficient here; Setting 5.1 needs a full-rank J "
                              "(drop duplicate examples, or measure at another point)")
        return cls(q)

    def __call__(self, v: Tensor) -> Tensor:
        """P v: v minus its component in the row space of J."""
        q = self.normal_basis
        return v - q @ (q.T @ v.to(q.dtype))


def tangent_projector(model: Regression, x: Tensor) -> TangentProjector:
    """The tangent projector of Gamma at x, from the output Jacobian there."""
    return TangentProjector.from_jacobian(output_jacobian(model, x.detach()))


# ---- the two regularizers' gradients ---------------------------------------------------------------------

def hessian_vector_product(model: Regression, x: Tensor, v: Tensor) -> Tensor:
    """H(x) v for the regression loss, by forward-over-reverse differentiation."""
    return jvp(grad(model.loss), (x.detach(),), (v.to(x.dtype),))[1]


@dataclass(frozen=True)
class TopEigenpair:
    """lambda_1 and v_1 of H at a point, with the Lanczos residual and whether it converged."""
    value: float
    vector: Tensor           # unit norm
    residual: float          # ||H v - lambda v||
    converged: bool


def top_eigenpair(model: Regression, x: Tensor, *, max_iter: int = 200, tol: float = 1e-10,
                  seed: int = 0) -> TopEigenpair:
    """lambda_1 and v1 of H(x) by Lanczos (samcli.curvature) on Hessian-vector products. The error of
    v1 is about residual / (lambda_1 - lambda_2), and grad lambda_1 inherits it."""
    x = x.detach()
    result = lanczos(lambda rows: torch.stack([hessian_vector_product(model, x, row) for row in rows]),
                     x.numel(), k=1, max_iter=max_iter, tol=tol, generator=torch.Generator().manual_seed(seed))
    return TopEigenpair(float(result.eigenvalues[0, 0]), result.eigenvectors[0, 0].to(x.dtype),
                        float(result.residuals[0, 0]), bool(result.converged[0]))


def grad_lambda_1(model: Regression, x: Tensor, v1: Tensor) -> Tensor:
    """grad_x (v1^T H(x) v1) with v1 fixed: the second directional derivative of L along v1, differentiated."""
    v1 = v1.to(x.dtype)

    def curvature_along_v1(t: Tensor) -> Tensor:
        return jvp(lambda s: jvp(model.loss, (s,), (v1,))[1], (t,), (v1,))[1]
    return grad(curvature_along_v1)(x.detach())


def grad_trace(model: Regression, x: Tensor) -> Tensor:
    """grad_x Tr G(x) = grad_x (1/n) ||J(x)||_F^2 (module note: P grad Tr G = P grad Tr H on Gamma)."""
    return grad(lambda t: output_jacobian(model, t).pow(2).sum() / model.examples)(x.detach())


def cosine(a: Tensor, b: Tensor) -> float:
    """Signed cosine of the angle between a and b; nan when either is zero."""
    norms = float(a.norm()) * float(b.norm())
    return float(a @ b) / norms if norms > 0 else math.nan


# ---- the drift of a run ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftDirection:
    """How a run's drift along Gamma compares with the two limiting flows at one point."""
    cos_lambda_1: float      # cos(P (x_t - x_s), -P grad lambda_1): near 1 for full-batch SAM (Thm 4.5)
    cos_trace: float         # cos(P (x_t - x_s), -P grad Tr): near 1 for 1-SAM (Thm 5.4)
    a: float                 # ||P grad lambda_1||^2
    b: float                 # ||P grad Tr||^2
    c: float                 # <P grad lambda_1, P grad Tr>
    drift: float             # ||P (x_t - x_s)||
    normal_drift: float      # ||(I - P)(x_t - x_s)||
    lambda_1: float          # at the evaluation point
    lanczos_residual: float

    @property
    def sam_rates(self) -> tuple[float, float]:
        """d(lambda_1, Tr)/dtau along SAM's flow dX/dtau = -(1/2) P grad lambda_1."""
        return (-self.a / 2, -self.c / 2)

    @property
    def one_sam_rates(self) -> tuple[float, float]:
        """d(lambda_1, Tr)/dtau along 1-SAM's flow dX/dtau = -(1/2) P grad Tr."""
        return (-self.c / 2, -self.b / 2)

    def to_dict(self) -> dict:
        """The fields and the two flows' rates as a plain dict (for JSON)."""
        return {**self.__dict__, "sam_rates": self.sam_rates, "one_sam_rates": self.one_sam_rates}


def drift_direction(model: Regression, x_s: Tensor, x_t: Tensor, *, at: Optional[Tensor] = None,
                    v1: Optional[Tensor] = None, seed: int = 0) -> DriftDirection:
    """Compare the drift x_s -> x_t with the two flows, all evaluated at `at` (default x_s).

    Pick x_s, x_t close enough in flow time that the flow's direction barely turns between them; the
    normal component (SAM's oscillation across Gamma) is removed by P and reported apart."""
    point = (x_s if at is None else at).detach()
    project = tangent_projector(model, point)
    pair = None
    if v1 is None:
        pair = top_eigenpair(model, point, seed=seed)
        if not pair.converged:
            raise SamcliError(f"Lanczos did not converge for v1 (residual {pair.residual:.2e}); lambda_1 may be "
                              f"degenerate here, where grad lambda_1 is undefined")
        direction = pair.vector
    else:
        direction = v1 / v1.norm()
    p_lambda = project(grad_lambda_1(model, point, direction))
    p_trace = project(grad_trace(model, point))
    step = (x_t - x_s).detach().to(point.dtype)
    p_step = project(step)
    curvature = float(direction @ hessian_vector_product(model, point, direction))
    return DriftDirection(
        cosine(p_step, -p_lambda), cosine(p_step, -p_trace), float(p_lambda @ p_lambda), float(p_trace @ p_trace),
        float(p_lambda @ p_trace), float(p_step.norm()), float((step - p_step).norm()), curvature,
        pair.residual if pair is not None else math.nan)


__all__ = ["Regression", "figure1_regression", "output_jacobian", "TangentProjector", "tangent_projector",
           "hessian_vector_product", "TopEigenpair", "top_eigenpair", "grad_lambda_1", "grad_trace", "cosine",
           "DriftDirection", "drift_direction"]
