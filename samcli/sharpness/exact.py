"""The dense float64 Hessian's spectrum: the ground truth for small models (spec.exact)."""
from __future__ import annotations

from ..curvature.dense import dense_hessian, spectrum
from .context import MeasureContext
from .report import ExactSpectrum


def exact_spectrum(ctx: MeasureContext) -> ExactSpectrum:
    """lambda_1, lambda_M, Tr and rank of the dense Hessian, and the three rho -> 0 limits from them."""
    spec, d, rho = ctx.spec, ctx.objective.dim, ctx.spec.rho
    found = spectrum(dense_hessian(ctx.objective, ctx.theta, ctx.data, ctx.chunk_size), spec.zero_tol)
    return ExactSpectrum(found.lambda_1, found.lambda_min_nonzero, found.trace, found.rank, spec.zero_tol,
                         rho ** 2 * found.lambda_1 / 2, rho ** 2 * found.lambda_min_nonzero / 2,
                         rho ** 2 * found.trace / (2 * d))
