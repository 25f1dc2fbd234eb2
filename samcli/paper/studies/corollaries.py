"""corollaries: the paper's corollaries and rates, where they are cheap to check.

- Cor 4.6: along full-batch SAM's iterates (Phase II) the worst-direction sharpness R^Max_rho(x_t) lies
  within O(eta rho^2 ln(1/rho)) of rho^2 lambda_1(Phi(x_t)) / 2; on the quadratic (Gamma = {0}; R^Max by
  the trust-region secular equation, exact) and on the figure-1 toy (R^Max by samcli.paper.explicit_bias).
- Cor 5.6: along 1-SAM's iterates the stochastic notions E_k R_k (worst and ascent direction) lie within
  O((eta^(1/4) + rho^(1/4)) rho^2) of rho^2 Tr(Phi(x_t)) / 2 (the toy; its two examples are L_0 = 2 F1 x3^2
  and L_1 = 2 F2 x4^2).
- An O(.) has no constant, so what is checked is its scaling: the deviation divided by the bound's rate
  must not grow along a sequence of (eta, rho) that shrinks inside the theorem's regime.
- Thm 5.3: at a point of Gamma of the network (GD's interpolating point, moved onto Gamma by Gauss-Newton
  steps), the stochastic worst-, ascent- and average-direction notions all tend to the trace as rho -> 0:
  E_k R^Max_k / (rho^2/2), E_k R^Asc_k / (rho^2/2) and R^Avg 2D / rho^2 against Tr(H) = mean_k ||grad f_k||^2.
- Thm 4.5's rate: SAM tracks its flow with error O(eta ln(1/rho)) as rho/eta -> 0: on the toy, the gap
  |Phi(x_t) - X(tau)| at one tau, divided by eta ln(1/rho), must not grow along (eta, rho) pairs with
  shrinking rho/eta.
- Phase I (Thm 4.5): SAM reaches an O(eta rho) neighbourhood of Gamma within O(ln(1/rho)/eta) steps: the
  steps until dist(Gamma) <= 2 eta rho lambda_1 / (2 - eta lambda_1), times eta / ln(1/rho), stay within a
  factor 2 of each other over (eta, rho) pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import torch
from torch.func import grad, vmap

from ...config import SamcliError
from .. import plots, regimes
from ..configs import COUNT, FINITE, NONNEGATIVE, POSITIVE, SEED, UNIT, Rule, at_least, require
from ..drift import Regression, output_jacobian
from ..explicit_bias import max_loss, toy_loss
from ..flows import ManifoldFlow
from ..skeleton import Findings, Log, write_table
from ..toys import DT, Figure1Toy, Quadratic, quadratic, random_unit
from ..trajectory import optimizer_settings, run_trajectory
from .corcontrols import full_batch_worst
from .netsetup import NetworkSetup, interpolating_point


@dataclass
class CorollariesConfig:
    """The corollaries study's settings: the (eta, rho) sequences, step counts and tolerances."""
    quad_eigenvalues: list[float] = field(default_factory=lambda: [10.0, 8.0, 6.0, 4.5, 3.0, 2.0])
    quad_pairs: list[list[float]] = field(default_factory=lambda: [[0.08, 0.024], [0.04, 0.012], [0.02, 0.006]])
    quad_steps: int = 1500
    # the toy's band runs start next to Gamma at their own flow's fixed point (argmin F1 for SAM, argmin F1+F2
    # for 1-SAM), so every (eta, rho) is measured at (nearly) the same point of Gamma
    toy_offset: list[float] = field(default_factory=lambda: [0.01, 0.01])
    sam_pairs: list[list[float]] = field(default_factory=lambda: [[0.08, 0.024], [0.04, 0.012], [0.02, 0.006]])
    one_sam_pairs: list[list[float]] = field(default_factory=lambda: [[0.04, 0.1], [0.02, 0.05], [0.01, 0.025]])
    toy_steps: int = 1200              # per pair; Cor 4.6 / 5.6 judged on the second half
    points: int = 10                   # iterates measured per run
    growth_tol: float = 0.25           # deviation / rate may grow at most this much along the sequence
    phase1_pairs: list[list[float]] = field(default_factory=lambda: [[0.08, 0.024], [0.08, 0.006], [0.04, 0.012],
                                                                    [0.02, 0.006]])
    phase1_start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.3, 0.3])
    phase1_max_steps: int = 4000
    phase1_spread: float = 2.0         # max/min of steps eta / ln(1/rho) over the pairs
    gap_pairs: list[list[float]] = field(default_factory=lambda: [[0.08, 0.024], [0.056, 0.0112], [0.04, 0.006]])
    gap_tau: float = 0.01              # SAM vs its flow at this tau, from gap_start (next to Gamma)
    gap_start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.001, 0.001])
    network_rhos: list[float] = field(default_factory=lambda: [0.1, 0.03, 0.01, 0.003])
    network: NetworkSetup = field(default_factory=NetworkSetup)
    gauss_newton_steps: int = 6
    directions: int = 256              # antithetic pairs for R^Avg
    tol_trace: float = 0.01            # Thm 5.3: worst and ascent within this (relative) of Tr at the smallest rho
    seed: int = 0
    threads: int = 1
    RULES: ClassVar[dict[str, Rule]] = {
        "quad_eigenvalues": POSITIVE, "quad_pairs": POSITIVE, "quad_steps": at_least(4), "toy_offset": FINITE,
        "sam_pairs": POSITIVE, "one_sam_pairs": POSITIVE, "toy_steps": at_least(4), "points": at_least(2),
        "growth_tol": NONNEGATIVE, "phase1_pairs": POSITIVE, "phase1_start": FINITE, "phase1_max_steps": COUNT,
        "phase1_spread": at_least(1), "gap_pairs": POSITIVE, "gap_tau": POSITIVE, "gap_start": FINITE,
        "network_rhos": UNIT, "gauss_newton_steps": NONNEGATIVE, "directions": COUNT, "tol_trace": POSITIVE,
        "seed": SEED, "threads": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        for name in ("quad_pairs", "sam_pairs", "one_sam_pairs", "phase1_pairs", "gap_pairs"):
            pairs = getattr(self, name)
            require(len(pairs) >= 2 and all(len(p) == 2 and p[0] > 0 and 0 < p[1] < 1 for p in pairs),
                    f"{name} must list >= 2 [lr, rho] pairs with lr > 0 and 0 < rho < 1")
        require(len(self.toy_offset) == 2 and len(self.phase1_start) == 4 and len(self.gap_start) == 4,
                "toy_offset: 2 numbers; phase1_start and gap_start: 4")
        require(len(self.network_rhos) >= 2, "network_rhos must list >= 2 radii")
        self.network.validate()


def corollaries(cfg: CorollariesConfig, out: Path, log: Log, toy: Optional[Figure1Toy] = None) -> Findings:
    """Check Cor 4.6, Cor 5.6, Phase I, SAM's rate and Thm 5.3; the verdicts, tables and plots."""
    toy = toy or Figure1Toy()
    bands = _quadratic_band(cfg, log) + _toy_bands(cfg, toy, log)
    phase1 = _phase1(cfg, toy, log)
    gaps = _sam_gap(cfg, toy, log)
    limits = _thm53(cfg, log)
    verdicts = (_band_verdicts(cfg, bands) + [_phase1_verdict(cfg, phase1), _sam_gap_verdict(cfg, toy, gaps)]
                + _thm53_verdicts(cfg, limits))
    files = write_table(out, "bands", bands) + write_table(out, "phase1", phase1) + write_table(out, "thm53", limits)
    files += write_table(out, "sam_flow_gap", gaps)
    files += plots.corollary_bands(out / "bands.png", bands, limits)
    return Findings(verdicts, {"bands": bands, "phase1": phase1, "sam_flow_gap": gaps, "thm53": limits}, files)


# ---- Cor 4.6 and Cor 5.6 ----------------------------------------------------------------------------

def quadratic_worst(quad: Quadratic, x: torch.Tensor, rho: float) -> float:
    """max_{||v|| <= rho} L(x + v) - L(x) for L = 0.5 x^T A x: v = (mu - A)^-1 A x with ||v|| = rho, mu > lambda_1
    (the trust-region secular equation, solved by bisection in the eigenbasis)."""
    lam, c = quad.eigenvalues, quad.eigenvectors.T @ (quad.A @ x.to(DT))
    if float(c.norm()) == 0.0:
        return rho ** 2 * float(lam[0]) / 2
    low, high = float(lam[0]), float(lam[0]) + float(c.norm()) / rho
    for _ in range(200):
        mu = (low + high) / 2
        if float((c / (mu - lam)).norm()) > rho:
            low = mu
        else:
            high = mu
    v = c / (high - lam)
    return float(c @ v + 0.5 * (lam * v * v).sum())


def _measured_steps(steps: int, points: int) -> list[int]:
    """`points` even steps spread over the second half (Phase II; even: the same side of SAM's 2-cycle)."""
    return sorted({2 * round((steps // 2 + (steps // 2) * (i + 1) / points) / 2) for i in range(points)})


BANDS = {"Cor 4.6, quadratic": "cor46-quadratic", "Cor 4.6, toy": "cor46-toy",
         "Cor 5.6, toy, stochastic worst": "cor56-toy-worst", "Cor 5.6, toy, stochastic ascent": "cor56-toy-ascent"}


def _band_row(kind, eta, rho, deviations, reference, rate, curvature) -> dict:
    """curvature: lambda_1 at the start (Cor 4.6) or max_k lambda_1(H_k) (Cor 5.6), for the regime check."""
    worst = max(deviations)
    return {"band": kind, "eta": eta, "rho": rho, "rho/eta": rho / eta, "max |deviation|": worst,
            "relative to the limit": worst / reference, "rate": rate, "deviation / rate": worst / rate,
            "curvature": curvature}


def _quadratic_band(cfg: CorollariesConfig, log: Log) -> list[dict]:
    quad = quadratic(cfg.quad_eigenvalues, seed=0)
    start = random_unit(len(cfg.quad_eigenvalues), seed=1000)
    rows = []
    for eta, rho in cfg.quad_pairs:
        log(f"corollaries: Cor 4.6 on the quadratic, lr {eta}, rho {rho}")
        at = _measured_steps(cfg.quad_steps, cfg.points)
        run = run_trajectory(quad.task(start), optimizer_settings("sam-full", eta, rho, grad_eps=0.0), at[-1], at,
                             chunk_size=len(cfg.quad_eigenvalues), method="sam-full")
        limit = rho ** 2 * quad.lambda_1 / 2                      # Phi(x) = 0: Gamma is the origin
        deviations = [abs(quadratic_worst(quad, x, rho) - limit) for s, x in zip(run.steps, run.thetas) if s in at]
        rows.append(_band_row("Cor 4.6, quadratic", eta, rho, deviations, limit, eta * rho ** 2 * math.log(1 / rho),
                              quad.lambda_1))
    return rows


def _example_toys(toy: Figure1Toy) -> list[Figure1Toy]:
    """The toy's two examples as toys of their own: L_0 = 2 F1 x3^2 and L_1 = 2 F2 x4^2."""
    return [Figure1Toy(lambda a, b: 2 * toy.F1(a, b), lambda a, b: 0 * a, "L_0"),
            Figure1Toy(lambda a, b: 0 * a, lambda a, b: 2 * toy.F2(a, b), "L_1")]


def _stochastic_notions(toy: Figure1Toy, x: torch.Tensor, rho: float) -> tuple[float, float]:
    """E_k R^Max_k and E_k R^Asc_k at x (mean over the two examples)."""
    worst, ascent = [], []
    for example in _example_toys(toy):
        base = toy_loss(example, x)
        worst.append(float(max_loss(example, x, rho)[0] - base))
        with torch.enable_grad():
            leaf = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(toy_loss(example, leaf), leaf)
        ascent.append(float(toy_loss(example, x + rho * g / g.norm()) - base) if float(g.norm()) > 0 else math.inf)
    return sum(worst) / 2, sum(ascent) / 2


def _toy_bands(cfg: CorollariesConfig, toy: Figure1Toy, log: Log) -> list[dict]:
    rows = []
    at = _measured_steps(cfg.toy_steps, cfg.points)
    minimizers = toy.minimizers()
    for method, pairs in (("sam-full", cfg.sam_pairs), ("sam-1", cfg.one_sam_pairs)):
        point = minimizers["argmin F1" if method == "sam-full" else "argmin F1+F2"]
        task = toy.task([*point, *cfg.toy_offset])
        lambda_0 = toy.on_gamma(*point)["lambda_1"]
        for eta, rho in pairs:
            log(f"corollaries: {'Cor 4.6' if method == 'sam-full' else 'Cor 5.6'} on the toy, lr {eta}, rho {rho}")
            run = run_trajectory(task, optimizer_settings(method, eta, rho), at[-1], at, seed=cfg.seed, chunk_size=2,
                                 method=method)
            points = [x.to(DT) for s, x in zip(run.steps, run.thetas) if s in at]
            on_gamma = [toy.on_gamma(float(x[0]), float(x[1])) for x in points]
            if method == "sam-full":
                limits = [rho ** 2 * g["lambda_1"] / 2 for g in on_gamma]
                deviations = [abs(float(max_loss(toy, x, rho)[0] - toy_loss(toy, x)) - lim)
                              for x, lim in zip(points, limits)]
                rows.append(_band_row("Cor 4.6, toy", eta, rho, deviations, min(limits),
                                      eta * rho ** 2 * math.log(1 / rho), lambda_0))
            else:
                limits = [rho ** 2 * g["trace"] / 2 for g in on_gamma]
                notions = [_stochastic_notions(toy, x, rho) for x in points]
                rate = (eta ** 0.25 + rho ** 0.25) * rho ** 2
                for i, name in enumerate(("worst", "ascent")):
                    deviations = [abs(n[i] - lim) for n, lim in zip(notions, limits)]
                    rows.append(_band_row(f"Cor 5.6, toy, stochastic {name}", eta, rho, deviations, min(limits), rate,
                                          2 * lambda_0))      # lambda_1(H_k) = 4 F_k <= 2 lambda_1
    return rows


def _band_verdicts(cfg: CorollariesConfig, rows: list[dict]) -> list:
    out = []
    for kind in dict.fromkeys(r["band"] for r in rows):
        mine = [r for r in rows if r["band"] == kind]
        eta, rho, curvature = mine[0]["eta"], mine[0]["rho"], mine[0]["curvature"]
        if kind.startswith("Cor 4.6"):
            regime = regimes.full_batch_sam(eta, rho, curvature, theorem="Cor 4.6 (of Thm 4.5)")
            claim, rate, target = "worst-direction sharpness along SAM's iterates", "eta rho^2 ln(1/rho)", \
                "rho^2 lambda_1(Phi(x)) / 2"
        else:
            regime = regimes.one_sam(eta, rho, curvature, theorem="Cor 5.6 (of Thm 5.4)")
            claim, rate, target = (f"stochastic {kind.rsplit(' ', 1)[-1]}-direction sharpness along 1-SAM's iterates",
                                   "(eta^(1/4) + rho^(1/4)) rho^2", "rho^2 Tr(Phi(x)) / 2")
        ratios = [r["deviation / rate"] for r in mine]
        ok = all(math.isfinite(x) for x in ratios) and max(ratios[1:]) <= (1 + cfg.growth_tol) * ratios[0]
        out.append(regime.verdict(
            BANDS[kind],
            f"{kind}: the {claim} lies within O({rate}) of {target}",
            f"max |deviation| / ({rate}) over the second half of each run grows at most {cfg.growth_tol:.0%} along the "
            "shrinking (eta, rho) sequence (its O-constant stays bounded)",
            {"(eta, rho)": [(r["eta"], r["rho"]) for r in mine], "deviation / rate": ratios,
             "deviation / limit": [r["relative to the limit"] for r in mine]}, ok,
            pairs=[(r["eta"], r["rho"]) for r in mine], note="regime shown for the largest pair; the others are "
                                                               "further inside"))
    return out


# ---- Phase I ----------------------------------------------------------------------------------------

def _phase1(cfg: CorollariesConfig, toy: Figure1Toy, log: Log) -> list[dict]:
    rows = []
    task = toy.task(cfg.phase1_start)
    for eta, rho in cfg.phase1_pairs:
        log(f"corollaries: Phase I length, lr {eta}, rho {rho}")

        def observe(theta, record, eta=eta, rho=rho):
            x = theta.to(DT)
            lam = toy.on_gamma(float(x[0]), float(x[1]))["lambda_1"]
            return {"dist": float(x[2:].norm()), "radius": eta * rho * lam / (2 - eta * lam)}
        run = run_trajectory(task, optimizer_settings("sam-full", eta, rho), cfg.phase1_max_steps,
                             list(range(1, cfg.phase1_max_steps + 1)), seed=cfg.seed, chunk_size=2, method="sam-full",
                             observe=observe, stop=lambda r: r["dist"] <= 2 * r["radius"])
        reached = run.steps[-1] if run.records[-1]["dist"] <= 2 * run.records[-1]["radius"] else math.nan
        rows.append({"eta": eta, "rho": rho, "rho/eta": rho / eta, "steps to 2 x radius": reached,
                     "steps eta / ln(1/rho)": reached * eta / math.log(1 / rho)})
    return rows


def _phase1_verdict(cfg: CorollariesConfig, rows: list[dict]):
    values = [r["steps eta / ln(1/rho)"] for r in rows]
    worst = max(rows, key=lambda r: r["rho/eta"])
    regime = regimes.full_batch_sam(worst["eta"], worst["rho"], 10.0, theorem="Thm 4.5, Phase I")
    ok = all(math.isfinite(v) for v in values) and max(values) <= cfg.phase1_spread * min(values)
    return regime.verdict(
        "phase1-length", "full-batch SAM reaches an O(eta rho) neighbourhood of Gamma in O(ln(1/rho)/eta) steps",
        f"steps to dist(Gamma) <= 2 eta rho lambda_1/(2 - eta lambda_1), times eta/ln(1/rho), within a factor "
        f"{cfg.phase1_spread:g} over the pairs", {"steps": [r["steps to 2 x radius"] for r in rows],
                                               "steps eta / ln(1/rho)": values}, ok,
        pairs=[(r["eta"], r["rho"]) for r in rows], note="regime shown for the pair with the largest rho/eta")


# ---- SAM's gap to its flow as rho/eta -> 0 ------------------------------------------------------------

def _sam_gap(cfg: CorollariesConfig, toy: Figure1Toy, log: Log) -> list[dict]:
    start = torch.tensor(cfg.gap_start, dtype=DT)
    flow = ManifoldFlow(toy.objective(), toy.data(), "lambda_1", project=toy.project)
    target = flow.integrate(toy.project(start), [cfg.gap_tau], dt=cfg.gap_tau / 8).points[0]
    rows = []
    for eta, rho in cfg.gap_pairs:
        steps = max(2, round(cfg.gap_tau / (eta * rho ** 2)))
        log(f"corollaries: SAM's gap to its flow, lr {eta}, rho {rho} ({steps} steps)")
        run = run_trajectory(toy.task(cfg.gap_start), optimizer_settings("sam-full", eta, rho), steps, [steps],
                             seed=cfg.seed, chunk_size=2, method="sam-full")
        gap = float((run.theta[:2].to(DT) - target[:2]).norm())
        rows.append({"eta": eta, "rho": rho, "rho/eta": rho / eta, "steps": steps, "tau": eta * rho ** 2 * steps,
                     "gap": gap, "flow moved": float((target[:2] - start[:2]).norm()),
                     "gap / (eta ln(1/rho))": gap / (eta * math.log(1 / rho))})
    return rows


def _sam_gap_verdict(cfg: CorollariesConfig, toy: Figure1Toy, rows: list[dict]):
    ratios = [r["gap / (eta ln(1/rho))"] for r in rows]
    lam = toy.on_gamma(*cfg.gap_start[:2])["lambda_1"]
    regime = regimes.full_batch_sam(rows[0]["eta"], rows[0]["rho"], lam, theorem="Thm 4.5 (rate)")
    return regime.verdict(
        "sam-flow-gap-rate", "full-batch SAM tracks its flow with error O(eta ln(1/rho)) as rho/eta -> 0",
        f"gap at tau {cfg.gap_tau:g} / (eta ln(1/rho)) grows at most {cfg.growth_tol:.0%} along the pairs",
        {"rho/eta": [r["rho/eta"] for r in rows], "gap": [r["gap"] for r in rows], "gap / (eta ln(1/rho))": ratios},
        max(ratios[1:]) <= (1 + cfg.growth_tol) * ratios[0], pairs=[(r["eta"], r["rho"]) for r in rows],
        note="regime shown for the first pair; the others are further inside")


# ---- Thm 5.3 on the network -------------------------------------------------------------------------

def gauss_newton_to_gamma(model: Regression, x: torch.Tensor, steps: int) -> torch.Tensor:
    """x <- x - J^+ (f(x) - y): the nearest-point Newton iteration onto Gamma = {f = y} (quadratic convergence)."""
    for _ in range(steps):
        J = output_jacobian(model, x)
        residual = (model.outputs(x) - model.targets).reshape(-1)
        x = x - torch.linalg.lstsq(J, residual.unsqueeze(1)).solution.squeeze(1)
    return x.detach()


def _thm53(cfg: CorollariesConfig, log: Log) -> list[dict]:
    start = interpolating_point(cfg.network, log)
    task = start.task
    model = Regression.from_objective(task.objective, task.train)
    x = gauss_newton_to_gamma(model, task.theta.detach(), cfg.gauss_newton_steps)
    residuals = (model.outputs(x) - model.targets).reshape(-1)
    residual = float(residuals.abs().max())
    J = output_jacobian(model, x)                            # (n, D): row k is grad f_k (scalar outputs)
    trace = float(J.pow(2).sum()) / model.examples            # Tr(H) on Gamma = mean_k ||grad f_k||^2
    dim = x.numel()
    inputs, targets = task.train.inputs, task.train.targets.reshape(len(task.train), -1)

    def example_loss(t, xi, yi):
        return 0.5 * (task.objective.outputs(t, xi.unsqueeze(0)).reshape(-1) - yi).pow(2).sum()
    example_grad = grad(example_loss)
    if J.shape[0] != len(task.train):
        raise SamcliError("Thm 5.3's check needs a scalar-output regression (Setting 5.1 with one output)")
    generator = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for rho in sorted(cfg.network_rhos, reverse=True):
        log(f"corollaries: Thm 5.3 on the network at rho {rho}")
        base = vmap(example_loss, in_dims=(None, 0, 0))(x, inputs, targets)
        # On Gamma g_k = r_k grad f_k vanishes (r_k = 0); its direction tends to sign(r_k) grad f_k/||grad f_k||,
        # the top eigenvector of the rank-one H_k, and that limit is the ascent direction used (+ where r_k = 0).
        sign = torch.where(residuals < 0, -1.0, 1.0).to(x.dtype).unsqueeze(1)
        v = rho * sign * J / J.norm(dim=1, keepdim=True)
        ascent = vmap(example_loss)(x + v, inputs, targets) - base
        for _ in range(100):                                  # per-example worst: v <- rho grad L_k(x+v)/||.||
            grads = vmap(example_grad)(x + v, inputs, targets)
            new = rho * grads / grads.norm(dim=1, keepdim=True)
            moved, v = float((new - v).abs().max()), new
            if moved <= 1e-12 * rho:
                break
        worst = vmap(example_loss)(x + v, inputs, targets) - base
        z = torch.randn(cfg.directions, dim, generator=generator, dtype=x.dtype)
        u = rho * z / z.norm(dim=1, keepdim=True)
        losses = vmap(lambda p: task.objective.loss(p, task.train))(torch.cat([x + u, x - u]))
        pairs = (losses[:cfg.directions] + losses[cfg.directions:]) / 2 - task.objective.loss(x, task.train)
        rows.append({"rho": rho, "Tr(H)": trace, "max residual": residual, "D": dim,
                     "full-batch worst / (rho^2/2 Tr)": full_batch_worst(task, x, J, rho) / (rho ** 2 / 2 * trace),
                     "worst / (rho^2/2 Tr)": float(worst.mean()) / (rho ** 2 / 2 * trace),
                     "ascent / (rho^2/2 Tr)": float(ascent.mean()) / (rho ** 2 / 2 * trace),
                     "average 2D / (rho^2 Tr)": float(pairs.mean()) * 2 * dim / (rho ** 2 * trace),
                     "average stderr": float(pairs.std()) / math.sqrt(cfg.directions) * 2 * dim / (rho ** 2 * trace)})
    return rows


def _thm53_verdicts(cfg: CorollariesConfig, rows: list[dict]) -> list:
    regime = regimes.limit("Thm 5.3", "x on Gamma, rho -> 0 (Setting 5.1)",
                           rhos=[r["rho"] for r in rows], **{"max residual |f - y|": rows[0]["max residual"]})
    out = []
    for key, name in (("worst / (rho^2/2 Tr)", "worst"), ("ascent / (rho^2/2 Tr)", "ascent")):
        errors = [abs(r[key] - 1) for r in rows]
        out.append(regime.verdict(
            f"thm53-stochastic-{name}", f"the stochastic {name}-direction sharpness tends to rho^2 Tr / 2",
            f"|ratio - 1| <= {cfg.tol_trace:g} at the smallest rho, and no larger than at the largest",
            {"ratio by rho": [r[key] for r in rows]}, errors[-1] <= cfg.tol_trace and errors[-1] <= errors[0]))
    last = rows[-1]
    error = abs(last["average 2D / (rho^2 Tr)"] - 1)
    out.append(regime.verdict(
        "thm53-stochastic-average", "the stochastic average-direction sharpness (= R^Avg: u is drawn apart from k) "
        "tends to rho^2 Tr / (2D)", "|ratio - 1| <= 3 standard errors of the Monte Carlo estimate at the smallest rho",
        {"ratio by rho": [r["average 2D / (rho^2 Tr)"] for r in rows],
         "stderr by rho": [r["average stderr"] for r in rows]},
        error <= 3 * last["average stderr"]))
    errors = [abs(r["full-batch worst / (rho^2/2 Tr)"] - 1) for r in rows]
    out.append(regime.control(      # the non-stochastic notion goes to lambda_1 / 2, not Tr / 2: must be rejected
        "thm53-stochastic-worst-on-full-batch-worst", "the stochastic worst criterion (-> rho^2 Tr / 2) on the "
        "full-batch worst-direction sharpness (-> rho^2 lambda_1 / 2; must reject)",
        f"|ratio - 1| <= {cfg.tol_trace:g} at the smallest rho, and no larger than at the largest",
        {"ratio by rho": [r["full-batch worst / (rho^2/2 Tr)"] for r in rows]},
        errors[-1] <= cfg.tol_trace and errors[-1] <= errors[0]))
    worst_avg = [r["full-batch worst / (rho^2/2 Tr)"] * r["D"] for r in rows]
    out.append(regime.control(      # worst >= average always; at the average's scale it is D lambda_1 / Tr
        "thm53-stochastic-average-on-full-batch-worst", "the average criterion (-> rho^2 Tr / (2D)) on the "
        "full-batch worst-direction sharpness (must reject)",
        "|ratio - 1| <= 3 standard errors of the average's Monte Carlo estimate at the smallest rho",
        {"ratio by rho": worst_avg}, abs(worst_avg[-1] - 1) <= 3 * last["average stderr"]))
    return out
