"""Ascent-direction sharpness: R^Asc_rho = L(x + rho g/||g||) - L(x) with g the gradient over the
measured set, the Rayleigh quotient n^T H n (its limit is rho^2 n^T H n / 2), and |cos(g, v_1)|."""
from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from ..ascent import ascent_step
from .context import MeasureContext
from .report import AscentDirection


def ascent_direction(ctx: MeasureContext) -> AscentDirection:
    """The ascent-direction notion; +inf at a stationary point, where the paper defines it so."""
    g, rho = ctx.gradient, ctx.spec.rho
    assert g is not None      # measure() computes the gradient before any notion
    g_norm = g.norm().item()
    if g_norm == 0.0:
        return AscentDirection(math.inf, math.nan, math.inf, 0.0)
    n = g / g_norm
    step = cast(Tensor, ascent_step(g, rho, 0.0))      # a flat g: a flat step
    value = ctx.objective.evaluate_loss(ctx.theta + step, ctx.data, ctx.chunk_size) - ctx.loss
    rayleigh = (n @ ctx.hessian.matvec(n)).item()
    alignment = abs((n.to(torch.float64) @ ctx.top.eigenvectors[0, 0]).item())
    return AscentDirection(value, rayleigh, rho ** 2 * rayleigh / 2, g_norm, alignment)
