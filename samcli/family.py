"""The SAM family beyond the paper's methods: each variant is a `Rule` of samcli/rules.py, a perturbation
and a combination on flat vectors, so `samcli.train` and `samcli.optim.SAM` run the same code.

docs/methods.md gives each formula, its source and every choice a paper leaves open (taken from the
authors' code, and where a peer implementation differs, how). Notation: g = grad L_B(x) (the clean
gradient), g_p = the gradient at the perturbed point, n(v) = v / (||v|| + grad_eps).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

from .rules import Rule, StepContext, ascent


def _eps(ctx: StepContext) -> float:
    return getattr(ctx.cfg, "grad_eps", 0.0) or 0.0


def _unit(v: Tensor, eps: float) -> Tensor:
    return v / (torch.linalg.vector_norm(v) + eps)


def _second_gradient(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    assert g_p is not None
    return g_p


# ---- asam (Kwon et al. 2021) -----------------------------------------------------------------------

def is_weight(name: str, shape: torch.Size) -> bool:
    """ASAM's rule for which tensors T scales: those named `weight` (normalization layers' too, as in
    the authors' code), not biases."""
    return name.rsplit(".", 1)[-1] == "weight"


def elementwise_scale(x: Tensor, eta: float, scaled: Optional[Tensor] = None) -> Tensor:
    """The diagonal of T = diag(|w| + eta): on the entries where `scaled` (a 0/1 vector) is 1, and 1
    elsewhere; every entry when `scaled` is None. ASAM's perturbation and the adaptive sharpness notion
    (samcli/sharpness/adaptive.py, all entries, eta 0) share it."""
    t = x.detach().abs() + eta
    return t if scaled is None else torch.where(scaled.bool(), t, torch.ones_like(t))


def _asam_perturb(ctx: StepContext) -> Tensor:
    assert ctx.g is not None
    if "weights" not in ctx.memory:             # the layout is fixed for a run: its mask is made once
        ctx.memory["weights"] = None if ctx.cfg.asam_biases else ctx.layout.mask(is_weight, ctx.x)
    t = elementwise_scale(ctx.x, ctx.cfg.eta, ctx.memory["weights"])
    tg = t * ctx.g
    return (ctx.cfg.rho / (torch.linalg.vector_norm(tg) + _eps(ctx))) * (t * tg)   # rho T^2 g / ||T g||


ASAM = Rule(_asam_perturb, _second_gradient)


# ---- gsam (Zhuang et al. 2022) ---------------------------------------------------------------------

