"""Adaptive sharpness (Kwon et al. 2021, ASAM; Andriushchenko et al. 2023): the opt-in fourth notion.

Perturbations are scaled elementwise by the weights, w + T u with T = diag(|w| + eta_abs) and
||u|| <= rho, so the notion is invariant under rescalings that leave the network's function
unchanged (a ReLU layer pair (W1, b1, W2) -> (a W1, a b1, W2 / a) maps T to S T and the Hessian H
to S^-1 H S^-1, leaving T H T and every L(w + T u) as they were). eta_abs defaults to 0 for exactly
that invariance; ASAM trains with eta = 0.01 so that zero weights can move, which breaks the
invariance by O(eta / |w|) and is offered only as an option.

Four numbers, all in u space, through the same `Objective.loss`:
- worst case   max_{||u|| <= rho} L(w + T u) - L(w), by the same sphere ascent as R^Max (restarts,
               one from rho times the top eigenvector of T H T), limit (rho^2 / 2) lambda_1(T H T);
- average case E_u L(w + T u) - L(w), u = rho z / ||z|| uniform on the sphere as for R^Avg,
               in antithetic pairs with a standard error, limit (rho^2 / (2 D)) Tr(T H T).
Both finite-rho values reuse the R^Max / R^Avg algorithms of finite.py on the objective
u -> L(w + T u), whose gradient is T grad L and whose Hessian at u = 0 is T H T.
"""
from __future__ import annotations

import time
from typing import Optional

import torch
from torch import Tensor

from ..config import SamcliError
from ..curvature.hvp import HessianOperator
from ..curvature.lanczos import lanczos
from ..curvature.trace import hutchpp
from ..family import elementwise_scale
from ..objective import Batch, Objective
from ..spec.measure import MeasureSpec
from .context import MeasureContext
from .finite import average_direction_monte_carlo, worst_direction_ascent
from .report import AdaptiveSharpness


class _ScaledObjective:
    """u -> L(w + t * u): the duck-typed slice of `Objective` that the R^Max ascent and the R^Avg
    Monte Carlo use, so both run unchanged in u space (called there at theta = 0, i.e. at w)."""

    def __init__(self, objective: Objective, theta: Tensor, scale: Tensor):
        self.objective, self.theta, self.scale = objective, theta, scale
        self.dim = objective.dim

    def loss(self, u: Tensor, batch: Batch, buffers: Optional[dict] = None) -> Tensor:
        return self.objective.loss(self.theta + self.scale * u, batch, buffers)

    def value_and_grad(self, u: Tensor, data: Batch, chunk_size: int,
                       buffers: Optional[dict] = None) -> tuple[Tensor, Tensor]:
        value, g = self.objective.value_and_grad(self.theta + self.scale * u, data, chunk_size, buffers)
        return value, self.scale * g


def adaptive_scale(theta: Tensor, eta_abs: float = 0.0) -> Tensor:
    """The diagonal of T: |w| + eta_abs on every entry (ASAM's own scale, with its weights-only rule)."""
    return elementwise_scale(theta, eta_abs)


