"""The three notions of sharpness (docs/notions.md), their rho -> 0 limits, per-example versions, alignment.

Everything is measured through `Objective.loss`, the same function training descends, with the
model in eval mode (BatchNorm uses its running statistics, so the loss is a fixed function of
theta). Every stochastic estimate is seeded and carries a standard error or residual.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from ..config import DEFAULT_NOTIONS, SHARPNESS_NOTIONS, MeasureConfig, SamcliError
from ..curvature.dense import dense_hessian, spectrum
from ..curvature.ggn import GGNOperator, parameter_blocks, supports_ggn
from ..curvature.ggn_trace import ggn_trace, piecewise_linear_reason
from ..curvature.hvp import HessianOperator
from ..curvature.lanczos import lanczos
from ..curvature.trace import TraceEstimate, ggn_control_variate, hutchpp
from ..ascent import ascent_step
from ..objective import Batch, Objective
from .adaptive import adaptive_sharpness
from .report import (AscentDirection, AverageDirection, ExactSpectrum, SharpnessReport, StochasticNotions,
                     WorstDirection)

NOTIONS = DEFAULT_NOTIONS           # what a measurement reports unless asked for more (SHARPNESS_NOTIONS)
# elements a vmapped batch of parameter vectors may hold at once (points x examples x D for the Monte
# Carlo, examples x Lanczos iterations x D for the per-example bases): 2^28, 2 GB in float64
VMAP_BUDGET = 2 ** 28


@dataclass(frozen=True)
class Settings:
    rho: float = 0.05
    notions: Sequence[str] = NOTIONS
    seed: int = 0
    k: int = 1                        # top-k eigenvalues
    lanczos_iters: int = 100
    # on ||Hv - lambda v|| / |lambda|; the eigenvalue error is about residual^2 / gap, far smaller
    # (reported as error_bound): 1e-3 gave lambda_1 to 1e-6 on the benchmark MLP
    lanczos_tol: float = 1e-3
    # Rademacher probes for the stochastic part of Tr(H): the GGN control variate spends one H and one
    # G product per probe and layer; Hutch++ (models without the exact GGN trace) spends 3 per probe.
    trace_probes: int = 4
    finite: bool = True               # also the finite-rho values (ascent on the sphere, Monte Carlo)
    ascent_iters: int = 20            # per restart of the worst-direction ascent
    ascent_restarts: int = 3
    # a restart ends when a step raises its estimate L(x + v) - L(x) by less than this fraction of it:
    # relative to the sharpness, not to the loss, whose float32 rounding on a full-data mean (~1e-6
    # of the sharpness on ResNet-18/digits) would otherwise read as gains and never stop the ascent
    ascent_tol: float = 1e-4
    directions: int = 64              # Monte Carlo directions for R^Avg (antithetic pairs)
    stochastic_examples: int = 32     # 0 turns the per-example notions off
    exact: bool = False
    zero_tol: float = 1e-6
    # adaptive sharpness perturbs by |w| * u with ||u|| <= adaptive_rho: |w| is ~0.1 in small nets, so
    # the paper's rho = 0.05 would move the loss below float32 resolution; 0.5 is in the range of
    # Andriushchenko et al. 2023's adaptive radii
    adaptive_rho: float = 0.5
    chunk_size: int = 4096


def measure(objective: Objective, theta: Tensor, data: Batch, settings: Settings = Settings()) -> SharpnessReport:
    """Measure the requested notions of L = mean loss over `data` at `theta`."""
    unknown = [n for n in settings.notions if n not in SHARPNESS_NOTIONS]
    if unknown:
        raise SamcliError(f"unknown sharpness notion {unknown[0]!r}; choose from {', '.join(SHARPNESS_NOTIONS)}")
    if not torch.isfinite(theta).all():
        raise SamcliError("the parameters are not finite (a diverged run?): sharpness is undefined there")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    part = _timer(seconds, theta.device)
    objective.set_training(False)
    theta = theta.detach()
    rho, chunk = settings.rho, settings.chunk_size
    generator = torch.Generator().manual_seed(settings.seed)
    hessian = HessianOperator(objective, theta, data, chunk)
    with part("gradient"):
        loss, g = objective.value_and_grad(theta, data, chunk)
        loss = loss.item()

    worst = top = None
    if "worst" in settings.notions or "ascent" in settings.notions:
        with part("lanczos"):
            top = lanczos(hessian.matmat, objective.dim, k=settings.k, max_iter=settings.lanczos_iters,
                          tol=settings.lanczos_tol, generator=generator, device=theta.device)
    if "worst" in settings.notions:
        with part("worst"):
            lam = top.eigenvalues[0].tolist()
            finite = (None, 0, 0, ())
            if settings.finite:
                finite = worst_direction_ascent(objective, theta, data, rho, top.eigenvectors[0, 0].to(theta.dtype),
                                                loss, settings, generator)
            worst = WorstDirection(tuple(lam), tuple(top.residuals[0].tolist()), bool(top.converged[0]),
                                   top.iterations, rho ** 2 * lam[0] / 2, *finite[:3], top.error_bounds[0, 0].item(),
                                   finite[3])

    ascent = alignment = None
    if "ascent" in settings.notions:
        with part("ascent"):
            g_norm = g.norm().item()
            if g_norm == 0.0:   # R^Asc is undefined at a stationary point; the paper sets it to +inf
                ascent = AscentDirection(math.inf, math.nan, math.inf, 0.0)
            else:
                n = g / g_norm
                value = objective.evaluate_loss(theta + ascent_step(g, rho, 0.0), data, chunk) - loss
                rayleigh = (n @ hessian.matvec(n)).item()
                ascent = AscentDirection(value, rayleigh, rho ** 2 * rayleigh / 2, g_norm)
                alignment = abs((n.to(torch.float64) @ top.eigenvectors[0, 0]).item())

    average = None
    if "average" in settings.notions:
        with part("average"):
            average = average_direction(objective, theta, data, hessian, loss, settings, generator)

    stochastic = None
    if settings.stochastic_examples:
        with part("stochastic"):
            stochastic = per_example_notions(objective, theta, data, settings, generator)

    exact = None
    if settings.exact:
        with part("exact"):
            spec = spectrum(dense_hessian(objective, theta, data, chunk), settings.zero_tol)
            d = objective.dim
            exact = ExactSpectrum(spec.lambda_1, spec.lambda_min_nonzero, spec.trace, spec.rank, settings.zero_tol,
                                  rho ** 2 * spec.lambda_1 / 2, rho ** 2 * spec.lambda_min_nonzero / 2,
                                  rho ** 2 * spec.trace / (2 * d))
    adaptive = None
    if "adaptive" in settings.notions:
        with part("adaptive"):
            adaptive = adaptive_sharpness(
                objective, theta, data, settings.adaptive_rho, loss=loss, restarts=settings.ascent_restarts,
                ascent_iters=settings.ascent_iters, ascent_tol=settings.ascent_tol, directions=settings.directions,
                lanczos_iters=settings.lanczos_iters, lanczos_tol=settings.lanczos_tol,
                trace_probes=settings.trace_probes, finite=settings.finite, seed=settings.seed, chunk_size=chunk)
    return SharpnessReport(rho, len(data), objective.dim, loss, "eval", settings.seed, worst, ascent, average,
                           alignment, stochastic, exact, time.perf_counter() - started, seconds, adaptive)


def _timer(seconds: dict[str, float], device):
    """`with part(name):` adds the block's wall seconds to seconds[name]. The Lanczos run serves both
    the worst direction (lambda_1) and the ascent notion's alignment, so it is its own entry."""
    @contextmanager
    def part(name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)     # kernels run asynchronously; charge them to their part
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    return part


