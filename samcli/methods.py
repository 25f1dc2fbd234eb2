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
from typing import TYPE_CHECKING, Optional, Union, cast

import torch
from torch import Tensor

from . import family, rules
from .ascent import ascent_step  # noqa: F401  (re-exported: tests and notebooks import it from here)
from .curvature.hvp import HessianOperator
from .errors import ConfigError
from .msam import msam_direction
from .objective import Batch, Objective
from .rules import Layout, Rule, StepContext
from .spec import methods as spec
from .spec.methods import MethodSpec, batchnorm_refusal, get_method, null_method

if TYPE_CHECKING:
    from .config import OptimizerConfig


class StepResult:
    """What a method returns: the direction the base optimizer descends along, and L_B and
    ||grad L_B|| at the unperturbed point. The norm may come as a 0-dim tensor, read (a device sync)
    only when `grad_norm` is asked for, which the training loop never does. The direction is valid
    until the next direction at the same objective: inside `Objective.bound` it is a buffer the next
    pass overwrites, so a caller that keeps one across steps copies it (the loop uses each at once)."""
    __slots__ = ("direction", "loss", "_grad_norm", "decoupled")

    def __init__(self, direction: Tensor, loss: float, grad_norm: Union[float, Tensor],
                 decoupled: Optional[Tensor] = None):
        self.direction, self.loss, self._grad_norm = direction, loss, grad_norm
        # a term the loop applies after the base optimizer's step, x <- x - lr * term (decoupled WSAM)
        self.decoupled = decoupled

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


def _rule_direction(rule: Rule, objective: Objective, seed: int,
                    momentum: Callable[[], Optional[Tensor]]) -> Direction:
    """One run's direction for a rule of samcli/rules.py: the step context (its memory, step count and
    random generator) lives as long as this closure. The clean pass at x is the one that updates
    BatchNorm statistics; the second runs on throwaway copies (a rule without a clean pass updates
    them at its only point: its spec refuses BatchNorm where that is wrong)."""
    layout = Layout(tuple(objective.names), tuple(objective.shapes))
    ctx = StepContext(x=torch.empty(0), g=None, norm=None, cfg=None, layout=layout, step=0,
                      generator=torch.Generator().manual_seed(seed), momentum=momentum)

    def direction(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig,
                  chunk_size: int) -> StepResult:
        ctx.x, ctx.cfg, ctx.step = theta, cfg, ctx.step + 1
        loss: Optional[Tensor] = None
        if rule.clean and rule.example_losses:
            loss, ctx.g, ctx.losses = objective.value_grad_and_losses(theta, batch, chunk_size)
        elif rule.clean:
            loss, ctx.g = objective.value_and_grad(theta, batch, chunk_size)
        if rule.clean:
            ctx.norm = torch.linalg.vector_norm(ctx.g)   # g.norm()'s own kernel, without torch.norm's Python dispatch
        e = rule.perturb(ctx)
        g_p = None
        if e is not None:
            point = objective.shifted(theta, e)
            second = batch if rule.second_batch is None else rule.second_batch(
                ctx, lambda: objective.per_example_losses(point, batch, _throwaway(objective)), batch)
            if rule.clean:
                g_p = objective.grad(point, second, chunk_size, _throwaway(objective))
            else:
                loss, g_p = objective.value_and_grad(point, second, chunk_size)
        elif not rule.clean:        # no perturbation this step: the one gradient is at x
            loss, g_p = objective.value_and_grad(theta, batch, chunk_size)
        assert loss is not None
        d = rule.combine(ctx, g_p)
        after = rule.decoupled(ctx, g_p) if rule.decoupled is not None else None
        return StepResult(d, loss.item(), ctx.norm if ctx.norm is not None else torch.linalg.vector_norm(d), after)
    return direction


def _ascent_loss_gradient(objective, theta, batch, cfg, chunk_size) -> StepResult:
    """Exact gradient of L(x + rho n(x)), n = g/||g||:  g' + (rho/||g||) H (I - n n^T) g'.

    The Jacobian of n is (I - n n^T) H / ||g||; its transpose applied to g' needs one Hessian-vector
    product at x, which keeps the full-batch case chunked instead of holding a double-backward graph
    over the whole batch.
    """
    loss, g = objective.value_and_grad(theta, batch, chunk_size)
    norm = torch.linalg.vector_norm(g)
    scratch = _throwaway(objective)
    n = g / (norm + cfg.grad_eps)
    g_prime = objective.grad(theta + cfg.rho * n, batch, chunk_size, scratch)
    projected = g_prime - n * (n @ g_prime)
    hessian = HessianOperator(objective, theta, batch, chunk_size, buffers=scratch, keep_graph=False)
    return StepResult(g_prime + (cfg.rho / (norm + cfg.grad_eps)) * hessian.matvec(projected), loss.item(), norm)


def _msam(objective: Objective, theta: Tensor, batch: Batch, cfg: OptimizerConfig, chunk_size: int) -> StepResult:
    """Per-group SAM gradients without per-example gradients in memory where the layers allow it
    (samcli/msam.py: factorized for Linear/Conv layers, the vmapped reference otherwise)."""
    m = cast(int, cfg.m)     # validation requires optimizer.m for msam
    return StepResult(*msam_direction(objective, theta, batch, cfg.rho, m, cfg.grad_eps, chunk_size))


# ---- the directions, by method name: a rule (samcli/rules.py) or a direction function ---------------

DIRECTIONS: dict[str, Union[Rule, Direction]] = {
    "sgd": rules.SGD,
    "sam": rules.SAM,
    "usam": rules.USAM,
    "msam": _msam,
    "ascent-gd": _ascent_loss_gradient,
    # -- the SAM family (samcli/family.py)
    "asam": family.ASAM,
    "gsam": family.GSAM,
    "looksam": family.LOOKSAM,
    "fsam": family.FSAM,
    "wsam": family.WSAM,
    "momentum-sam": family.MOMENTUM_SAM,
    "esam": family.ESAM,
    "rwp": family.RWP,
}


def register(method: MethodSpec, direction: Union[Rule, Direction]) -> MethodSpec:
    """Add a method: its spec (validation, grids, help read it) and its update, under one name: a
    `samcli.rules.Rule` (then `samcli.optim.SAM` runs it too) or a direction function."""
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


def direction_for(objective: Objective, cfg: OptimizerConfig, *, seed: int = 0,
                  momentum: Callable[[], Optional[Tensor]] = lambda: None) -> Direction:
    """One run's direction for cfg.method, checked against the objective once (a training loop looks
    it up before its first step, not on every step). A method at its null setting (rho = 0 for the
    SAM family) runs sgd's direction: the same steps as SGD, bit for bit, at the cost of one gradient.
    `seed` seeds a rule's random draws; `momentum()` returns the base optimizer's momentum buffer."""
    method = get_method(cfg.method)
    if objective.buffers and not method.batchnorm:
        raise ConfigError(batchnorm_refusal(method))
    if method.name not in DIRECTIONS:
        raise ConfigError(f"optimizer.method={method.name} has a spec but no direction; "
                          "add it with samcli.methods.register(spec, direction)")
    update = DIRECTIONS[null_method(method, cfg) or method.name]
    if isinstance(update, Rule):
        return _rule_direction(update, objective, seed, momentum)
    return update
