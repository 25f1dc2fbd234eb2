"""Average-direction sharpness: Tr(H) by the cheapest exact-or-unbiased path the network allows, its
limit rho^2 Tr(H) / (2D), and R^Avg_rho = E_u L(x + rho u) - L(x) by antithetic Monte Carlo."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..curvature.ggn import GGNOperator, parameter_blocks, supports_ggn
from ..curvature.ggn_trace import ggn_trace, piecewise_linear_reason
from ..curvature.trace import TraceEstimate, ggn_control_variate, hutchpp
from ..objective import Objective
from ..spec.measure import MeasureSpec
from .context import MeasureContext
from .finite import average_direction_monte_carlo
from .report import AverageDirection


def average_direction(ctx: MeasureContext) -> AverageDirection:
    """Tr(H) with its standard error and path, the limit, and (spec.finite) the Monte Carlo R^Avg."""
    spec, d = ctx.spec, ctx.objective.dim
    estimate = trace_estimate(ctx.objective, ctx.theta, ctx.data, ctx.hessian, spec, ctx.generator, ctx.chunk_size)
    finite = finite_stderr = None
    if spec.finite:
        finite, finite_stderr = average_direction_monte_carlo(ctx.objective, ctx.theta, ctx.data, ctx.loss, spec,
                                                              ctx.generator, ctx.chunk_size)
    return AverageDirection(estimate.value, estimate.stderr, estimate.method, estimate.matvecs, estimate.ggn_trace,
                            spec.rho ** 2 * estimate.value / (2 * d), finite, finite_stderr,
                            spec.directions if spec.finite else 0)


def trace_estimate(objective, theta, data, hessian, settings: MeasureSpec, generator,
                   chunk_size: int = 4096) -> TraceEstimate:
    """Tr(H) by the best path the network allows; `method` says which and why:
    exact Tr(G) when f is linear in each single parameter (piecewise-linear nets: Tr(H) = Tr(G));
    Tr(G) exact plus block Hutchinson on H - G for other networks; Hutch++ when no per-example
    Gauss-Newton identity exists (toys, other losses, BatchNorm on batch statistics)."""
    d = objective.dim
    ggn = ggn_trace(objective, theta, data, chunk_size)
    if ggn is None:
        estimate = hutchpp(hessian.matmat, d, 3 * max(settings.trace_probes, 2), generator, theta.dtype, theta.device)
        return replace(estimate, method=f"hutch++: {_no_ggn_reason(objective)}")
    smooth = piecewise_linear_reason(objective)
    if smooth is None:
        return TraceEstimate(ggn.value, 0.0, f"exact Tr(G), {ggn.describe()}; piecewise-linear so Tr(H) = Tr(G)",
                             0, 0, ggn.value)
    operator = GGNOperator(objective, theta, data, chunk_size)
    estimate = ggn_control_variate(hessian.matmat, operator.matmat, ggn.value, _block_masks(objective, theta), d,
                                   max(settings.trace_probes, 2), generator, theta.dtype, theta.device)
    return replace(estimate, method=f"ggn+block-hutchinson: Tr(G) exact ({ggn.describe()}) plus "
                                                f"block Hutchinson on H - G, since {smooth}")


def _no_ggn_reason(objective) -> str:
    if not supports_ggn(objective):
        named = f" {objective.loss_label}" if getattr(objective, "loss_label", None) else ""
        return (f"the loss{named} is not a cross-entropy or squared error of a module's outputs that samcli "
                "knows, so no exact Tr(G)")
    return "a BatchNorm uses batch statistics, which couple the examples: no per-example Tr(G)"


def _block_masks(objective: Objective, theta: Tensor) -> list[Tensor]:
    offsets = [0]
    for size in objective.sizes:
        offsets.append(offsets[-1] + size)
    masks = []
    for block in parameter_blocks(objective):
        mask = torch.zeros(objective.dim, dtype=theta.dtype, device=theta.device)
        for i in block:
            mask[offsets[i]:offsets[i + 1]] = 1
        masks.append(mask)
    return masks