# ---- worst direction at finite rho -----------------------------------------------------------

def worst_direction_ascent(objective, theta, data, rho, v1, loss, settings: Settings, generator):
    """max_{||v|| <= rho} L(x + v) by ascent on the sphere, restarts from rho v_1 and random points.

    The update v <- rho normalize((1 - b) v/rho + b grad/||grad||) with the KKT fixed point
    v ∝ grad L(x + v); b starts at 1 (the fixed-point iteration, power iteration on H at a
    minimizer) and halves whenever a step does not increase the loss, so the value never drops.
    A restart ends after `ascent_iters` steps, when b falls below 1e-3, or when an accepted step
    gains less than `ascent_tol` of the current estimate L(x + v) - L(x).
    Returns (best value, gradient evaluations, restarts, the value each restart reached).
    """
    chunk = settings.chunk_size
    starts = [v1] + [torch.randn(objective.dim, generator=generator).to(theta) for _ in range(settings.ascent_restarts - 1)]
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


# ---- average direction -------------------------------------------------------------------------

def average_direction(objective, theta, data, hessian, loss, settings: Settings, generator) -> AverageDirection:
    d, rho = objective.dim, settings.rho
    estimate = trace_estimate(objective, theta, data, hessian, settings, generator)
    finite = finite_stderr = None
    if settings.finite:
        finite, finite_stderr = average_direction_monte_carlo(objective, theta, data, loss, settings, generator)
    return AverageDirection(estimate.value, estimate.stderr, estimate.method, estimate.matvecs, estimate.ggn_trace,
                            rho ** 2 * estimate.value / (2 * d), finite, finite_stderr,
                            settings.directions if settings.finite else 0)


