"""figure1's run lengths from the flows, its alignment-rate test, and its negative controls (issue #21).

- `resolve_steps`: the judged full-batch SAM run (sam_in_regime) gets the steps its lambda_1 flow needs
  to come within flow_margin * tol_sam of argmin F1, and the figure's runs at least the steps 1-SAM's trace
  flow needs to come within flow_margin * tol_one_sam of argmin (F1 + F2); both capped (max_steps), so a
  user's Figure1Toy(F1, F2) with slow flows gets a run long enough, or an "open: not converged" verdict.
- `alignment_rate`: Thm 4.5's angle O(rho) on the toy, by samcli.paper.alignrate (one start, one eta,
  equal tau, >= 3 radii, log-log slope), with GD as its negative control.
- `controls`: each judged end-point criterion on dynamics it must reject.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import regimes
from ..alignrate import AngleSeries, rate_verdict
from ..configs import FINITE, POSITIVE, Rule, at_least
from ..flows import ManifoldFlow
from ..horizon import Horizon, flow_horizon, phase1_steps
from ..skeleton import Log
from ..toys import Figure1Toy
from ..trajectory import LABELS, Trajectory, optimizer_settings, run_trajectory
from ..verdicts import Verdict


@dataclass
class ToyRate:
    """The toy's alignment-rate test: full-batch SAM at one lr and >= 3 radii, one start, equal tau."""
    lr: float = 0.08
    rhos: list[float] = field(default_factory=lambda: [0.024, 0.012, 0.006])
    tau: float = 0.0046                # 100 steps at rho 0.024, 1600 at rho 0.006
    points: int = 6                    # |cos(g, v_1)| at this many evenly spaced even steps per radius
    slope_min: float = 0.75
    start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.001, 0.001])   # next to Gamma
    RULES: ClassVar[dict[str, Rule]] = {"lr": POSITIVE, "rhos": POSITIVE, "tau": POSITIVE, "points": at_least(4),
                                        "slope_min": FINITE, "start": FINITE}


def resolve_steps(cfg, toy: Figure1Toy, minimizers: dict, sam_start: list[float], log: Log):
    """(cfg with the steps the flows need, capped; {"sam-in-regime": Horizon, "sam-1": Horizon})."""
    objective, data = toy.objective(), toy.data()
    sam = cfg.sam_in_regime
    horizons: dict[str, Horizon] = {}
    for key, reg, start, target, tol, lr, rho, fixed, cap in (
            ("sam-in-regime", "lambda_1", sam_start, "argmin F1", cfg.tol_sam, sam.lr, sam.rho, sam.steps,
             sam.max_steps),
            ("sam-1", "trace", cfg.start, "argmin F1+F2", cfg.tol_one_sam, cfg.lr, cfg.rho, None,
             max(cfg.max_steps, cfg.steps))):
        x0 = torch.tensor(start, dtype=torch.float64)
        slow = toy.on_gamma(float(x0[0]), float(x0[1]))["lambda_m"]
        flow = ManifoldFlow(objective, data, reg, project=toy.project)
        h = flow_horizon(flow, x0, minimizers[target], tol, lr, rho, fixed or cap, margin=cfg.flow_margin,
                         dt=cfg.flow_dt, phase1_steps=phase1_steps(float(x0[2:].norm()), lr, rho, slow))
        log(f"figure1: the {reg} flow needs tau {h.tau_needed:.3g} to come within {cfg.flow_margin:g} x {tol:g} of "
            f"{target}: {h.steps_needed:.0f} steps at lr {lr}, rho {rho} (cap {h.max_steps})")
        horizons[key] = h
    steps_in = sam.steps or horizons["sam-in-regime"].steps
    horizons["sam-in-regime"] = dataclasses.replace(horizons["sam-in-regime"], steps=steps_in)
    main = max(cfg.steps, horizons["sam-1"].steps)      # cfg.steps: the figure's, a minimum
    horizons["sam-1"] = dataclasses.replace(horizons["sam-1"], steps=main)
    return dataclasses.replace(cfg, steps=main, sam_in_regime=dataclasses.replace(sam, steps=steps_in)), horizons


@dataclass(frozen=True)
class ToyRateResult:
    verdicts: list[Verdict]
    rows: list[dict]


def _schedule(steps: int, points: int) -> list[int]:
    return sorted({2 * max(1, round(steps * (i + 1) / points / 2)) for i in range(points)})


