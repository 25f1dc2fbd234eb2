"""bias: the explicit biases of the sharpness-aware losses (Thm 4.2, Table 1, Thm E.4) on the figure-1 toy.

The theorem is about the minimizers of L_rho themselves, not about a training dynamic: as rho -> 0,
approximate minimizers of L^Max_rho, L^Asc_rho and L^Avg_rho approach the minimizers on Gamma of
lambda_1 (argmin F1), lambda_M (argmin F2) and Tr (argmin F1 + F2), and L_rho / rho^2 approaches the
limiting regularizer's infimum. Each loss is minimized by L-BFGS with a strong-Wolfe line search
(samcli.paper.explicit_bias) for shrinking rho, on the built-in toy or a user's F1 > F2 > 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from .. import plots, regimes
from ..configs import COUNT, FINITE, POSITIVE, Rule, one_of, require
from ..explicit_bias import TARGETS, TOY_NOTIONS, explicit_bias
from ..skeleton import Findings, Log, write_table
from ..toys import Figure1Toy

THEOREMS = {"max": "Thm 4.2, Table 1", "asc": "Thm 4.2, Table 1, Thm E.4", "avg": "Thm 4.2, Table 1"}
LOSSES = {"max": "L^Max_rho (worst direction)", "asc": "L^Asc_rho (ascent direction)",
          "avg": "L^Avg_rho (average direction)"}


@dataclass
class BiasConfig:
    """The bias study's settings: radii, start point, notions, L-BFGS budget and tolerances."""
    rhos: list[float] = field(default_factory=lambda: [0.3, 0.1, 0.05, 0.02])
    start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.3, 0.3])
    notions: list[str] = field(default_factory=lambda: list(TOY_NOTIONS))
    max_iter: int = 1000               # L-BFGS iterations per minimization
    tol_distance: float = 1e-3         # end point's (x1, x2) to its target, at the smallest rho
    tol_gap: float = 1e-3              # |L_rho / rho^2 - the limit's infimum|, at the smallest rho
    threads: int = 1
    RULES: ClassVar[dict[str, Rule]] = {"rhos": POSITIVE, "start": FINITE, "notions": one_of(*TOY_NOTIONS),
                                        "max_iter": COUNT, "tol_distance": POSITIVE, "tol_gap": POSITIVE,
                                        "threads": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        require(len(self.start) == 4, f"start={self.start} must be 4 numbers (x1, x2, x3, x4)")
        require(len(self.rhos) >= 1, "rhos must list at least one radius")
        require(all(n in TOY_NOTIONS for n in self.notions) and bool(self.notions),
                f"notions must be among {', '.join(TOY_NOTIONS)}")


def bias(cfg: BiasConfig, out: Path, log: Log, toy: Optional[Figure1Toy] = None) -> Findings:
    """Minimize each sharpness-aware loss of the toy for shrinking rho and judge its explicit bias."""
    toy = toy or Figure1Toy()
    rhos = sorted(cfg.rhos, reverse=True)
    log(f"bias: minimizing {', '.join(LOSSES[n] for n in cfg.notions)} by L-BFGS at rho {rhos}")
    results = explicit_bias(toy, rhos, cfg.notions, cfg.start, cfg.max_iter)
    minimizers = toy.minimizers((cfg.start[0], cfg.start[1]))
    rows = []
    for r in results:
        others = {f"to {name}": math.dist(r.end[:2], point) for name, point in minimizers.items()}
        rows.append({"notion": r.notion, "rho": r.rho, "x1": r.end[0], "x2": r.end[1], "x3": r.end[2], "x4": r.end[3],
                     "target": r.target_name, "distance": r.distance, **others, "off Gamma": r.off_gamma,
                     "L_rho/rho^2": r.value_over_rho2, "limit": r.limit_name, "infimum": r.predicted_infimum,
                     "gap": r.gap, "iterations": r.iterations, "evaluations": r.evaluations, "converged": r.converged})
    verdicts = [_verdict(cfg, notion, [row for row in rows if row["notion"] == notion], rhos) for notion in cfg.notions]
    verdicts += _controls(cfg, rows, rhos)
    minimizer_rows = [{"point": k, "x1": v[0], "x2": v[1], **toy.on_gamma(*v)} for k, v in minimizers.items()]
    files = write_table(out, "minimizers_of_L_rho", rows, digits=6) + write_table(out, "targets", minimizer_rows)
    files += plots.bias_endpoints(out / "bias.png", toy, rows, minimizers, cfg.start)
    return Findings(verdicts, {"minimizers_of_L_rho": rows, "targets": minimizer_rows}, files, {"toy": toy.name})


def _verdict(cfg: BiasConfig, notion: str, rows: list[dict], rhos: list[float]):
    target, limit, _ = TARGETS[notion]
    last = rows[-1]
    nearest = min(("argmin F1", "argmin F2", "argmin F1+F2"), key=lambda name: last[f"to {name}"])
    ok = (last["converged"] and last["distance"] <= cfg.tol_distance and abs(last["gap"]) <= cfg.tol_gap
          and nearest == target)
    regime = regimes.limit(THEOREMS[notion], "rho -> 0; approximate minimizers of L_rho (near Gamma)",
                           rhos=rhos, start=cfg.start, method="L-BFGS, strong Wolfe")
    return regime.verdict(
        f"bias-{notion}", f"minimizers of {LOSSES[notion]} go to {target} (the minimizer of {limit.split(' =')[0]} "
        f"on Gamma), and L_rho/rho^2 to its infimum {limit}",
        f"at the smallest rho ({rhos[-1]:g}): converged, distance <= {cfg.tol_distance:g}, |gap| <= "
        f"{cfg.tol_gap:g}, and nearer to {target} than to the other two minimizers",
        {"distance by rho": [r["distance"] for r in rows], "gap by rho": [r["gap"] for r in rows],
         "ended nearest to": nearest, "converged": all(r["converged"] for r in rows)}, ok)


# each notion's criterion on another notion's minimizers (its negative control): max <- avg, asc <- max, avg <- asc
CONTROL_OF = {"max": "avg", "asc": "max", "avg": "asc"}


def _controls(cfg: BiasConfig, rows: list[dict], rhos: list[float]) -> list:
    out = []
    for notion, other in CONTROL_OF.items():
        theirs = [r for r in rows if r["notion"] == other]
        if notion not in cfg.notions or not theirs:
            continue
        target = TARGETS[notion][0]
        last = theirs[-1]
        nearest = min(("argmin F1", "argmin F2", "argmin F1+F2"), key=lambda name: last[f"to {name}"])
        regime = regimes.limit(THEOREMS[other], "rho -> 0; approximate minimizers of L_rho (near Gamma)", rhos=rhos)
        out.append(regime.control(
            f"bias-{notion}-on-{other}", f"the {LOSSES[notion]} criterion (-> {target}) on the minimizers of "
            f"{LOSSES[other]} (must reject)", f"at the smallest rho: converged, within {cfg.tol_distance:g} of "
            f"{target} and nearer to it than to the other two (the gap part is the other loss's own)",
            {f"to {target} by rho": [r[f"to {target}"] for r in theirs], "ended nearest to": nearest},
            last["converged"] and last[f"to {target}"] <= cfg.tol_distance and nearest == target))
    return out
