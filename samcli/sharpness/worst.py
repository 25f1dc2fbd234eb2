"""Worst-direction sharpness: lambda_1 (Lanczos), its limit rho^2 lambda_1 / 2, and R^Max_rho =
max_{||v|| <= rho} L(x + v) - L(x) by ascent on the sphere (finite.py)."""
from __future__ import annotations

from .context import MeasureContext
from .finite import worst_direction_ascent
from .report import WorstDirection


def worst_direction(ctx: MeasureContext) -> WorstDirection:
    """The worst-direction notion from the shared Lanczos run and, with spec.finite, the sphere ascent."""
    top, spec = ctx.top, ctx.spec
    lam = top.eigenvalues[0].tolist()
    finite = (None, 0, 0, ())
    if spec.finite:
        finite = worst_direction_ascent(ctx.objective, ctx.theta, ctx.data, spec.rho,
                                        top.eigenvectors[0, 0].to(ctx.theta.dtype), ctx.loss, spec, ctx.generator,
                                        ctx.chunk_size)
    return WorstDirection(tuple(lam), tuple(top.residuals[0].tolist()), bool(top.converged[0]), top.iterations,
                          spec.rho ** 2 * lam[0] / 2, *finite[:3], top.error_bounds[0, 0].item(), finite[3])