def _gsam_combine(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    assert ctx.g is not None and g_p is not None
    # g_perp: the part of g orthogonal to g_p; descending along -g_perp lowers the surrogate gap
    g_perp = ctx.g - (ctx.g @ g_p) / (g_p @ g_p + _eps(ctx)) * g_p
    return g_p - ctx.cfg.alpha * g_perp


GSAM = Rule(ascent(normalized=True), _gsam_combine)


# ---- looksam (Liu et al. 2022) ---------------------------------------------------------------------

def _looksam_perturb(ctx: StepContext) -> Optional[Tensor]:
    # a full SAM step at steps 1, k + 1, 2k + 1, ...; None: no second gradient this step
    return ascent(normalized=True)(ctx) if (ctx.step - 1) % ctx.cfg.k == 0 else None


def _looksam_combine(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    g = ctx.g
    assert g is not None
    if g_p is not None:
        # g_v: the part of the SAM gradient orthogonal to g, kept for the next k - 1 steps
        ctx.memory["g_v"] = g_p - (g_p @ g) / (g @ g + _eps(ctx)) * g
        return g_p
    g_v = ctx.memory["g_v"]
    return g + ctx.cfg.alpha * (ctx.norm / (torch.linalg.vector_norm(g_v) + _eps(ctx))) * g_v


LOOKSAM = Rule(_looksam_perturb, _looksam_combine)


# ---- fsam: FriendlySAM (Li et al. 2024) ------------------------------------------------------------

def _fsam_perturb(ctx: StepContext) -> Tensor:
    g, cfg = ctx.g, ctx.cfg
    assert g is not None
    average = ctx.memory.get("average")
    if average is None:           # the authors' code: the average starts at the first gradient, which ascends unchanged
        ctx.memory["average"] = g.clone()
        a = g
    else:
        a = g - cfg.sigma * average                          # the batch-specific part of g
        average.mul_(cfg.lmbda).add_(g, alpha=1 - cfg.lmbda)     # updated after the subtraction
    return cfg.rho * _unit(a, _eps(ctx))


FSAM = Rule(_fsam_perturb, _second_gradient)


# ---- wsam (Yue et al. 2023) ------------------------------------------------------------------------

def _wsam_combine(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    assert ctx.g is not None and g_p is not None
    if ctx.cfg.wsam_decouple:          # the base optimizer sees the loss's gradient alone
        return ctx.g
    gamma = ctx.cfg.wsam_gamma
    # the gradient of L + gamma/(1 - gamma) (L(x + e) - L): sharpness weighted apart from the loss
    return ((1 - 2 * gamma) * ctx.g + gamma * g_p) / (1 - gamma)


def _wsam_sharpness_step(ctx: StepContext, g_p: Optional[Tensor]) -> Optional[Tensor]:
    assert ctx.g is not None and g_p is not None
    if not ctx.cfg.wsam_decouple:
        return None
    gamma = ctx.cfg.wsam_gamma
    return (gamma / (1 - gamma)) * (g_p - ctx.g)     # the sharpness term, outside momentum and weight decay


WSAM = Rule(ascent(normalized=True), _wsam_combine, decoupled=_wsam_sharpness_step)


# ---- momentum-sam (Becker et al. 2024) -------------------------------------------------------------

def _momentum_perturb(ctx: StepContext) -> Optional[Tensor]:
    v = ctx.momentum()
    if v is None:                 # the first step: no buffer yet, a plain gradient step (as the authors' zero buffer)
        return None
    # the authors' code perturbs to x - rho v/||v||, v the buffer of x <- x - lr v (their "negative momentum")
    return -ctx.cfg.rho * _unit(v, _eps(ctx))


MOMENTUM_SAM = Rule(_momentum_perturb, _second_gradient, clean=False)


# ---- esam (Du et al. 2022) -------------------------------------------------------------------------

def _esam_perturb(ctx: StepContext) -> Tensor:
    g, cfg = ctx.g, ctx.cfg
    assert g is not None
    # stochastic weight perturbation: each tensor perturbed with probability beta, the step scaled by 1/beta
    draws = torch.rand(len(ctx.layout.names), generator=ctx.generator) < cfg.esam_beta
    kept = dict(zip(ctx.layout.names, draws.tolist()))
    masked = g * ctx.layout.mask(lambda name, shape: kept[name], g)
    return (cfg.rho / cfg.esam_beta) * _unit(masked, _eps(ctx))


def esam_selection(before: Tensor, after: Tensor, gamma: float) -> Tensor:
    """Sharpness-sensitive data selection: the indices of the round(gamma n) examples (at least one)
    whose loss rose most from x to x + e."""
    count = max(1, round(gamma * before.numel()))
    return torch.topk(after - before, count).indices


def _esam_second_batch(ctx: StepContext, losses_at_point: Callable[[], Tensor], batch: Any) -> Any:
    if ctx.cfg.esam_gamma >= 1:
        return batch
    assert ctx.losses is not None
    with torch.no_grad():
        after = losses_at_point()        # a forward only: no gradient, no BatchNorm update
    return batch.take(esam_selection(ctx.losses, after, ctx.cfg.esam_gamma))


ESAM = Rule(_esam_perturb, _second_gradient, second_batch=_esam_second_batch, example_losses=True)


# ---- rwp: random weight perturbation (Li et al. 2024) ----------------------------------------------

def _rwp_perturb(ctx: StepContext) -> Tensor:
    x, sigma = ctx.x.detach(), ctx.cfg.rwp_sigma
    std = torch.empty_like(x)
    for _, where, shape in ctx.layout.pieces():
        w = x[where]
        if len(shape) > 1:      # per filter (output unit): std sigma ||row||
            rows = w.view(shape[0], -1)
            std[where].view_as(rows).copy_(torch.linalg.vector_norm(rows, dim=1, keepdim=True).expand_as(rows))
        else:                   # a bias or a normalization vector: its whole norm
            std[where] = torch.linalg.vector_norm(w)
    # one draw for the whole vector (the run's generator lives on the CPU)
    return torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype).to(x.device).mul_(std).mul_(sigma)


def _rwp_combine(ctx: StepContext, g_p: Optional[Tensor]) -> Tensor:
    assert ctx.g is not None and g_p is not None
    alpha = ctx.cfg.alpha
    return (1 - alpha) * ctx.g + alpha * g_p


RWP = Rule(_rwp_perturb, _rwp_combine)
