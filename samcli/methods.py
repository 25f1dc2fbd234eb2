"""One update rule per method: each returns the direction handed to the base optimizer.

All rules are written against `Objective` (see PAPER.md, "Update rules"):
  sgd        d = grad L_B(x)                                   (B = all examples: GD)
  sam        d = grad L_B(x + rho g/||g||),  g = grad L_B(x)   (same batch B for both)
  usam       d = grad L_B(x + rho g)
  msam       d = mean_j grad L_{B_j}(x + rho g_j/||g_j||)      (groups B_j of m examples, vmapped)
  ascent-gd  d = grad_x L_B(x + rho g(x)/||g(x)||)             (exact: Jacobian term kept)

BatchNorm: the first (unperturbed) pass updates running statistics; every other pass runs on
throwaway copies of the buffers, so perturbed points never leak into the statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from .config import ConfigError, OptimizerConfig
from .curvature.hvp import HessianOperator
from .objective import Batch, Objective


@dataclass(frozen=True)
class StepResult:
    direction: Tensor     # what the base optimizer descends along
    loss: float           # L_B at the unperturbed point
    grad_norm: float      # ||grad L_B|| at the unperturbed point


def _throwaway(objective: Objective) -> dict:
    return {k: v.clone() for k, v in objective.buffers.items()}


def ascent_step(g: Tensor, rho: float, eps: float, normalized: bool = True) -> Tensor:
    """rho g/(||g|| + eps) (eps guards g = 0, where the normalized step is undefined) or rho g."""
    return rho * g / (g.norm() + eps) if normalized else rho * g


def descent_direction(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig,
                      chunk_size: int) -> StepResult:
    method = cfg.method
    if method == "msam":
        return _msam(objective, theta, batch, cfg, chunk_size)
    loss, g = objective.value_and_grad(theta, batch, chunk_size)     # updates BN statistics
    if method == "sgd":
        return StepResult(g, loss.item(), g.norm().item())
    scratch = _throwaway(objective)
    if method in ("sam", "usam"):
        perturbed = theta + ascent_step(g, cfg.rho, cfg.grad_eps, normalized=method == "sam")
        direction = objective.grad(perturbed, batch, chunk_size, scratch)
    elif method == "ascent-gd":
        direction = _ascent_loss_gradient(objective, theta, batch, g, cfg, chunk_size, scratch)
    else:
        raise ConfigError(f"optimizer.method={method!r} is unknown")
    return StepResult(direction, loss.item(), g.norm().item())


def _ascent_loss_gradient(objective, theta, batch, g, cfg, chunk_size, scratch) -> Tensor:
    """Exact gradient of L(x + rho n(x)), n = g/||g||:  g' + (rho/||g||) H (I - n n^T) g'.

    The Jacobian of n is (I - n n^T) H / ||g||; its transpose applied to g' needs one Hessian-vector
    product at x, which keeps the full-batch case chunked instead of holding a double-backward graph
    over the whole batch.
    """
    norm = g.norm() + cfg.grad_eps
    n = g / norm
    g_prime = objective.grad(theta + cfg.rho * n, batch, chunk_size, scratch)
    projected = g_prime - n * (n @ g_prime)
    hessian = HessianOperator(objective, theta, batch, chunk_size, buffers=scratch, keep_graph=False)
    return g_prime + (cfg.rho / norm) * hessian.matvec(projected)


def _msam(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig, chunk_size: int) -> StepResult:
    m = cfg.m
    if len(batch) % m:
        raise ConfigError(f"optimizer.m={m} does not divide the batch of {len(batch)} examples; pick a divisor")
    if objective.buffers:
        raise ConfigError("method msam vmaps over groups and cannot update BatchNorm statistics; "
                          "use model.norm: group or none, or method sam")
    value_and_grad = grad_and_value(objective.named_loss)
    params = objective.unflatten(theta)

    def group_direction(inputs, targets):
        group = Batch(inputs, targets)
        g, loss = value_and_grad(params, group)
        scale = cfg.rho / (torch.sqrt(sum(v.pow(2).sum() for v in g.values())) + cfg.grad_eps)   # rho / ||g_j||
        d, _ = value_and_grad({k: params[k] + scale * g[k] for k in params}, group)
        return d, loss, g

    groups_per_chunk = max(1, chunk_size // m)
    direction = torch.zeros_like(theta)
    g_mean = torch.zeros_like(theta)
    loss_sum = 0.0
    groups = len(batch) // m
    for start in range(0, groups, groups_per_chunk):
        part = batch.take(slice(start * m, min(groups, start + groups_per_chunk) * m))
        k = len(part) // m
        inputs = part.inputs.reshape(k, m, *part.inputs.shape[1:])
        targets = part.targets.reshape(k, m, *part.targets.shape[1:])
        d, losses, g = vmap(group_direction)(inputs, targets)
        direction += torch.cat([d[name].sum(0).reshape(-1) for name in objective.names])
        g_mean += torch.cat([g[name].sum(0).reshape(-1) for name in objective.names])
        loss_sum += losses.sum().item()
    return StepResult(direction / groups, loss_sum / groups, (g_mean / groups).norm().item())
