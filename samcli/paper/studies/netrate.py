"""The network study's alignment-rate test (samcli.paper.alignrate) and its negative controls.

The rate test: from the interpolating point, full-batch SAM at one eta (sam_lr) and >= 3 radii, each to
the same tau = eta rho^2 t; judged by the log-log slope of the final angle against rho, open ("not in
Phase II") while an angle still changes. Beside it the smallest non-zero curvature on Gamma, lambda_M
(the smallest eigenvalue of the Gauss-Newton Gram J J^T / n, scaled so that its largest is lambda_1), and
the relaxation steps 1 / (eta lambda_M) of the slowest normal mode it implies: Phase II needs many of them.

Negative controls (each criterion on dynamics it must reject, shown as verdicts of kind "control"): the
SAM drift test on 1-SAM's trajectory and the 1-SAM drift test on SAM's, GD's no-change test on SAM's run,
the |cos(g, v_1)| alignment test and the rate test on GD.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import regimes
from ..alignrate import AngleSeries, rate_verdict
from ..drift import Regression, output_jacobian
from ..skeleton import Log
from ..trajectory import LABELS
from ..verdicts import Verdict
from .netsetup import StartPoint, continue_from, relative_change


@dataclass(frozen=True)
class RateResult:
    """The rate verdicts (claim and GD control), the table rows, and GD's alignment series."""
    verdicts: list[Verdict]
    rows: list[dict]
    gd: AngleSeries


def smallest_curvature(start: StartPoint) -> float:
    """lambda_M on Gamma: the smallest eigenvalue of J J^T / n, scaled so its largest is lambda_1 (the
    Gauss-Newton Hessian's non-zero spectrum whatever the loss's constant factor)."""
    model = Regression.from_objective(start.task.objective, start.task.train)
    with torch.no_grad():
        J = output_jacobian(model, start.task.theta.detach())
        values = torch.linalg.eigvalsh(J @ J.T / model.examples)
    return float(values[0] / values[-1]) * start.lambda_1


def _schedule(steps: int, points: int) -> list[int]:
    """`points` evenly spaced even steps ending at `steps` (even: SAM's 2-cycle cancels)."""
    return sorted({2 * max(1, round(steps * (i + 1) / points / 2)) for i in range(points)})


def alignment_rate(cfg, start: StartPoint, log: Log) -> RateResult:
    """SAM at each radius of cfg.rate_rhos (and GD, the control) from the interpolating point to tau."""
    eta, tau = cfg.sam_lr, cfg.rate_tau
    lambda_m = smallest_curvature(start)
    relax = 1 / (eta * lambda_m) if lambda_m > 0 else math.inf
    series, rows, skipped = [], [], []
    for rho in cfg.rate_rhos:
        steps = 2 * max(2, round(tau / (eta * rho ** 2) / 2))
        if steps > cfg.rate_max_steps:
            skipped.append(rho)
            continue
        at = _schedule(steps, cfg.rate_points)
        log(f"network: alignment rate, SAM lr {eta}, rho {rho} ({steps} steps to tau {tau})")
        run = continue_from(start.task, "sam-full", eta, rho, steps, at, seed=cfg.seed,
                            lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes)
        pairs = [(s, r["alignment"]) for s, r in zip(run.steps, run.records)
                 if s in at and r.get("alignment") is not None]
        series.append(AngleSeries(rho, [p[0] for p in pairs], [p[1] for p in pairs]))
        rows += [{"method": LABELS["sam-full"], "rho": rho, "step": s, "tau": eta * rho ** 2 * s, "|cos(g, v_1)|": c}
                 for s, c in pairs]
    # GD has no rho (and no tau): its angle is read at the largest radius's steps for every radius
    at = list(min(series, key=lambda s: s.steps[-1]).steps) if series else _schedule(2, cfg.rate_points)
    log(f"network: alignment rate control, GD lr {eta} ({at[-1]} steps)")
    gd_run = continue_from(start.task, "gd", eta, cfg.rate_rhos[0], at[-1], at, seed=cfg.seed,
                           lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes)
    gd_by_step: dict[int, float] = {s: r["alignment"] if r.get("alignment") is not None else math.nan
                                    for s, r in zip(gd_run.steps, gd_run.records)}
    rows += [{"method": LABELS["gd"], "rho": None, "step": s, "tau": None, "|cos(g, v_1)|": gd_by_step[s]} for s in at]
    gd_series = [AngleSeries(s.rho, at, [gd_by_step.get(t, math.nan) for t in at]) for s in series]
    extra = {"lambda_M on Gamma": lambda_m, "relaxation steps 1/(eta lambda_M)": relax,
             "radii over the cap": skipped}
    regime = regimes.full_batch_sam(eta, max(cfg.rate_rhos), start.lambda_1)
    claim = rate_verdict(regime, "sam-alignment-rate", series, cfg.rate_slope_min, tau, extra)
    gd_regime = regimes.Regime("Sec. 4 (GD: no rho in its update)", "the rate criterion on GD's gradient",
                               {"eta": eta}, None)
    control = rate_verdict(gd_regime, "sam-alignment-rate-on-gd", gd_series, cfg.rate_slope_min, tau, extra,
                           control=True, claim="the alignment-rate criterion on GD's gradient (must reject: GD has "
                                               "no rho, its angle cannot scale with it)")
    return RateResult([claim, control], rows, AngleSeries(0.0, at, [gd_by_step[s] for s in at]))


def controls(cfg, regime: dict, rows: list[dict], runs: dict, start: StartPoint, gd: AngleSeries) -> list[Verdict]:
    """Each judged criterion of the network study on dynamics it must reject."""
    out = []
    for method, key, flow, wrong in (("sam-full", "cos_lambda_1", "-P grad lambda_1", "sam-1"),
                                     ("sam-1", "cos_trace", "-P grad Tr", "sam-full")):
        theirs = [r[key] for r in rows if r["method"] == LABELS[wrong]][1:]
        ok = bool(theirs) and all(math.isfinite(c) and c >= cfg.tol_cos for c in theirs)
        out.append(regime[wrong].control(
            f"drift-direction-{method}-on-{wrong}", f"{LABELS[method]}'s drift criterion ({flow}) on "
            f"{LABELS[wrong]}'s trajectory (must reject)", f"cos(P (x_t - x_s), {flow}) >= {cfg.tol_cos} on every "
            "interval after the first", {"cosines": theirs}, ok))
    sam = runs["sam-full"]
    changes = {"lambda_1": relative_change(sam, "lambda_1"), "Tr": relative_change(sam, "trace_ggn")}
    out.append(regime["sam-full"].control(
        "gd-changes-neither-on-sam-full", "GD's no-change criterion on full-batch SAM's run (must reject)",
        f"|relative change| <= {cfg.tol_gd_change} for both", changes,
        all(abs(c) <= cfg.tol_gd_change for c in changes.values())))
    later = [c for s, c in zip(gd.steps, gd.cosines) if s >= gd.steps[len(gd.steps) // 2]]
    out.append(regimes.Regime("Sec. 4 (GD)", "the alignment criterion on GD's gradient", {"eta": cfg.sam_lr},
                              None).control(
        "sam-alignment-on-gd", "the |cos(g, v_1)| alignment criterion on GD's gradient (must reject: GD removes "
        "the top direction first)", f"|cos(g, v_1)| >= {cfg.tol_alignment} at every measurement of the second half",
        {"|cos(g, v_1)| judged": later}, bool(later) and all(c >= cfg.tol_alignment for c in later)))
    return out