def trace_estimate(objective, theta, data, hessian, settings: Settings, generator) -> TraceEstimate:
    """Tr(H) by the best path the network allows; `method` says which and why:
    exact Tr(G) when f is linear in each single parameter (piecewise-linear nets: Tr(H) = Tr(G));
    Tr(G) exact plus block Hutchinson on H - G for other networks; Hutch++ when no per-example
    Gauss-Newton identity exists (toys, other losses, BatchNorm on batch statistics)."""
    d = objective.dim
    ggn = ggn_trace(objective, theta, data, settings.chunk_size)
    if ggn is None:
        estimate = hutchpp(hessian.matmat, d, 3 * max(settings.trace_probes, 2), generator, theta.dtype, theta.device)
        return replace(estimate, method=f"hutch++: {_no_ggn_reason(objective)}")
    smooth = piecewise_linear_reason(objective)
    if smooth is None:
        return TraceEstimate(ggn.value, 0.0, f"exact Tr(G), {ggn.describe()}; piecewise-linear so Tr(H) = Tr(G)",
                             0, 0, ggn.value)
    operator = GGNOperator(objective, theta, data, settings.chunk_size)
    estimate = ggn_control_variate(hessian.matmat, operator.matmat, ggn.value, _block_masks(objective, theta), d,
                                   max(settings.trace_probes, 2), generator, theta.dtype, theta.device)
    return replace(estimate, method=f"ggn+block-hutchinson: Tr(G) exact ({ggn.describe()}) plus "
                                                f"block Hutchinson on H - G, since {smooth}")


def _no_ggn_reason(objective) -> str:
    if not supports_ggn(objective):
        return "the loss is not a cross-entropy or squared error of a module's outputs, so no exact Tr(G)"
    return "a BatchNorm uses batch statistics, which couple the examples: no per-example Tr(G)"


def _block_masks(objective: Objective, theta: Tensor) -> list[Tensor]:
    offsets = [0]
    for size in objective.sizes:
        offsets.append(offsets[-1] + size)
    masks = []
    for block in parameter_blocks(objective):
        mask = torch.zeros(objective.dim, dtype=theta.dtype, device=theta.device)
        for i in block:
            mask[offsets[i]:offsets[i + 1]] = 1
        masks.append(mask)
    return masks


