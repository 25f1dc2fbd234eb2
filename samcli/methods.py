"""Each method's direction (torch), keyed by the names of samcli/spec/methods.py.

A method is a `MethodSpec` there (name, help, parameters, BatchNorm policy, rules: torch-free, read
by config validation, grids and the CLI) plus its direction here, one entry in `DIRECTIONS`;
`register(spec, direction)` adds both. The update rules (see docs/methods.md), each
returning the direction handed to the base optimizer:
  sgd        d = grad L_B(x)                                   (B = all examples: GD)
  sam        d = grad L_B(x + rho g/||g||),  g = grad L_B(x)   (same batch B for both)
  usam       d = grad L_B(x + rho g)
  msam       d = mean_j grad L_{B_j}(x + rho g_j/||g_j||)      (groups B_j of m examples; samcli/msam.py)
  ascent-gd  d = grad_x L_B(x + rho g(x)/||g(x)||)             (exact: Jacobian term kept)

BatchNorm: the first (unperturbed) pass updates running statistics; every other pass runs on
throwaway copies of the buffers, so perturbed points never leak into the statistics.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Union, cast

import torch
from torch import Tensor

from .ascent import ascent_step
from .curvature.hvp import HessianOperator
from .errors import ConfigError
from .msam import msam_direction
from .objective import Batch, Objective
from .spec import methods as spec
from .spec.methods import MethodSpec, batchnorm_refusal, get_method

if TYPE_CHECKING:
    from .config import OptimizerConfig


class StepResult:
    """What a method returns: the direction the base optimizer descends along, and L_B and
    ||grad L_B|| at the unperturbed point. The norm may come as a 0-dim tensor, read (a device sync)
    only when `grad_norm` is asked for, which the training loop never does. The direction is valid
    until the next direction at the same objective: inside `Objective.bound` it is a buffer the next
    pass overwrites, so a caller that keeps one across steps copies it (the loop uses each at once)."""
    __slots__ = ("direction", "loss", "_grad_norm")

    def __init__(self, direction: Tensor, loss: float, grad_norm: Union[float, Tensor]):
        self.direction, self.loss, self._grad_norm = direction, loss, grad_norm

    @property
    def grad_norm(self) -> float:
        """||grad L_B|| as a float (a tensor norm is read, a device sync, on first access only)."""
        if isinstance(self._grad_norm, Tensor):
            self._grad_norm = self._grad_norm.item()
        return self._grad_norm


Direction = Callable[[Objective, Tensor, Batch, "OptimizerConfig", int], StepResult]


# ---- directions ------------------------------------------------------------------------------------

def _throwaway(objective: Objective) -> dict:
    return {k: v.clone() for k, v in objective.buffers.items()} if objective.buffers else {}


def _from_gradient(rule: Callable[..., Tensor]) -> Direction:
    """A direction built from g = grad L_B(x), the one pass that updates BatchNorm statistics;
    rule(objective, theta, batch, g, ||g||, cfg, chunk_size) returns the direction (the norm is
    reported anyway, so the rules reuse it instead of reducing g again)."""
    def direction(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig,
                  chunk_size: int) -> StepResult:
        loss, g = objective.value_and_grad(theta, batch, chunk_size)
        norm = torch.linalg.vector_norm(g)      # g.norm()'s own kernel, without torch.norm's Python dispatch
        return StepResult(rule(objective, theta, batch, g, norm, cfg, chunk_size), loss.item(), norm)
    return direction


def _gradient(objective, theta, batch, g, norm, cfg, chunk_size) -> Tensor:
    return g


def _gradient_at_ascent_point(normalized: bool) -> Callable[..., Tensor]:
    def rule(objective, theta, batch, g, norm, cfg, chunk_size) -> Tensor:
        perturbed = objective.shifted(theta, ascent_step(g, cfg.rho, cfg.grad_eps, normalized, norm))
        return objective.grad(perturbed, batch, chunk_size, _throwaway(objective))
    return rule


def _ascent_loss_gradient(objective, theta, batch, g, norm, cfg, chunk_size) -> Tensor:
    """Exact gradient of L(x + rho n(x)), n = g/||g||:  g' + (rho/||g||) H (I - n n^T) g'.

    The Jacobian of n is (I - n n^T) H / ||g||; its transpose applied to g' needs one Hessian-vector
    product at x, which keeps the full-batch case chunked instead of holding a double-backward graph
    over the whole batch.
    """
    scratch = _throwaway(objective)
    norm = norm + cfg.grad_eps
    n = g / norm
    g_prime = objective.grad(theta + cfg.rho * n, batch, chunk_size, scratch)
    projected = g_prime - n * (n @ g_prime)
    hessian = HessianOperator(objective, theta, batch, chunk_size, buffers=scratch, keep_graph=False)
    return g_prime + (cfg.rho / norm) * hessian.matvec(projected)


def _msam(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig, chunk_size: int) -> StepResult:
    """Per-group SAM gradients without per-example gradients in memory where the layers allow it
    (samcli/msam.py: factorized for Linear/Conv layers, the vmapped reference otherwise)."""
    m = cast(int, cfg.m)     # validation requires optimizer.m for msam
    return StepResult(*msam_direction(objective, theta, batch, cfg.rho, m, cfg.grad_eps, chunk_size))


# ---- the directions, by method name ---------------------------------------------------------------

DIRECTIONS: dict[str, Direction] = {
    "sgd": _from_gradient(_gradient),
    "sam": _from_gradient(_gradient_at_ascent_point(normalized=True)),
    "usam": _from_gradient(_gradient_at_ascent_point(normalized=False)),
    "msam": _msam,
    "ascent-gd": _from_gradient(_ascent_loss_gradient),
}


def register(method: MethodSpec, direction: Direction) -> MethodSpec:
    """Add a method: its spec (validation, grids, help read it) and its direction, under one name."""
    if method.name in DIRECTIONS:
        raise ConfigError(f"method {method.name!r} has a direction already; pick another name or unregister it first")
    spec.register(method)
    DIRECTIONS[method.name] = direction
    return method


def unregister(name: str) -> None:
    """Remove a method added by `register` (both halves)."""
    get_method(name)
    del spec.METHODS[name]
    DIRECTIONS.pop(name, None)


def direction_for(objective: Objective, cfg: OptimizerConfig) -> Direction:
    """The registered direction of cfg.method, checked against the objective once (a training loop
    looks it up before its first step, not on every step)."""
    method = get_method(cfg.method)
    if objective.buffers and not method.batchnorm:
        raise ConfigError(batchnorm_refusal(method))
    if method.name not in DIRECTIONS:
        raise ConfigError(f"optimizer.method={method.name} has a spec but no direction; "
                          "add it with samcli.methods.register(spec, direction)")
    return DIRECTIONS[method.name]
