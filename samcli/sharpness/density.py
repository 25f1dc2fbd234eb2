"""The density notion: the Hessian's eigenvalue density by stochastic Lanczos quadrature and its moments
(density.png is drawn by density_plot.py).

The quadrature (curvature/slq.py) gives per probe l nodes theta_lk and weights tau_lk summing to 1; the
estimated distribution puts weight tau_lk / P on theta_lk (P probes). From it:
- the smoothed curve phi(t) = mean_l sum_k tau_lk N(t; theta_lk, sigma^2), sigma = density_sigma times
  the nodes' range, with the probes' spread std_l(phi_l(t)) / sqrt(P) as its error at each grid point;
- the moments Tr(H)/D = mean_l sum_k tau_lk theta_lk (= v_l^T H v_l) and Tr(H^2)/D (= ||H v_l||^2),
  each an average of P independent unbiased estimates, so their standard error is std / sqrt(P);
- lambda_1 as the largest node (the top Ritz value, which Lanczos finds first), and the bulk as the
  central 90% of the estimated mass.
"""
from __future__ import annotations

import math

import torch

from ..curvature.slq import Quadrature, slq
from .context import MeasureContext
from .report import DensitySpectrum

GRID_POINTS = 400
BULK_MASS = 0.9
PAD = 5.0         # the grid extends this many sigmas beyond the outermost nodes


def density_from_quadrature(quad: Quadrature, dim: int, sigma_relative: float,
                            grid_points: int = GRID_POINTS) -> DensitySpectrum:
    """The density result from the per-probe quadratures (at least two probes: the error bars are their spread)."""
    probes = len(quad.nodes)
    if probes < 2:
        raise ValueError(f"the density's error bars need at least two probes (got {probes})")
    nodes = [torch.tensor(n, dtype=torch.float64) for n in quad.nodes]
    weights = [torch.tensor(w, dtype=torch.float64) for w in quad.weights]
    first = torch.stack([(w * n).sum() for n, w in zip(nodes, weights)])           # v^T H v per probe
    second = torch.stack([(w * n ** 2).sum() for n, w in zip(nodes, weights)])     # ||H v||^2 per probe
    every, mass = torch.cat(nodes), torch.cat(weights) / probes
    low, high = every.min().item(), every.max().item()
    span = high - low if high > low else max(abs(high), 1e-12)     # one distinct eigenvalue: its own scale
    sigma = sigma_relative * span
    grid = torch.linspace(low - PAD * sigma, high + PAD * sigma, grid_points, dtype=torch.float64)
    curves = torch.stack([(w[:, None] * _gauss(grid[None, :] - n[:, None], sigma)).sum(0)
                          for n, w in zip(nodes, weights)])                          # (P, grid)
    order = every.argsort()
    cdf = mass[order].cumsum(0)
    tail = (1 - BULK_MASS) / 2

    def quantile(q: float) -> float:
        return every[order][int(torch.searchsorted(cdf, torch.tensor(q - 1e-12, dtype=torch.float64)))].item()

    return DensitySpectrum(
        probes=probes, probe=quad.probe, steps=quad.steps, matvecs=quad.matvecs, nodes=tuple(every.tolist()),
        weights=tuple(mass.tolist()), probe_sizes=tuple(len(n) for n in nodes), sigma=sigma,
        sigma_relative=sigma_relative, grid=tuple(grid.tolist()), values=tuple(curves.mean(0).tolist()),
        values_stderr=tuple((curves.std(0) / math.sqrt(probes)).tolist()),
        trace_per_dim=first.mean().item(), trace_per_dim_stderr=(first.std() / math.sqrt(probes)).item(),
        trace2_per_dim=second.mean().item(), trace2_per_dim_stderr=(second.std() / math.sqrt(probes)).item(),
        lambda_1=high, bulk_low=quantile(tail), bulk_high=quantile(1 - tail), parameters=dim, bulk_mass=BULK_MASS)


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def density_notion(ctx: MeasureContext) -> DensitySpectrum:
    """The registry's entry point: SLQ of the Hessian with spec.density_probes x spec.density_steps HVPs."""
    spec = ctx.spec
    quad = slq(ctx.hessian.matmat, ctx.objective.dim, probes=spec.density_probes, steps=spec.density_steps,
               generator=ctx.generator, device=ctx.theta.device)
    return density_from_quadrature(quad, ctx.objective.dim, spec.density_sigma)