def average_direction_monte_carlo(objective, theta, data, loss, settings: Settings, generator) -> tuple[float, float]:
    """E_u L(x + rho u) - L(x), u = z/||z||, in antithetic pairs: the pair mean
    (L(x + rho u) + L(x - rho u))/2 cancels the first-order term rho g.u exactly."""
    pairs = max(settings.directions // 2, 2)
    z = torch.randn(pairs, objective.dim, generator=generator).to(theta)
    u = settings.rho * z / z.norm(dim=1, keepdim=True)
    points = torch.cat([theta + u, theta - u])
    values = torch.zeros(2 * pairs, dtype=torch.float64, device=theta.device)
    for chunk in data.chunks(settings.chunk_size):
        # vmapping every point at once holds points x examples x activations; on a ResNet-18 that is
        # tens of GB, and a vmapped convolution with batched weights is no faster than a loop
        group = max(1, VMAP_BUDGET // (len(chunk) * objective.dim))
        for start in range(0, 2 * pairs, group):
            per_point = vmap(lambda t: objective.loss(t, chunk))(points[start:start + group])
            values[start:start + group] += per_point.to(torch.float64) * (len(chunk) / len(data))
    pair_means = (values[:pairs] + values[pairs:]) / 2 - loss
    return pair_means.mean().item(), pair_means.std().item() / math.sqrt(pairs)


# ---- per-example (stochastic) notions ----------------------------------------------------------

def per_example_notions(objective, theta, data, settings: Settings, generator) -> StochasticNotions:
    """E_k lambda_1(grad^2 L_k) by S lock-step Lanczos runs (vmapped per-example HVPs) and
    E_k [L_k(x + rho g_k/||g_k||) - L_k(x)], on a seeded sample of S examples."""
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
        result = lanczos(lambda vs: vmap(example_hvp)(vs, xs[part], ys[part]), objective.dim, k=1,
                         batch=len(xs[part]), max_iter=iterations, tol=1e-3,
                         start=shared_start.expand(len(xs[part]), -1), device=theta.device)
        lams.append(result.eigenvalues[:, 0])
        residuals.append(result.residuals[:, 0])
    lam, residual = torch.cat(lams), torch.cat(residuals)

    losses, grads = vmap(lambda x, y: (example_loss(theta, x, y), grad(example_loss)(theta, x, y)))(xs, ys)
    norms = grads.norm(dim=1, keepdim=True)
    perturbed = theta + vmap(lambda g: ascent_step(g, settings.rho, 1e-30))(grads)
    ascent = vmap(example_loss)(perturbed, xs, ys) - losses
    ascent = ascent[norms.squeeze(1) > 0].to(torch.float64)   # undefined where g_k = 0
    sqrt_n = math.sqrt(max(count, 1))
    return StochasticNotions(count, lam.mean().item(), lam.std().item() / sqrt_n if count > 1 else math.nan,
                             residual.max().item(), ascent.mean().item(),
                             ascent.std().item() / math.sqrt(len(ascent)) if len(ascent) > 1 else math.nan)


# ---- entry points --------------------------------------------------------------------------------

def measure_during_training(objective, theta, data, cfg: MeasureConfig, chunk_size: int) -> dict[str, float]:
    """The cheap part (limits, alignment, ascent value) for metrics.jsonl every `measure.every` steps."""
    sample = data
    if cfg.samples is not None and cfg.samples < len(data):
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.samples]
        sample = data.take(index.to(data.inputs.device))
    settings = Settings(rho=cfg.rho, notions=tuple(cfg.notions), seed=cfg.seed, lanczos_iters=cfg.lanczos_iters,
                        trace_probes=cfg.trace_probes, finite=False, stochastic_examples=0, chunk_size=chunk_size)
    report = measure(objective, theta, sample, settings)
    return {f"sharp_{k}": v for k, v in report.summary().items() if k != "loss"}
