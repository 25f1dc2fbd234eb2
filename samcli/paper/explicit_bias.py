"""Explicit biases of the sharpness-aware losses (Thm 4.2, Table 1, Thm E.4) on the figure-1 toy.

The theorem is about the MINIMIZERS of L_rho, not about any training dynamics: as rho -> 0,
approximate minimizers of

    L^Max_rho(x) = max_{||v|| <= rho} L(x + v)          -> argmin on Gamma of lambda_1 / 2 = F1
    L^Asc_rho(x) = L(x + rho g/||g||),  g = grad L(x)    -> argmin on Gamma of lambda_M / 2 = F2
    L^Avg_rho(x) = E_{u uniform on S^3} L(x + rho u)     -> argmin on Gamma of Tr / (2D) = (F1 + F2)/4

and L_rho / rho^2 tends to those limits' infima (docs/notions.md, "The rho -> 0 limits"; on Gamma
H = diag(0, 0, 2 F1, 2 F2), D = 4). So each loss is minimized itself, by L-BFGS with a strong-Wolfe
line search in float64: fixed-step GD stalls on L^Asc (curvature rho^2/dist^2 near Gamma).

- L^Max: the inner maximum lies on the sphere (d^2L/dx3^2 = 2 F1 > 0, so no interior point is a
  local maximum) and is found by the fixed-point iteration v <- rho grad L(x+v)/||grad L(x+v)||
  (monotone ascent where L is convex along the way) from 18 starts at once (the 8 axis directions,
  +-g/||g||, 8 seeded random ones), keeping the best. Gradient by Danskin: grad L(x + v*).
  L^Max is even in x3 and has a kink at x3 = 0 (two maximizers +-v*, gradient +-2 F1 rho in x3),
  right where its minimizer lies; L-BFGS stalls on that kink. So it is minimized over x3 = s^2:
  exact by the symmetry, and s -> L^Max(x1, x2, s^2, x4) is smooth with zero slope at s = 0.
- L^Asc: autograd through g/||g|| (the exact gradient, Jacobian of the normalization included).
  Its infimum is not attained: g = 0 on Gamma, where L^Asc is undefined (+infinity here). It is
  minimized over log-radius and angle of (x3, x4) (CHARTS below), and in rounds that stop when
  L/rho^2 gains under 1e-9, so its gap ends at about that resolution (1e-11 to 1e-7 measured).
- L^Avg: the mean over the 120 vertices of the 600-cell, a spherical 11-design: it equals the
  sphere average exactly for every polynomial of degree <= 11 in u. For polynomial F1, F2 of degree
  <= 9 (the built-in ones are quadratic) L^Avg is exact; otherwise its error is the degree >= 12
  Taylor remainder, O(rho^12 sup |d^12 L|). Being a fixed, antipodal point set, it is a
  deterministic smooth function, as the line search needs.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import SamcliError
from .toys import DT, Figure1Toy

D = 4
FIGURE1_START = (0.5, 1.0, 0.3, 0.3)        # the figure-1 study's default start
TOY_NOTIONS = ("max", "asc", "avg")
# notion -> (the minimizer it is drawn to, the limit of L_rho / rho^2 there, as a function of (F1, F2))
TARGETS = {"max": ("argmin F1", "lambda_1/2 = F1", lambda f1, f2: f1),
           "asc": ("argmin F2", "lambda_M/2 = F2", lambda f1, f2: f2),
           "avg": ("argmin F1+F2", "Tr/(2D) = (F1 + F2)/4", lambda f1, f2: (f1 + f2) / D)}


def toy_loss(toy: Figure1Toy, x: Tensor) -> Tensor:
    """L(x) = F1(x1, x2) x3^2 + F2(x1, x2) x4^2 over the last axis (x: (..., 4)); the same loss as
    toy.objective() on toy.data() (tested), written batched so many points cost one pass."""
    return toy.F1(x[..., 0], x[..., 1]) * x[..., 2] ** 2 + toy.F2(x[..., 0], x[..., 1]) * x[..., 3] ** 2


# ---- the average notion's directions -------------------------------------------------------------

def six_hundred_cell() -> Tensor:
    """The 120 unit vertices of the 600-cell (120, 4): a spherical 11-design, closed under u -> -u."""
    phi = (1 + math.sqrt(5)) / 2
    points = [sign * torch.eye(D, dtype=DT)[i] for i in range(D) for sign in (1.0, -1.0)]
    points += [0.5 * torch.tensor(signs, dtype=DT) for signs in itertools.product((1.0, -1.0), repeat=D)]
    base = (phi / 2, 0.5, 1 / (2 * phi), 0.0)
    for perm in itertools.permutations(range(D)):
        inversions = sum(perm[i] > perm[j] for i in range(D) for j in range(i + 1, D))
        if inversions % 2:
            continue
        for signs in itertools.product((1.0, -1.0), repeat=3):
            values = [s * b for s, b in zip(signs + (1.0,), base)]
            points.append(torch.tensor([values[perm.index(i)] for i in range(D)], dtype=DT))
    return torch.stack(points)


SPHERE_DESIGN = six_hundred_cell()


# ---- the three sharpness-aware losses --------------------------------------------------------------

def _unit_rows(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def worst_perturbation(toy: Figure1Toy, x: Tensor, rho: float, iterations: int = 500,
                       tol: float = 1e-12) -> Tensor:
    """argmax over ||v|| = rho of L(x + v) (see the module note for the method). Stops when no start's
    v moves by more than tol * rho: the value is then exact to about tol^2, the Danskin gradient to tol."""
    x = x.detach().to(DT)
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(toy_loss(toy, leaf), leaf)
    randoms = torch.randn(8, D, generator=torch.Generator().manual_seed(0), dtype=DT)
    starts = torch.cat([SPHERE_DESIGN[:2 * D], g.unsqueeze(0), -g.unsqueeze(0), randoms])
    starts = starts[starts.norm(dim=1) > 0]
    v = rho * _unit_rows(starts)
    for _ in range(iterations):
        with torch.enable_grad():
            points = (x + v).requires_grad_(True)
            (grads,) = torch.autograd.grad(toy_loss(toy, points).sum(), points)
        new = rho * _unit_rows(grads)
        moved = float((new - v).abs().max())
        v = new
        if moved <= tol * rho:
            break
    return v[int(toy_loss(toy, x + v).argmax())]


def max_loss(toy: Figure1Toy, x: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """L^Max_rho(x) and its Danskin gradient grad L(x + v*)."""
    v = worst_perturbation(toy, x, rho)
    with torch.enable_grad():
        point = (x.detach().to(DT) + v).requires_grad_(True)
        value = toy_loss(toy, point)
        (grad,) = torch.autograd.grad(value, point)
    return value.detach(), grad


def ascent_loss(toy: Figure1Toy, x: Tensor, rho: float) -> Tensor:
    """L^Asc_rho(x) = L(x + rho g/||g||), differentiable in x through g; +inf where g = 0."""
    with torch.enable_grad():
        point = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(toy_loss(toy, point), point, create_graph=x.requires_grad)
    norm = g.norm()
    if float(norm.detach()) == 0.0:
        return torch.full((), math.inf, dtype=x.dtype) + 0 * x.sum()
    return toy_loss(toy, x + rho * g / norm)


def average_loss(toy: Figure1Toy, x: Tensor, rho: float, directions: Tensor = SPHERE_DESIGN) -> Tensor:
    """L^Avg_rho(x): the mean of L(x + rho u) over `directions` (default the 600-cell design)."""
    return toy_loss(toy, x + rho * directions).mean()


def check_notion(notion: str, rho: float = 1.0) -> None:
    """Refuse an unknown notion name or a radius rho <= 0 with a SamcliError."""
    if notion not in TOY_NOTIONS:
        raise SamcliError(f"unknown sharpness notion {notion!r}; choose from {', '.join(TOY_NOTIONS)}")
    if not rho > 0:
        raise SamcliError(f"rho must be > 0, got {rho}")


def loss_and_grad(toy: Figure1Toy, notion: str, x: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """(L_rho(x), grad L_rho(x)) for notion in TOY_NOTIONS, float64."""
    check_notion(notion, rho)
    if notion == "max":
        return max_loss(toy, x, rho)
    with torch.enable_grad():
        leaf = x.detach().to(DT).requires_grad_(True)
        value = ascent_loss(toy, leaf, rho) if notion == "asc" else average_loss(toy, leaf, rho)
        if not torch.isfinite(value):
            return value.detach(), torch.full_like(leaf, math.nan)
        (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


# ---- minimizing them ------------------------------------------------------------------------------

# Coordinates z the line search works in, x = to_x(z), each a chart of the loss's whole domain:
# - max: x3 = z3^2 (L^Max is even in x3; its kink at x3 = 0 becomes a smooth zero slope).
# - asc: (x3, x4) = e^z3 (cos z4, sin z4). L^Asc is defined off Gamma only and its infimum lies AT
#   Gamma, where its curvature grows like rho^2/dist^2: in x the line search stalls once that
#   reaches 1e16 times the curvature along Gamma (seen with non-polynomial F1, F2), while in
#   log-radius and angle it stays of order rho^2.
# - avg: x = z.
def _squared_x3(z: Tensor) -> Tensor:
    return torch.cat([z[:2], z[2:3] ** 2, z[3:]])


def _polar(z: Tensor) -> Tensor:
    radius = torch.exp(z[2:3])
    return torch.cat([z[:2], radius * torch.cos(z[3:]), radius * torch.sin(z[3:])])


def _polar_start(x: list) -> list:
    radius = math.hypot(x[2], x[3])
    if radius == 0:
        raise SamcliError("L^Asc is undefined on Gamma (g = 0): start with (x3, x4) != (0, 0)")
    return [x[0], x[1], math.log(radius), math.atan2(x[3], x[2])]


ROUND, STALL = 50, 1e-9         # L-BFGS iterations per round; least gain in L_rho / rho^2 per round

CHARTS = {"max": (_squared_x3, lambda x: [x[0], x[1], math.sqrt(abs(x[2])), x[3]]),
          "asc": (_polar, _polar_start),
          "avg": (lambda z: z.clone(), lambda x: x)}


@dataclass(frozen=True)
class BiasResult:
    """One minimization of L^notion_rho from `start`."""
    notion: str
    rho: float
    start: tuple[float, ...]
    end: tuple[float, ...]             # (x1, x2, x3, x4)
    target_name: str                   # the minimizer on Gamma the theorem predicts
    target: tuple[float, float]        # its (x1, x2)
    distance: float                    # ||end (x1, x2) - target||
    off_gamma: float                   # ||end (x3, x4)||
    value_over_rho2: float             # L_rho(end) / rho^2
    limit_name: str
    predicted_infimum: float           # the limit regularizer at the target
    gap: float                         # value_over_rho2 - predicted_infimum
    iterations: int
    evaluations: int
    converged: bool                    # finite, and stopped before max_iter (by L-BFGS or a stalled round)
    grad_norm: float                   # ||grad L_rho(end)||: need not vanish (kink of L^Max, inf of L^Asc)

    def to_dict(self) -> dict:
        """The fields as a plain dict (for JSON)."""
        return dict(self.__dict__)


def minimize(toy: Figure1Toy, notion: str, rho: float, start: Sequence[float] = FIGURE1_START,
             max_iter: int = 1000, minimizers: dict | None = None) -> BiasResult:
    """Minimize L^notion_rho by L-BFGS (strong Wolfe, float64) from `start`."""
    check_notion(notion, rho)
    if len(start) != D:
        raise SamcliError(f"the start must be 4 numbers (x1, x2, x3, x4), got {list(start)}")
    minimizers = toy.minimizers((start[0], start[1])) if minimizers is None else minimizers
    z = torch.tensor(CHARTS[notion][1](list(start)), dtype=DT, requires_grad=True)
    to_x = CHARTS[notion][0]
    opt = torch.optim.LBFGS([z], lr=1, max_iter=ROUND, max_eval=4 * ROUND, tolerance_grad=1e-12,
                            tolerance_change=1e-16, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        with torch.enable_grad():
            x = to_x(z)
        value, grad = loss_and_grad(toy, notion, x.detach(), rho)
        if torch.isfinite(value):
            (z.grad,) = torch.autograd.grad(x, z, grad)
        else:
            z.grad = torch.full_like(z, math.nan)
        return value

    # In rounds, because L^Asc's infimum is not attained (the iterates creep toward Gamma forever):
    # done when a round gains less than STALL in L_rho / rho^2, or L-BFGS stops itself.
    state, previous, converged = opt.state[z], math.inf, False
    while not converged and state.get("n_iter", 0) < max_iter:
        before = state.get("n_iter", 0)
        opt.step(closure)
        scaled = float(loss_and_grad(toy, notion, to_x(z.detach()), rho)[0]) / rho ** 2
        converged = state["n_iter"] - before < ROUND or previous - scaled <= STALL * max(1.0, abs(scaled))
        previous = scaled
    end = to_x(z.detach())
    value, grad = loss_and_grad(toy, notion, end, rho)
    target_name, limit_name, limit = TARGETS[notion]
    target = minimizers[target_name]
    f1, f2 = (float(v) for v in toy.values(*target))
    infimum = limit(f1, f2)
    iterations = int(state.get("n_iter", 0))
    finite = bool(torch.isfinite(end).all() and torch.isfinite(value))
    return BiasResult(
        notion, rho, tuple(float(s) for s in start), tuple(float(e) for e in end), target_name, target,
        math.dist((float(end[0]), float(end[1])), target), float(end[2:].norm()), float(value) / rho ** 2,
        limit_name, infimum, float(value) / rho ** 2 - infimum, iterations, int(state.get("func_evals", 0)),
        finite and converged, float(grad.norm()))


def explicit_bias(toy: Figure1Toy, rhos: Sequence[float] = (0.3, 0.1, 0.05, 0.02),
                  notions: Sequence[str] = TOY_NOTIONS, start: Sequence[float] = FIGURE1_START,
                  max_iter: int = 1000) -> tuple[BiasResult, ...]:
    """Every (notion, rho) minimization, in the order notions x rhos."""
    for notion, rho in itertools.product(notions, rhos):      # all bad input refused before any work
        check_notion(notion, rho)
    minimizers = toy.minimizers((start[0], start[1]))
    return tuple(minimize(toy, notion, rho, start, max_iter, minimizers) for notion in notions for rho in rhos)


__all__ = ["FIGURE1_START", "TOY_NOTIONS", "TARGETS", "SPHERE_DESIGN", "BiasResult", "toy_loss", "six_hundred_cell",
           "check_notion", "worst_perturbation", "max_loss", "ascent_loss", "average_loss", "loss_and_grad", "minimize",
           "explicit_bias"]
