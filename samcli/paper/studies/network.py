"""network: Thm 4.5 and Thm 5.4 on a real network (Setting 5.1), each method inside its own theorem's regime.

From one interpolating point, full-batch SAM and 1-SAM continue with their own (eta, rho), chosen so
that each satisfies its theorem and both have the same eta rho^2: equal step counts are then equal flow
time tau = eta rho^2 t, and the runs are measured at the same ladder of tau. What the theorems imply:

- the drift of the iterate along Gamma points along -P grad lambda_1 for SAM and along -P grad Tr for
  1-SAM (cosines from samcli.paper.drift, between consecutive points of the ladder);
- with a = ||P grad lambda_1||^2, b = ||P grad Tr||^2, c = <P grad lambda_1, P grad Tr> (c^2 <= ab),
  Delta lambda_1 / Delta Tr is larger for SAM (a/c) than for 1-SAM (c/b) when c > 0;
- in Phase II SAM's gradient aligns with v_1 (angle O(rho)), claimed only for small rho/eta: judged on
  a ladder of rho/eta, inside the regime only.

Which method lowers lambda_1 (or Tr) more is not implied (c > a is allowed): reported, not judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ...config import SamcliError
from .. import plots, regimes
from ..configs import COUNT, FINITE, FRACTION, POSITIVE, Rule, at_least, require
from ..drift import Regression, drift_direction
from ..skeleton import Findings, Log, write_table
from ..trajectory import LABELS, Trajectory
from ..verdicts import Verdict
from .netrate import alignment_rate
from .netrate import controls as _controls
from .netsetup import NetworkSetup, StartPoint, continue_from, interpolating_point, relative_change


@dataclass
class NetworkConfig(NetworkSetup):
    """The network study's settings: SAM's (lr, rho), the tau ladder, alignment ladder, tolerances."""
    sam_lr: float = 0.05               # eta lambda_1 about 0.45 at the interpolating point
    sam_rho: float = 0.015             # rho/eta = 0.3; 1-SAM's rho follows from equal eta rho^2
    taus: list[float] = field(default_factory=lambda: [0.025, 0.05, 0.1, 0.15, 0.2])
    gd_control_steps: int = 2000       # GD (lr sam_lr) from the interpolating point: does it move?
    alignment_ladder: list[list[float]] = field(default_factory=lambda: [[0.05, 0.005], [0.05, 0.05], [0.008, 0.1]])
    ladder_steps: int = 1000           # SAM steps per extra rung of the alignment ladder, from the main run's end
    ladder_points: int = 4             # alignment measured at this many evenly spaced steps per rung
    tol_cos: float = 0.9               # drift-direction cosine with its flow, every interval after the first
    tol_alignment: float = 0.9         # |cos(g, v_1)| at every measurement in the second half of a rung
    tol_gd_change: float = 0.05        # GD: relative change of lambda_1 and Tr at most this
    rate_rhos: list[float] = field(default_factory=lambda: [0.015, 0.0106, 0.0075])   # at lr sam_lr, one start
    rate_tau: float = 0.025            # every radius runs to this tau = eta rho^2 t (equal flow time)
    rate_points: int = 8               # |cos(g, v_1)| measured at this many evenly spaced (even) steps per radius
    rate_slope_min: float = 0.75       # log-log slope of angle vs rho at least this (angle = c rho: slope 1)
    rate_max_steps: int = 40000        # cap per radius: a radius needing more is not run (the verdict says so)
    RULES: ClassVar[dict[str, Rule]] = {
        "sam_lr": POSITIVE, "sam_rho": POSITIVE, "taus": POSITIVE, "gd_control_steps": COUNT,
        "alignment_ladder": POSITIVE, "ladder_steps": at_least(4), "ladder_points": at_least(2), "tol_cos": FRACTION,
        "tol_alignment": FRACTION, "tol_gd_change": POSITIVE, "rate_rhos": POSITIVE, "rate_tau": POSITIVE,
        "rate_points": at_least(4), "rate_slope_min": FINITE, "rate_max_steps": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        super().validate()
        require(len(self.taus) >= 2 and self.taus == sorted(self.taus), "taus must be >= 2 increasing flow times")
        require(all(len(p) == 2 for p in self.alignment_ladder), "alignment_ladder must list [lr, rho] pairs")
        require(len(self.rate_rhos) >= 3, "rate_rhos must list at least 3 radii (the alignment-rate slope)")


def network(cfg: NetworkConfig, out: Path, log: Log) -> Findings:
    """Run SAM and 1-SAM from the interpolating point and judge drift, ratio and alignment."""
    start = interpolating_point(cfg, log)
    eta_1 = start.one_sam_lr
    rho_1 = cfg.sam_rho * math.sqrt(cfg.sam_lr / eta_1)            # equal eta rho^2
    tau_per_step = cfg.sam_lr * cfg.sam_rho ** 2
    ladder = sorted({2 * max(1, round(t / tau_per_step / 2)) for t in cfg.taus})   # even: SAM's 2-cycle cancels
    regime = {"sam-full": regimes.full_batch_sam(cfg.sam_lr, cfg.sam_rho, start.lambda_1),
              "sam-1": regimes.one_sam(eta_1, rho_1, start.max_example_lambda)}
    settings = {"sam-full": (cfg.sam_lr, cfg.sam_rho), "sam-1": (eta_1, rho_1)}
    runs: dict[str, Trajectory] = {}
    for method, (lr, rho) in settings.items():
        log(f"network: {LABELS[method]} from the interpolating point ({ladder[-1]} steps to tau "
            f"{tau_per_step * ladder[-1]:.3g}, lr {lr:.4g}, rho {rho:.4g})")
        runs[method] = continue_from(start.task, method, lr, rho, ladder[-1], ladder, seed=cfg.seed,
                                     lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes)
    log(f"network: GD from the interpolating point ({cfg.gd_control_steps} steps, lr {cfg.sam_lr})")
    runs["gd"] = continue_from(start.task, "gd", cfg.sam_lr, cfg.sam_rho, cfg.gd_control_steps, [], seed=cfg.seed,
                               lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes)
    drift_rows = _drift_rows(start, runs, tau_per_step, log)
    rungs = _alignment_ladder(cfg, start, runs["sam-full"], log)
    rate = alignment_rate(cfg, start, log)
    along = [{"method": LABELS[m], "step": s, "tau": tau_per_step * s if m != "gd" else None,
              **{k: r.get(k) for k in ("train_loss", "lambda_1", "lambda_2", "trace", "trace_stderr", "trace_ggn",
                                       "alignment", "test_accuracy", "lanczos_converged")}}
             for m, run in runs.items() for s, r in zip(run.steps, run.records) if "lambda_1" in r]
    summary = [_summary_row(m, run) for m, run in runs.items()]
    setup = {**start.info, "SAM lr": cfg.sam_lr, "SAM rho": cfg.sam_rho, "1-SAM rho": rho_1,
             "eta rho^2": tau_per_step}
    verdicts = [_setup_verdict(cfg, start)] + _drift_verdicts(cfg, regime, drift_rows) + [
        _ratio_verdict(regime, runs, drift_rows)] + _alignment_verdicts(cfg, rungs, start.lambda_1) + rate.verdicts
    verdicts += _observations(cfg, start, runs, summary) + _controls(cfg, regime, drift_rows, runs, start, rate.gd)
    files = write_table(out, "summary", summary) + write_table(out, "along_the_way", along)
    files += write_table(out, "setup", [setup]) + write_table(out, "drift_directions", drift_rows)
    files += write_table(out, "alignment_ladder", [{k: v for k, v in r.items() if k != "curve"} for r in rungs])
    files += write_table(out, "alignment_rate", rate.rows)
    files += plots.network_study(out / "sharpness.png", runs, drift_rows, tau_per_step,
                                 f"from an interpolating point ({len(start.task.train)} mnist1d examples, "
                                 f"D = {start.task.objective.dim}): SAM lr {cfg.sam_lr}, rho {cfg.sam_rho}; "
                                 f"1-SAM lr {eta_1:.3g}, rho {rho_1:.3g}")
    files += plots.alignment_ladder(out / "alignment_ladder.png", rungs, regimes.RHO_OVER_ETA_MAX)
    return Findings(verdicts, {"summary": summary, "setup": [setup], "drift_directions": drift_rows,
                               "alignment_ladder": rungs, "alignment_rate": rate.rows}, files, {"along_the_way": along})


def _summary_row(method: str, run: Trajectory) -> dict:
    first, last = run.records[0], run.records[-1]
    return {"method": LABELS[method], "status": run.status, "steps": run.steps[-1],
            "lambda_1 start": first.get("lambda_1"), "lambda_1 end": last.get("lambda_1"),
            "lambda_1 change": relative_change(run, "lambda_1"), "Tr start": first.get("trace_ggn"),
            "Tr end": last.get("trace_ggn"), "Tr change": relative_change(run, "trace_ggn"),
            "lambda_2/lambda_1 end": (last["lambda_2"] / last["lambda_1"]) if last.get("lambda_2") else None,
            "alignment end": last.get("alignment"), "train loss end": last.get("train_loss"),
            "test acc start": first.get("test_accuracy"), "test acc end": last.get("test_accuracy"),
            "seconds": run.seconds}


def _drift_rows(start: StartPoint, runs: dict, tau_per_step: float, log: Log) -> list[dict]:
    """drift_direction between consecutive measured points of each run, evaluated at the earlier one."""
    model = Regression.from_objective(start.task.objective, start.task.train)
    rows = []
    for method in ("sam-full", "sam-1"):
        run = runs[method]
        log(f"network: drift directions of {LABELS[method]} ({len(run.steps) - 1} intervals)")
        for (s0, x0), (s1, x1) in zip(zip(run.steps, run.thetas), zip(run.steps[1:], run.thetas[1:])):
            row = {"method": LABELS[method], "from step": s0, "to step": s1, "tau from": tau_per_step * s0,
                   "tau to": tau_per_step * s1}
            try:
                d = drift_direction(model, x0, x1)
                row.update(cos_lambda_1=d.cos_lambda_1, cos_trace=d.cos_trace, a=d.a, b=d.b, c=d.c,
                           cos_flows=d.c / math.sqrt(d.a * d.b), drift=d.drift, normal_drift=d.normal_drift,
                           lambda_1=d.lambda_1, lanczos_residual=d.lanczos_residual)
            except SamcliError as err:       # e.g. a degenerate lambda_1: grad lambda_1 undefined there
                row.update(cos_lambda_1=math.nan, cos_trace=math.nan, error=str(err))
            rows.append(row)
    return rows


def _setup_verdict(cfg: NetworkConfig, start: StartPoint) -> Verdict:
    loss = start.info["train_loss"]
    return regimes.precondition("Setting 5.1", gd_lr=cfg.gd_lr, gd_steps=cfg.gd_steps).verdict(
        "setup-interpolation", "GD reaches an interpolating point (where Phase II of Setting 5.1 starts)",
        f"train loss <= {cfg.interpolation_loss:g}", {"train loss": loss}, loss <= cfg.interpolation_loss)


def _drift_verdicts(cfg: NetworkConfig, regime: dict, rows: list[dict]) -> list[Verdict]:
    out = []
    for method, key, other, flow in (("sam-full", "cos_lambda_1", "cos_trace", "-P grad lambda_1"),
                                     ("sam-1", "cos_trace", "cos_lambda_1", "-P grad Tr")):
        mine = [r for r in rows if r["method"] == LABELS[method]]
        judged = mine[1:]                 # the first interval holds Phase I
        cosines = [r[key] for r in judged]
        ok = bool(cosines) and all(math.isfinite(c) and c >= cfg.tol_cos for c in cosines)
        out.append(regime[method].verdict(
            f"drift-direction-{method}", f"{LABELS[method]}'s drift along Gamma points along {flow}",
            f"cos(P (x_t - x_s), {flow}) >= {cfg.tol_cos} on every interval of the tau ladder after the first "
            "(Phase I)", {"cosines": [r[key] for r in mine], f"cosines with the other flow ({other})":
                          [r[other] for r in mine], "cos(P grad lambda_1, P grad Tr) at the start":
                          mine[0].get("cos_flows") if mine else math.nan}, ok))
    return out


def _ratio_verdict(regime: dict, runs: dict, rows: list[dict]) -> Verdict:
    both = regimes.Regime("Thm 4.5 with Thm 5.4 (c^2 <= ab)", "both methods in their regimes",
                          {f"{LABELS[m]} {k}": v for m in ("sam-full", "sam-1") for k, v in regime[m].settings.items()},
                          regime["sam-full"].in_regime and regime["sam-1"].in_regime)
    ratio = {}
    for method in ("sam-full", "sam-1"):
        first, last = runs[method].records[0], runs[method].records[-1]
        d_tr = last["trace_ggn"] - first["trace_ggn"]
        ratio[method] = (last["lambda_1"] - first["lambda_1"]) / d_tr if d_tr else math.nan
    start = next((r for r in rows if r["method"] == LABELS["sam-full"] and "a" in r), {})
    a, b, c = (start.get(k, math.nan) for k in "abc")
    return both.verdict(
        "ratio-test", "Delta lambda_1 / Delta Tr is larger for full-batch SAM than for 1-SAM",
        "over the whole runs (same tau): ratio(SAM) > ratio(1-SAM), where c > 0 at the start",
        {"SAM": ratio["sam-full"], "1-SAM": ratio["sam-1"], "predicted at the start: a/c (SAM)": a / c,
         "c/b (1-SAM)": c / b, "c": c}, c > 0 and ratio["sam-full"] > ratio["sam-1"],
        note="the theorems give it pointwise, at one point; over a run the two paths part, so this is its "
             "integrated form")


def _alignment_ladder(cfg: NetworkConfig, start: StartPoint, main: Trajectory, log: Log) -> list[dict]:
    """SAM's |cos(g, v_1)| on a ladder of rho/eta: the main run (after its first tau interval), and one short
    run per extra rung from the main run's end point, where Phase I is long over (from the GD point, the
    residual left in GD's slowest directions would dominate g for many steps at small rho)."""
    rungs: list[dict[str, Any]] = [{"lr": cfg.sam_lr, "rho": cfg.sam_rho, "steps": main.steps[1:],
              "alignment": [r.get("alignment") for r in main.records[1:]], "judged from step": main.steps[1]}]
    every = cfg.ladder_steps // cfg.ladder_points
    at = [every * (i + 1) for i in range(cfg.ladder_points)]
    for lr, rho in cfg.alignment_ladder:
        log(f"network: alignment rung rho/eta = {rho / lr:.3g} (SAM lr {lr}, rho {rho}, {cfg.ladder_steps} steps)")
        run = continue_from(replace(start.task, theta=main.theta), "sam-full", lr, rho, at[-1], at, seed=cfg.seed,
                            lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes)
        rungs.append({"lr": lr, "rho": rho, "steps": run.steps[1:],
                      "alignment": [r.get("alignment") for r in run.records[1:]],
                      "judged from step": at[len(at) // 2]})
    for rung in rungs:
        rung["rho/eta"] = rung["rho"] / rung["lr"]
        later = [a for s, a in zip(rung["steps"], rung["alignment"]) if s >= rung["judged from step"]]
        rung["min alignment judged"] = min((a if a is not None else math.nan) for a in later) if later else math.nan
        rung["curve"] = list(zip(rung["steps"], rung["alignment"]))
    return sorted(rungs, key=lambda r: r["rho/eta"])


def _alignment_verdicts(cfg: NetworkConfig, rungs: list[dict], lambda_1: float) -> list[Verdict]:
    out = []
    for rung in rungs:
        out.append(regimes.full_batch_sam(rung["lr"], rung["rho"], lambda_1).verdict(
            f"sam-alignment-rho/eta={rung['rho/eta']:.3g}",
            "in Phase II full-batch SAM's gradient aligns with the top Hessian eigenvector (angle O(rho))",
            f"|cos(g, v_1)| >= {cfg.tol_alignment} at every measurement from step {rung['judged from step']} on",
            {"min |cos(g, v_1)| judged": rung["min alignment judged"], "|cos| along the run": rung["alignment"]},
            rung["min alignment judged"] >= cfg.tol_alignment,
            note="the rho/eta ladder shows the regime boundary: only rho/eta <= "
                 f"{regimes.RHO_OVER_ETA_MAX} is judged"))
    return out


def _observations(cfg: NetworkConfig, start: StartPoint, runs: dict, summary: list[dict]) -> list[Verdict]:
    by = {m: row for m, row in zip(runs, summary)}
    gd = by["gd"]
    gd_regime = regimes.Regime("Sec. 4 (GD converges to Gamma and stops)", "eta lambda_1 < 2",
                               {"eta": cfg.sam_lr, "eta lambda_1": cfg.sam_lr * start.lambda_1,
                                "steps": cfg.gd_control_steps}, cfg.sam_lr * start.lambda_1 < 2)
    return [
        gd_regime.verdict("gd-changes-neither", "GD from the interpolating point changes neither lambda_1 nor Tr",
                          f"|relative change| <= {cfg.tol_gd_change} for both",
                          {"lambda_1": gd["lambda_1 change"], "Tr": gd["Tr change"]},
                          gd["status"] == "completed" and abs(gd["lambda_1 change"]) <= cfg.tol_gd_change
                          and abs(gd["Tr change"]) <= cfg.tol_gd_change),
        regimes.observation().verdict(
            "which-lowers-lambda1-more", "which method lowers lambda_1 more (not implied by the theorems: c > a "
            "is allowed)", "reported, not judged",
            {"SAM": by["sam-full"]["lambda_1 change"], "1-SAM": by["sam-1"]["lambda_1 change"]}, None),
        regimes.observation().verdict(
            "which-lowers-trace-more", "which method lowers Tr more (not implied either: c > b is allowed)",
            "reported, not judged", {"SAM": by["sam-full"]["Tr change"], "1-SAM": by["sam-1"]["Tr change"]}, None),
        regimes.observation().verdict(
            "test-accuracy", "test accuracy beside the sharpness changes", "reported, not judged",
            {LABELS[m]: by[m]["test acc end"] for m in runs}
            | {"at the interpolating point": start.info["test_accuracy"]},
            None),
    ]
