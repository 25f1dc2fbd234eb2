"""timescale: drift along Gamma needs Theta(1/(eta rho^2)) steps (tau = eta rho^2 t). On the figure-1 toy,
from a point next to Gamma, count the steps until (x1, x2) has moved `drift`: halving rho should
multiply them by four."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from .. import plots, regimes
from ..configs import COUNT, FINITE, POSITIVE, SEED, Rule, at_least, one_of, require
from ..skeleton import Findings, Log, write_table
from ..toys import Figure1Toy
from ..trajectory import LABELS, METHODS, optimizer_settings, record_schedule, run_trajectory


@dataclass
class TimescaleRun:
    """One method's runs: its lr and the radii rho to compare."""
    method: str = "sam-full"
    lr: float = 0.08
    rhos: list[float] = field(default_factory=lambda: [0.024, 0.012])
    RULES: ClassVar[dict[str, Rule]] = {"method": one_of(*METHODS), "lr": POSITIVE, "rhos": POSITIVE}


@dataclass
class TimescaleConfig:
    """The timescale study's settings: start, runs, the drift to reach and the ratio tolerance."""
    start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.001, 0.001])
    # each method in its theorem's regime: SAM at rho/eta <= 0.3, 1-SAM at (eta + rho) ln(1/(eta rho)) <= 1
    runs: list[TimescaleRun] = field(default_factory=lambda: [
        TimescaleRun("sam-full", 0.08, [0.024, 0.012]), TimescaleRun("sam-1", 0.04, [0.1, 0.05, 0.025])])
    drift: float = 0.3                 # distance moved along Gamma whose step count is compared
    max_tau: float = 0.25              # give up at tau = eta rho^2 t beyond this
    points: int = 100                  # records per run (the crossing is interpolated between them)
    tol_ratio: float = 0.1             # steps(rho/2) / steps(rho) within 4 (1 +- tol_ratio)
    seed: int = 0
    threads: int = 1
    RULES: ClassVar[dict[str, Rule]] = {"start": FINITE, "drift": POSITIVE, "max_tau": POSITIVE, "points": at_least(2),
                               "tol_ratio": POSITIVE, "seed": SEED, "threads": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        require(len(self.start) == 4, f"start={self.start} must be 4 numbers")
        for i, run in enumerate(self.runs):
            require(len(run.rhos) >= 2, f"runs[{i}].rhos must list >= 2 radii")


def timescale(cfg: TimescaleConfig, out: Path, log: Log, toy: Optional[Figure1Toy] = None) -> Findings:
    """Count the steps each run needs to drift a fixed distance and judge the 1/(eta rho^2) scaling."""
    toy = toy or Figure1Toy()
    task = toy.task(cfg.start)
    origin = torch.tensor(cfg.start[:2], dtype=torch.float64)
    rows: list[dict[str, Any]] = []
    curves, verdicts = [], []
    lambda_1 = toy.on_gamma(*cfg.start[:2])["lambda_1"]
    for setting in cfg.runs:
        method, lr = setting.method, setting.lr
        rhos = sorted(setting.rhos, reverse=True)
        for rho in rhos:
            max_steps = max(2, math.ceil(cfg.max_tau / (lr * rho ** 2)))
            every = max(1, max_steps // cfg.points)
            log(f"timescale: {LABELS[method]}, rho {rho} (at most {max_steps} steps)")

            def observe(theta, record):
                return {"drift": float((theta[:2].to(torch.float64) - origin).norm())}
            run = run_trajectory(task, optimizer_settings(method, lr, rho), max_steps,
                                 record_schedule(max_steps, every), seed=cfg.seed, chunk_size=2, method=method,
                                 observe=observe, stop=lambda r: r["drift"] >= cfg.drift)
            drift = run.column("drift")
            crossing = math.nan
            for (s0, d0), (s1, d1) in zip(zip(run.steps, drift), zip(run.steps[1:], drift[1:])):
                if d0 < cfg.drift <= d1:
                    crossing = s0 + (cfg.drift - d0) / (d1 - d0) * (s1 - s0)
                    break
            rows.append({"method": LABELS[method], "rho": rho, "lr": lr, "steps_to_drift": crossing,
                         "tau_at_drift": lr * rho ** 2 * crossing, "status": run.status})
            curves.append({"method": LABELS[method], "rho": rho, "lr": lr, "steps": run.steps, "drift": drift})
        mine = [r for r in rows if r["method"] == LABELS[method]]
        ratios = {}
        for big, small in zip(mine, mine[1:]):
            expected = (big["rho"] / small["rho"]) ** 2
            key = f"steps(rho={small['rho']:g}) / steps(rho={big['rho']:g})"
            ratios[key] = small["steps_to_drift"] / big["steps_to_drift"]
            big["expected_ratio_next"] = expected
        ok = all(abs(v / ((mine[i]["rho"] / mine[i + 1]["rho"]) ** 2) - 1) <= cfg.tol_ratio
                 for i, v in enumerate(ratios.values()))
        taus = [r["tau_at_drift"] for r in mine]
        ratios["spread of tau at the drift (max/min - 1)"] = max(taus) / min(taus) - 1
        # the regime at the largest rho (the others are further inside); on Gamma lambda_1(H_k) = 2 lambda_1
        regime = (regimes.full_batch_sam(lr, rhos[0], lambda_1) if method == "sam-full"
                  else regimes.one_sam(lr, rhos[0], 2 * lambda_1))
        regime = regimes.Regime(regime.theorem + " (tau = eta rho^2 t)", regime.condition,
                                {**regime.settings, "rhos": rhos}, regime.in_regime)
        verdicts.append(regime.verdict(
            f"quadruple-{method}", f"{LABELS[method]}: halving rho needs about four times the steps for the same drift "
            f"along Gamma ({cfg.drift})", f"each ratio within (rho ratio)^2 x (1 +- {cfg.tol_ratio})", ratios,
            ok and all(r["status"] == "completed" for r in mine) and all(math.isfinite(t) for t in taus)))
    files = write_table(out, "steps_to_drift", rows)
    files += plots.timescale_drift(out / "drift.png", curves, cfg.drift)
    return Findings(verdicts, {"steps_to_drift": rows}, files, {"curves": curves})