def alignment_rate(rate: ToyRate, toy: Figure1Toy, observer: Callable[[float, set], Callable], log: Log):
    """SAM at each radius (and GD, the control, at the same step counts) from rate.start to tau."""
    task = toy.task(rate.start)
    series, gd_series, rows = [], [], []
    steps_of = {rho: 2 * max(2, round(rate.tau / (rate.lr * rho ** 2) / 2)) for rho in rate.rhos}
    # GD has no rho (and no tau): its angle is read at the largest radius's steps for every radius; longer,
    # its gradient underflows on the toy (the normal coordinates decay geometrically) and has no direction
    gd_steps = _schedule(steps_of[max(rate.rhos)], rate.points)
    log(f"figure1: alignment rate control, GD lr {rate.lr} ({gd_steps[-1]} steps)")
    gd = run_trajectory(task, optimizer_settings("gd", rate.lr, rate.rhos[0]), gd_steps[-1], gd_steps,
                        chunk_size=2, method="gd", observe=observer(rate.rhos[0], set(gd_steps)))
    gd_at = {s: r.get("alignment", math.nan) for s, r in zip(gd.steps, gd.records)}
    rows += [{"method": LABELS["gd"], "rho": None, "step": s, "tau": None, "|cos(g, v_1)|": gd_at[s]} for s in gd_steps]
    for rho in rate.rhos:
        at = _schedule(steps_of[rho], rate.points)
        log(f"figure1: alignment rate, SAM lr {rate.lr}, rho {rho} ({steps_of[rho]} steps to tau {rate.tau})")
        run = run_trajectory(task, optimizer_settings("sam-full", rate.lr, rho), steps_of[rho], at, chunk_size=2,
                             method="sam-full", observe=observer(rho, set(at)))
        cos = {s: r.get("alignment", math.nan) for s, r in zip(run.steps, run.records)}
        series.append(AngleSeries(rho, at, [cos[s] for s in at]))
        gd_series.append(AngleSeries(rho, gd_steps, [gd_at[s] for s in gd_steps]))
        rows += [{"method": LABELS["sam-full"], "rho": rho, "step": s, "tau": rate.lr * rho ** 2 * s,
                  "|cos(g, v_1)|": cos[s]} for s in at]
    lambda_1 = toy.on_gamma(*rate.start[:2])["lambda_1"]
    claim = rate_verdict(regimes.full_batch_sam(rate.lr, max(rate.rhos), lambda_1), "sam-alignment-rate", series,
                         rate.slope_min, rate.tau, {})
    gd_regime = regimes.Regime("Sec. 4 (GD: no rho in its update)", "the rate criterion on GD's gradient",
                               {"eta": rate.lr}, None)
    control = rate_verdict(gd_regime, "sam-alignment-rate-on-gd", gd_series, rate.slope_min, rate.tau, {},
                           control=True, claim="the alignment-rate criterion on GD's gradient (must reject: GD has "
                                               "no rho, its angle cannot scale with it)")
    return ToyRateResult([claim, control], rows)


def _xy(run: Trajectory) -> torch.Tensor:
    return run.theta[:2].to(torch.float64)


def second_half_movement(run: Trajectory) -> float:
    """How far (x1, x2) moved over the second half of a run's records."""
    half = min(range(len(run.steps)), key=lambda i: abs(run.steps[i] - run.steps[-1] / 2))
    return float((_xy(run) - run.thetas[half][:2].to(torch.float64)).norm())


def _to(run: Trajectory, point) -> float:
    return float((_xy(run) - torch.tensor(point, dtype=torch.float64)).norm())


def controls(cfg, toy: Figure1Toy, runs: dict, sam_in: Trajectory, minimizers: dict, start_in) -> list[Verdict]:
    """figure1's judged criteria on dynamics they must reject."""
    lam = toy.on_gamma(*cfg.start[:2])["lambda_1"]
    one = regimes.one_sam(cfg.lr, cfg.rho, 2 * lam)
    inside = regimes.full_batch_sam(cfg.sam_in_regime.lr, cfg.sam_in_regime.rho,
                                    toy.on_gamma(*start_in[:2])["lambda_1"])
    gd = regimes.Regime("Sec. 4 (GD)", "eta lambda_1 < 2", {"eta": cfg.lr, "eta lambda_1": cfg.lr * lam},
                        cfg.lr * lam < 2)
    out = []
    for method, regime in (("sam-1", one), ("gd", gd)):
        d = _to(runs[method], minimizers["argmin F1"])
        out.append(regime.control(
            f"sam-to-argmin-F1-on-{method}", f"SAM's end-point criterion (argmin F1) on {LABELS[method]}'s run "
            "(must reject)", f"end point within {cfg.tol_sam} of argmin F1", {"to argmin F1": d}, d <= cfg.tol_sam))
    ends = {k: _to(sam_in, minimizers[k]) for k in ("argmin F1", "argmin F2", "argmin F1+F2")}
    out.append(inside.control(
        "1sam-to-argmin-sum-on-sam-full", "1-SAM's end-point criterion (argmin F1+F2) on full-batch SAM's run "
        "(must reject)", f"end point within {cfg.tol_one_sam} of argmin F1+F2 and nearer to it than to the others",
        ends, ends["argmin F1+F2"] <= cfg.tol_one_sam and ends["argmin F1+F2"] < min(ends["argmin F1"],
                                                                                  ends["argmin F2"])))
    moved = second_half_movement(sam_in)
    out.append(inside.control(
        "gd-no-drift-on-sam", "GD's no-drift criterion on full-batch SAM's run (must reject)",
        f"moves <= {cfg.tol_gd} in (x1, x2) over the second half", {"moved over the second half": moved},
        moved <= cfg.tol_gd))
    alignment = runs["gd"].records[-1].get("alignment", math.nan)
    out.append(gd.control(
        "sam-phase2-alignment-on-gd", "SAM's alignment criterion on GD's gradient (must reject: GD's gradient "
        "ends along the slow direction v_M)", "|cos(g, v_1)| >= 0.99 at the end", {"alignment end": alignment},
        alignment >= 0.99))
    last = {m: runs[m].records[-1] for m in ("gd", "sam-1")}
    out.append(gd.control(
        "sam-vs-1sam-regularizers-on-gd", "the regularizer criterion with GD in SAM's place (must reject)",
        "lambda_1(GD) < lambda_1(1-SAM) and Tr(1-SAM) < Tr(GD), at the end points",
        {"lambda_1 GD": last["gd"]["lambda_1"], "lambda_1 1-SAM": last["sam-1"]["lambda_1"],
         "Tr GD": last["gd"]["trace"], "Tr 1-SAM": last["sam-1"]["trace"]},
        last["gd"]["lambda_1"] < last["sam-1"]["lambda_1"] and last["sam-1"]["trace"] < last["gd"]["trace"]))
    return out


__all__ = ["ToyRate", "alignment_rate", "controls", "resolve_steps", "second_half_movement"]