def adaptive_sharpness(objective: Objective, theta: Tensor, data: Batch, rho: float, *,
                       loss: Optional[float] = None, eta_abs: float = 0.0, restarts: int = 3,
                       ascent_iters: int = 20, ascent_tol: float = 1e-4, directions: int = 64, lanczos_iters: int = 30,
                       lanczos_tol: float = 1e-3, trace_probes: int = 8, finite: bool = True, seed: int = 0,
                       chunk_size: int = 4096) -> AdaptiveSharpness:
    """Adaptive sharpness of L = mean loss over `data` at `theta` (model in eval mode).

    `loss` is L(theta) when the caller has it already; `trace_probes` sets the Hutch++ budget
    (3 products per probe, as the average notion spends); `finite=False` gives the limits only.
    """
    if not rho > 0:
        raise SamcliError(f"rho={rho} must be > 0")
    if eta_abs < 0:
        raise SamcliError(f"eta_abs={eta_abs} must be >= 0 (0 keeps adaptive sharpness scale-invariant)")
    if restarts < 1 or directions < 2 or lanczos_iters < 1 or trace_probes < 1:
        raise SamcliError(f"restarts={restarts}, lanczos_iters={lanczos_iters} and trace_probes={trace_probes} "
                          f"must be >= 1 and directions={directions} >= 2")
    if not torch.isfinite(theta).all():
        raise SamcliError("the parameters are not finite (a diverged run?): sharpness is undefined there")
    started = time.perf_counter()
    objective.set_training(False)
    theta = theta.detach()
    generator = torch.Generator().manual_seed(seed)
    if loss is None:
        loss = objective.evaluate_loss(theta, data, chunk_size)
    scale = adaptive_scale(theta, eta_abs)
    hessian = HessianOperator(objective, theta, data, chunk_size)

    def scaled_matmat(vectors: Tensor) -> Tensor:      # u -> T H T u, row by row
        return hessian.matmat(vectors.to(theta.dtype) * scale) * scale

    top = lanczos(scaled_matmat, objective.dim, k=1, max_iter=lanczos_iters, tol=lanczos_tol,
                  generator=generator, device=theta.device)
    lam = top.eigenvalues[0, 0].item()
    trace = hutchpp(scaled_matmat, objective.dim, 3 * trace_probes, generator, theta.dtype, theta.device)
    d = objective.dim
    worst = average = average_stderr = None
    evaluations = 0
    if finite:
        scaled = _ScaledObjective(objective, theta, scale)
        origin = torch.zeros_like(theta)
        settings = MeasureSpec(rho=rho, ascent_iters=ascent_iters, ascent_restarts=restarts, ascent_tol=ascent_tol,
                               directions=directions)
        v1 = top.eigenvectors[0, 0].to(theta.dtype)
        worst, evaluations, _, _ = worst_direction_ascent(scaled, origin, data, rho, v1, loss, settings, generator,
                                                          chunk_size)
        average, average_stderr = average_direction_monte_carlo(scaled, origin, data, loss, settings, generator,
                                                                chunk_size)
    return AdaptiveSharpness(
        rho=rho, eta_abs=eta_abs, examples=len(data), parameters=d, loss=loss,
        loss_resolution=torch.finfo(theta.dtype).eps * abs(loss), lambda_1=lam,
        lambda_1_residual=top.residuals[0, 0].item(), lambda_1_error_bound=top.error_bounds[0, 0].item(),
        lanczos_converged=bool(top.converged[0]), lanczos_iterations=top.iterations, limit_worst=rho ** 2 * lam / 2,
        trace=trace.value, trace_stderr=trace.stderr, trace_method=trace.method, trace_matvecs=trace.matvecs,
        limit_average=rho ** 2 * trace.value / (2 * d), worst=worst, worst_gradients=evaluations,
        worst_restarts=restarts if finite else 0, average=average, average_stderr=average_stderr,
        directions=2 * max(directions // 2, 2) if finite else 0, seconds=time.perf_counter() - started)


def adaptive_notion(ctx: MeasureContext) -> AdaptiveSharpness:
    """The registry's entry point: adaptive sharpness at spec.adaptive_rho with the spec's precision."""
    spec = ctx.spec
    return adaptive_sharpness(
        ctx.objective, ctx.theta, ctx.data, spec.adaptive_rho, loss=ctx.loss, restarts=spec.ascent_restarts,
        ascent_iters=spec.ascent_iters, ascent_tol=spec.ascent_tol, directions=spec.directions,
        lanczos_iters=spec.lanczos_iters, lanczos_tol=spec.lanczos_tol, trace_probes=spec.trace_probes,
        finite=spec.finite, seed=spec.seed, chunk_size=ctx.chunk_size)
