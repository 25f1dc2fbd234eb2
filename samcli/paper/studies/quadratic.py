"""quadratic: Thm 4.8. Full-batch SAM on L = 0.5 x^T A x (float64): ||x_t|| -> eta rho lambda_1 / (2 - eta lambda_1)
and x_t aligns with +-v_1 (a 2-cycle x_{t+1} = -x_t)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import plots, regimes
from ..configs import COUNT, NONNEGATIVE, POSITIVE, SEED, Rule, at_least, require
from ..skeleton import Findings, Log, write_table
from ..toys import angle_cos, quadratic, random_unit
from ..trajectory import optimizer_settings, record_schedule, run_trajectory


@dataclass
class QuadraticCase:
    """One quadratic: the eigenvalues of A, lr, rho and the seed of its eigenvectors."""
    eigenvalues: list[float] = field(default_factory=lambda: [1.0, 0.8, 0.6, 0.45, 0.3, 0.2])
    lr: float = 0.5
    rho: float = 0.1
    seed: int = 0                      # seeds the eigenbasis and the start direction
    RULES: ClassVar[dict[str, Rule]] = {"eigenvalues": POSITIVE, "lr": POSITIVE, "rho": POSITIVE, "seed": SEED}


@dataclass
class QuadraticConfig:
    """The quadratic study's settings: its cases, steps, grad_eps and tolerances."""
    cases: list[QuadraticCase] = field(default_factory=lambda: [
        QuadraticCase(lr=0.3, rho=0.1), QuadraticCase(lr=0.6, rho=0.05, seed=1),
        QuadraticCase(eigenvalues=[2.0, 1.5, 1.0, 0.7, 0.5, 0.4, 0.3, 0.25], lr=0.45, rho=0.2, seed=2)])
    start_norm: float = 1.0
    steps: int = 1500
    record_every: int = 10
    grad_eps: float = 0.0              # exact normalization: the engine's default 1e-12 guard biases ~1e-11
    tol_radius: float = 1e-6           # relative error of ||x_T|| against eta rho lambda_1 / (2 - eta lambda_1)
    tol_direction: float = 1e-6        # on 1 - |cos(x_T, v_1)|
    threads: int = 1
    RULES: ClassVar[dict[str, Rule]] = {"start_norm": POSITIVE, "steps": at_least(2), "record_every": COUNT,
                               "grad_eps": NONNEGATIVE, "tol_radius": POSITIVE, "tol_direction": POSITIVE,
                               "threads": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        require(len(self.cases) >= 1, "cases must list at least one case")


def quadratic_study(cfg: QuadraticConfig, out: Path, log: Log) -> Findings:
    """Run full-batch SAM on each quadratic and judge its radius and direction (Thm 4.8)."""
    rows, curves, verdicts = [], [], []
    for i, case in enumerate(cfg.cases):
        quad = quadratic(case.eigenvalues, seed=case.seed)
        lam1, v1 = quad.lambda_1, quad.v1
        start = cfg.start_norm * random_unit(len(case.eigenvalues), seed=1000 + case.seed)
        predicted = quad.predicted_radius(case.lr, case.rho, lam1)
        log(f"quadratic: case {i} (D={len(case.eigenvalues)}, lr {case.lr}, rho {case.rho}, "
            f"eta lambda_1 = {case.lr * lam1:.3g}), {cfg.steps} steps")

        def observe(theta, record, v1=v1):
            return {"norm": float(theta.norm()), "cos": angle_cos(theta, v1)}
        record_at = record_schedule(cfg.steps - 1, cfg.record_every) + [cfg.steps]
        run = run_trajectory(quad.task(start), optimizer_settings("sam-full", case.lr, case.rho, grad_eps=cfg.grad_eps),
                             cfg.steps, record_at, chunk_size=len(case.eigenvalues), observe=observe, method="sam-full")
        x_t, x_prev = run.thetas[-1], run.thetas[-2]
        norm, cos = float(x_t.norm()), angle_cos(x_t, v1)
        rel = abs(norm - predicted) / predicted
        lam2 = float(quad.eigenvalues[1]) if len(case.eigenvalues) > 1 else None
        row = {"case": i, "D": len(case.eigenvalues), "lambda_1": lam1, "lambda_2": lam2,
               "lr": case.lr, "rho": case.rho, "eta_lambda_1": case.lr * lam1, "steps": run.steps[-1],
               "predicted_norm": predicted, "measured_norm": norm, "measured_norm_prev": float(x_prev.norm()),
               "relative_error": rel, "one_minus_abs_cos": 1 - cos,
               "two_cycle_residual": float((x_t + x_prev).norm()) / predicted, "status": run.status}
        rows.append(row)
        curves.append({"lr": case.lr, "rho": case.rho, "eta_lambda_1": case.lr * lam1, "predicted": predicted,
                       "steps": run.steps, "norms": run.column("norm"), "cosines": run.column("cos")})
        regime = regimes.quadratic(case.lr, case.rho, case.eigenvalues)
        verdicts.append(regime.verdict(
            f"radius-case{i}",
            f"||x_t|| -> eta rho lambda_1 / (2 - eta lambda_1) (case {i}: lr {case.lr}, rho {case.rho}, "
            f"lambda_1 {lam1:g})", f"relative error <= {cfg.tol_radius:g}",
            {"predicted": f"{predicted:.15g}", "measured": f"{norm:.15g}", "relative error": rel},
            run.status == "completed" and rel <= cfg.tol_radius, steps=cfg.steps))
        verdicts.append(regime.verdict(
            f"direction-case{i}", f"x_t aligns with +-v_1 (case {i})", f"1 - |cos(x_t, v_1)| <= {cfg.tol_direction:g}",
            {"1 - |cos|": 1 - cos, "x_t + x_(t-1) (2-cycle), relative": row["two_cycle_residual"]},
            run.status == "completed" and 1 - cos <= cfg.tol_direction, steps=cfg.steps))
        verdicts += _gd_controls(cfg, case, i, quad, start, predicted, regime)
    files = write_table(out, "radius", rows, digits=15)
    files += plots.quadratic_convergence(out / "convergence.png", curves)
    return Findings(verdicts, {"radius": rows}, files, {"curves": curves})


def _gd_controls(cfg: QuadraticConfig, case: QuadraticCase, i: int, quad, start, predicted: float, regime) -> list:
    """Both criteria on GD from the same start (negative controls): GD converges to 0 (no 2-cycle at
    eta rho lambda_1 / (2 - eta lambda_1)) along the slowest eigenvector, not along v_1."""
    run = run_trajectory(quad.task(start), optimizer_settings("gd", case.lr, case.rho), cfg.steps, [cfg.steps],
                         chunk_size=len(case.eigenvalues), method="gd")
    x_t = run.thetas[-1]
    norm = float(x_t.norm())
    cos = angle_cos(x_t, quad.v1) if norm > 0 else 0.0
    rel = abs(norm - predicted) / predicted
    return [
        regime.control(f"radius-case{i}-on-gd", f"the radius criterion on GD's run (case {i}; must reject)",
                       f"relative error <= {cfg.tol_radius:g}", {"measured": norm, "relative error": rel},
                       rel <= cfg.tol_radius),
        regime.control(f"direction-case{i}-on-gd", f"the direction criterion on GD's run (case {i}; must reject)",
                       f"1 - |cos(x_t, v_1)| <= {cfg.tol_direction:g}", {"1 - |cos|": 1 - cos},
                       1 - cos <= cfg.tol_direction)]
