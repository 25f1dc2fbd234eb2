"""The method registry: each method is one `Method` entry (name, help, parameters, rules, direction).

Config validation, task building, grid expansion, the CLI's help and the paper read this registry,
so adding a method is one entry in `REGISTRY`. The update rules (see docs/methods.md),
each returning the direction handed to the base optimizer:
  sgd        d = grad L_B(x)                                   (B = all examples: GD)
  sam        d = grad L_B(x + rho g/||g||),  g = grad L_B(x)   (same batch B for both)
  usam       d = grad L_B(x + rho g)
  msam       d = mean_j grad L_{B_j}(x + rho g_j/||g_j||)      (groups B_j of m examples; samcli/msam.py)
  ascent-gd  d = grad_x L_B(x + rho g(x)/||g(x)||)             (exact: Jacobian term kept)

BatchNorm: the first (unperturbed) pass updates running statistics; every other pass runs on
throwaway copies of the buffers, so perturbed points never leak into the statistics.

This module sits below config.py (which validates through it), so it never imports config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

import torch
from torch import Tensor

from .ascent import ascent_step
from .curvature.hvp import HessianOperator
from .errors import ConfigError, unknown_choice
from .msam import msam_direction
from .objective import Batch, Objective

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
        if isinstance(self._grad_norm, Tensor):
            self._grad_norm = self._grad_norm.item()
        return self._grad_norm


Direction = Callable[[Objective, Tensor, Batch, "OptimizerConfig", int], StepResult]


@dataclass(frozen=True)
class Method:
    name: str
    help: str                          # one line, for the CLI
    parameters: frozenset[str]         # optimizer.* keys the update reads beyond the base optimizer's
    direction: Direction
    batchnorm: bool = True             # False: refused for models with BatchNorm statistics



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
    return StepResult(*msam_direction(objective, theta, batch, cfg.rho, cfg.m, cfg.grad_eps, chunk_size))


# ---- the registry ------------------------------------------------------------------------------------

REGISTRY: dict[str, Method] = {method.name: method for method in (
    Method("sgd", "gradient descent on the batch loss (batch_size: full gives GD)",
           frozenset(), _from_gradient(_gradient)),
    Method("sam", "gradient at the ascent point x + rho g/||g|| of the same batch",
           frozenset({"rho", "grad_eps"}), _from_gradient(_gradient_at_ascent_point(normalized=True))),
    Method("usam", "gradient at the unnormalized ascent point x + rho g",
           frozenset({"rho"}), _from_gradient(_gradient_at_ascent_point(normalized=False))),
    Method("msam", "mean over groups of m examples of each group's SAM gradient (m-sharpness)",
           frozenset({"rho", "m", "grad_eps"}), _msam, batchnorm=False),
    Method("ascent-gd", "exact gradient of the ascent-direction loss L(x + rho g/||g||), Jacobian kept",
           frozenset({"rho", "grad_eps"}), _from_gradient(_ascent_loss_gradient)),
)}


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise unknown_choice("optimizer.method", name, REGISTRY)
    return REGISTRY[name]


def applicable_parameters(name: str) -> set[str]:
    """The optimizer.* keys the method reads among those some method declares (grid axes)."""
    return set(get_method(name).parameters)


def unused_parameters(name: str) -> set[str]:
    """Keys other methods declare that this one ignores: a grid drops these axes for it."""
    return {p for method in REGISTRY.values() for p in method.parameters} - get_method(name).parameters


def descent_direction(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig,
                      chunk_size: int) -> StepResult:
    return direction_for(objective, cfg)(objective, theta, batch, cfg, chunk_size)


def direction_for(objective: Objective, cfg: OptimizerConfig) -> Direction:
    """The registered direction of cfg.method, checked against the objective once (a training loop
    looks it up before its first step, not on every step)."""
    method = get_method(cfg.method)
    if objective.buffers and not method.batchnorm:
        raise ConfigError(_batchnorm_refusal(method))
    return method.direction


# ---- validation ----------------------------------------------------------------------------------------

def validate_optimizer(cfg: OptimizerConfig, train_size: Optional[int] = None,
                       has_batchnorm: Optional[bool] = None) -> Method:
    """The method's own rules for an optimizer section; the training-set size and whether the model
    has BatchNorm statistics, where known, add the checks that need them."""
    method = get_method(cfg.method)
    bs = cfg.batch_size
    if train_size is not None and isinstance(bs, int) and bs > train_size:
        raise ConfigError(f"optimizer.batch_size={bs} exceeds the {train_size} training examples; "
                          "lower it or use 'full'")
    if "m" in method.parameters:
        _check_group_size(cfg, method.name, train_size)
    elif cfg.m is not None:
        users = sorted(name for name, other in REGISTRY.items() if "m" in other.parameters)
        raise ConfigError(f"optimizer.m={cfg.m} only applies to method {' or '.join(users)}; "
                          f"remove it or set method: {users[0]}")
    if has_batchnorm and not method.batchnorm:
        raise ConfigError(_batchnorm_refusal(method))
    return method


def _check_group_size(cfg: OptimizerConfig, name: str, train_size: Optional[int]) -> None:
    m, bs = cfg.m, cfg.batch_size
    if m is None:
        raise ConfigError(f"optimizer.m is required for method {name}; set it to a divisor of batch_size")
    if m < 1:
        raise ConfigError(f"optimizer.m={m} must be >= 1")
    if isinstance(bs, int) and bs % m:
        raise ConfigError(f"optimizer.m={m} does not divide optimizer.batch_size={bs}; pick m that divides it")
    if bs == "full" and train_size is not None and train_size % m:
        raise ConfigError(f"optimizer.m={m} does not divide the {train_size} training examples (full batch); "
                          "pick m that divides it")


def _batchnorm_refusal(method: Method) -> str:
    others = ", ".join(name for name, other in REGISTRY.items() if other.batchnorm)
    return (f"optimizer.method={method.name} cannot update BatchNorm statistics (its groups run under vmap); "
            f"use model.norm: group or none, or one of {others}")
