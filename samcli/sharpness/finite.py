"""The finite-rho machinery every finite notion shares: ascent on the sphere (R^Max, adaptive R^Max)
and antithetic Monte Carlo on the sphere (R^Avg, adaptive R^Avg).

Both work on anything with the slice of `Objective` they call (`dim`, `loss`, `value_and_grad`,
optionally `value_and_lazy_grad`), so adaptive sharpness runs them unchanged in its u space.
"""
from __future__ import annotations

import math

import torch
from torch.func import vmap

from ..spec.measure import MeasureSpec

# elements a vmapped batch of parameter vectors may hold at once (points x examples x D for the Monte
# Carlo, examples x Lanczos iterations x D for the per-example bases): 2^28, 2 GB in float64
VMAP_BUDGET = 2 ** 28


def worst_direction_ascent(objective, theta, data, rho, v1, loss, settings: MeasureSpec, generator,
                           chunk_size: int = 4096):
    """max_{||v|| <= rho} L(x + v) by ascent on the sphere, restarts from rho v_1 and random points.

    The update v <- rho normalize((1 - b) v/rho + b grad/||grad||) with the KKT fixed point
    v ∝ grad L(x + v); b starts at 1 (the fixed-point iteration, power iteration on H at a
    minimizer) and halves whenever a step does not increase the loss, so the value never drops.
    A restart ends after `ascent_iters` steps, when b falls below 1e-3, or when an accepted step
    gains less than `ascent_tol` of the current estimate L(x + v) - L(x).
    Returns (best value, gradient evaluations, restarts, the value each restart reached).
    """
    chunk = chunk_size
    starts = [v1] + [torch.randn(objective.dim, generator=generator).to(theta)
                     for _ in range(settings.ascent_restarts - 1)]
    reached, evaluations = [], 0
    for start in starts:
        v = rho * start / start.norm()
        value, gv = objective.value_and_grad(theta + v, data, chunk)
        evaluations += 1
        blend = 1.0
        for _ in range(settings.ascent_iters):
            direction = (1 - blend) * v / rho + blend * gv / (gv.norm() + 1e-30)
            candidate = rho * direction / (direction.norm() + 1e-30)
            # a rejected candidate needs only its loss: the backward pass runs for accepted ones
            new_value, new_gradient = _value_and_lazy_grad(objective, theta + candidate, data, chunk)
            evaluations += 1
            if new_value > value:
                gain = (new_value - value).item()
                v, value, gv = candidate, new_value, new_gradient()
                if gain <= settings.ascent_tol * abs(value.item() - loss):
                    break
            else:
                blend /= 2
                if blend < 1e-3:
                    break
        reached.append(value.item() - loss)
    return max(reached), evaluations, len(starts), tuple(reached)


def _value_and_lazy_grad(objective, theta, data, chunk):
    """Objective.value_and_lazy_grad; duck-typed objectives (adaptive sharpness's u-space view)
    without it get the eager value_and_grad behind the same interface."""
    lazy = getattr(objective, "value_and_lazy_grad", None)
    if lazy is not None:
        return lazy(theta, data, chunk)
    value, g = objective.value_and_grad(theta, data, chunk)
    return value, lambda: g


def average_direction_monte_carlo(objective, theta, data, loss, settings: MeasureSpec, generator,
                                  chunk_size: int = 4096) -> tuple[float, float]:
    """E_u L(x + rho u) - L(x), u = z/||z||, in antithetic pairs: the pair mean
    (L(x + rho u) + L(x - rho u))/2 cancels the first-order term rho g.u exactly."""
    pairs = max(settings.directions // 2, 2)
    z = torch.randn(pairs, objective.dim, generator=generator).to(theta)
    u = settings.rho * z / z.norm(dim=1, keepdim=True)
    points = torch.cat([theta + u, theta - u])
    values = torch.zeros(2 * pairs, dtype=torch.float64, device=theta.device)
    for chunk in data.chunks(chunk_size):
        # vmapping every point at once holds points x examples x activations; on a ResNet-18 that is
        # tens of GB, and a vmapped convolution with batched weights is no faster than a loop
        group = max(1, VMAP_BUDGET // (len(chunk) * objective.dim))
        for start in range(0, 2 * pairs, group):
            per_point = vmap(lambda t, chunk=chunk: objective.loss(t, chunk))(points[start:start + group])
            values[start:start + group] += per_point.to(torch.float64) * (len(chunk) / len(data))
    pair_means = (values[:pairs] + values[pairs:]) / 2 - loss
    return pair_means.mean().item(), pair_means.std().item() / math.sqrt(pairs)
