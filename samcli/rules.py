"""The SAM family's one mechanism: a variant is a small rule on flat vectors, not a new code path.

A step of any rule here is
    g   = grad L_B(x)                       (skipped by rules with clean=False)
    e   = rule.perturb(ctx)                 (None: no second gradient this step)
    g_p = grad L_B'(x + e)                  (B' = B, or the examples rule.second_batch picks)
    d   = rule.combine(ctx, g_p)            (handed to the base optimizer)
`samcli.train` (through samcli/methods.py) and `samcli.optim.SAM` (a user's own loop, where the user's
backward passes supply g and g_p) both run these two functions, so the two cannot drift apart. A rule
keeps what it remembers between steps (an average, a cached direction) in `ctx.memory`, which lives
as long as the run or the optimizer.

`Layout` says which entries of the flat vector belong to which named tensor: rules that treat weights,
biases or filters differently (ASAM, random weight perturbation) read it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from .ascent import ascent_step


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the tensors a flat parameter vector is made of, in order."""
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, named: Sequence[tuple[str, Tensor]]) -> Layout:
        """The layout of (name, tensor) pairs flattened in this order."""
        return cls(tuple(n for n, _ in named), tuple(t.shape for _, t in named))

    def pieces(self) -> Iterator[tuple[str, slice, torch.Size]]:
        """(name, its slice of the flat vector, its shape), in order."""
        start = 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            yield name, slice(start, start + size), shape
            start += size

    def mask(self, keep: Callable[[str, torch.Size], bool], like: Tensor) -> Tensor:
        """A flat 0/1 vector (dtype and device of `like`): 1 on the tensors `keep(name, shape)` selects."""
        out = torch.zeros_like(like)
        for name, where, shape in self.pieces():
            if keep(name, shape):
                out[where] = 1
        return out


@dataclass
class StepContext:
    """What a rule sees in one step. `g` and `norm` (||g||) are None for a rule with clean=False;
    `memory` persists across the steps of one run; `momentum()` is the base optimizer's momentum
    buffer as a flat vector (None before the first step or without momentum)."""
    x: Tensor
    g: Optional[Tensor]
    norm: Optional[Tensor]
    cfg: Any                                   # the optimizer settings: rho and each parameter by name
    layout: Layout
    step: int                                  # 1 for a run's first step
    memory: dict = field(default_factory=dict)
    generator: Optional[torch.Generator] = None
    momentum: Callable[[], Optional[Tensor]] = lambda: None
    losses: Optional[Tensor] = None            # per-example losses at x, for a rule with example_losses


Perturb = Callable[[StepContext], Optional[Tensor]]
Combine = Callable[[StepContext, Optional[Tensor]], Any]


@dataclass(frozen=True)
class Rule:
    """A SAM-family update. `perturb` returns e (or None for a step without a second gradient) and
    `combine` the direction from the context's g and the second gradient g_p. `clean=False`: the rule
    needs no gradient at x (its only gradient is g_p; with e = None that step's gradient is at x).
    `second_batch(ctx, losses_at_point, batch)`, where set, picks the examples of the second pass
    (ESAM's data selection; `losses_at_point()` is the per-example losses at x + e, a forward only);
    `example_losses`: the clean pass also keeps the per-example losses at x in `ctx.losses`."""
    perturb: Perturb
    combine: Combine
    clean: bool = True
    second_batch: Optional[Callable[..., Any]] = None
    example_losses: bool = False
    # a term applied after the base optimizer's step, x <- x - lr * term, outside its momentum and weight
    # decay (decoupled WSAM); None from the function: nothing this step
    decoupled: Optional[Combine] = None


# ---- the paper's rules -----------------------------------------------------------------------------

def _no_perturbation(ctx: StepContext) -> None:
    return None


def _clean_gradient(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    assert ctx.g is not None
    return ctx.g


def _second_gradient(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    assert g_p is not None
    return g_p


def ascent(normalized: bool) -> Perturb:
    """SAM's e = rho g/(||g|| + eps), or USAM's rho g."""
    def perturb(ctx: StepContext) -> Tensor:
        assert ctx.g is not None
        eps = getattr(ctx.cfg, "grad_eps", 0.0)
        return ascent_step(ctx.g, ctx.cfg.rho, eps, normalized, ctx.norm)     # type: ignore[return-value]
    return perturb


SGD = Rule(_no_perturbation, _clean_gradient)
SAM = Rule(ascent(normalized=True), _second_gradient)
USAM = Rule(ascent(normalized=False), _second_gradient)
