"""Per-example (stochastic) notions on a seeded sample: E_k lambda_1(grad^2 L_k) and E_k R^Asc_k, the
quantities 1-SAM's implicit bias is about (Wen et al., Thm 5.3)."""
from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from ..ascent import ascent_step
from ..curvature.lanczos import lanczos
from ..objective import Batch
from .context import MeasureContext
from .finite import VMAP_BUDGET
from .report import StochasticNotions


def per_example_notions(ctx: MeasureContext) -> StochasticNotions:
    """E_k lambda_1(grad^2 L_k) by S lock-step Lanczos runs (vmapped per-example HVPs) and
    E_k [L_k(x + rho g_k/||g_k||) - L_k(x)], on a seeded sample of S examples."""
    objective, theta, data, settings, generator = ctx.objective, ctx.theta, ctx.data, ctx.spec, ctx.generator
    count = min(settings.stochastic_examples, len(data))
    index = torch.randperm(len(data), generator=generator)[:count].to(data.inputs.device)
    sample = data.take(index)
    xs, ys = sample.inputs.unsqueeze(1), sample.targets.unsqueeze(1)    # S batches of one example

    def example_loss(t, x, y):
        return objective.loss(t, Batch(x, y))

    def example_hvp(v, x, y):
        return jvp(lambda t: grad(example_loss)(t, x, y), (theta,), (v.to(theta.dtype),))[1]

    # Lock-step Lanczos over groups of examples: the float64 Krylov bases (group x iterations x D)
    # are what costs memory, so groups stay small (one example at a time for a ResNet-18).
    iterations = min(settings.lanczos_iters, 30)
    lams, residuals = [], []
    group = max(1, min(8, VMAP_BUDGET // (iterations * objective.dim)))
    # one random start serves every example (each has its own operator); drawing D float64 normals
    # per example cost as much as its Lanczos run on ResNet-18
    shared_start = torch.randn(1, objective.dim, generator=generator, dtype=torch.float64).to(theta.device)
    for first in range(0, count, group):
        part = slice(first, first + group)

        def group_hvp(vs: Tensor, part: slice = part) -> Tensor:   # bound: lanczos calls it in this iteration only
            return vmap(example_hvp)(vs, xs[part], ys[part])

        result = lanczos(group_hvp, objective.dim, k=1,
                         batch=len(xs[part]), max_iter=iterations, tol=1e-3,
                         start=shared_start.expand(len(xs[part]), -1), device=theta.device)
        lams.append(result.eigenvalues[:, 0])
        residuals.append(result.residuals[:, 0])
    lam, residual = torch.cat(lams), torch.cat(residuals)

    losses, grads = vmap(lambda x, y: (example_loss(theta, x, y), grad(example_loss)(theta, x, y)))(xs, ys)
    norms = grads.norm(dim=1, keepdim=True)
    perturbed = theta + cast(Tensor, vmap(lambda g: ascent_step(g, settings.rho, 1e-30))(grads))   # flat steps
    ascent = vmap(example_loss)(perturbed, xs, ys) - losses
    ascent = ascent[norms.squeeze(1) > 0].to(torch.float64)   # undefined where g_k = 0
    sqrt_n = math.sqrt(max(count, 1))
    return StochasticNotions(count, lam.mean().item(), lam.std().item() / sqrt_n if count > 1 else math.nan,
                             residual.max().item(), ascent.mean().item(),
                             ascent.std().item() / math.sqrt(len(ascent)) if len(ascent) > 1 else math.nan)
