"""`samcli reproduce`: the paper's predictions, each checked by running the engine.

Every study trains with `samcli.train.train` (the loop users train their models with) on a
`Task`, measures with `samcli.sharpness` where it measures sharpness, and writes into its study
directory: config.yaml, verdicts.md (one PASS / FAIL / open line per prediction, with the numbers),
results.json, tables (.csv + .md) and PNG plots.

Studies: figure1, quadratic, timescale, network, batchsize (see STUDIES).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from ..config import ConfigError
from ..sharpness.notions import Settings, measure
from . import plots
from .common import (LABELS, METHODS, StudyResult, Trajectory, Verdict, dump_config, finish, load_study_config,
                     optimizer_settings, record_schedule, require, run_trajectory, with_threads, write_table)
from .flows import ManifoldFlow
from .toys import Figure1Toy, angle_cos, quadratic, random_unit

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# =====================================================================================================
# figure1: the 4-parameter toy
# =====================================================================================================

@dataclass
class GapConfig:
    """Discrete trajectory vs limiting flow at a few tau, for (lr, rho) pairs shrinking together."""
    pairs: list[list[float]] = field(default_factory=lambda: [[0.04, 0.15], [0.028284, 0.106066], [0.02, 0.075]])
    taus: list[float] = field(default_factory=lambda: [0.03, 0.06, 0.09])
    start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.001, 0.001])


@dataclass
class Figure1Config:
    start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.3, 0.3])
    lr: float = 0.04
    rho: float = 0.15
    steps: int = 1500
    record_every: int = 10
    measure_points: int = 12           # points per run measured with the sharpness tool
    seed: int = 0
    flow_dt: float = 0.03              # RK4 step of the limiting flows, in tau
    tol_sam: float = 0.05              # full-batch SAM's end point within this of argmin F1
    tol_one_sam: float = 0.1           # 1-SAM's end point within this of argmin (F1 + F2)
    tol_gd: float = 1e-3               # GD moves at most this along Gamma after Phase I
    tol_bounce: float = 0.02           # relative error of SAM's distance to Gamma vs eta rho l1/(2 - eta l1)
    gap: GapConfig = field(default_factory=GapConfig)
    threads: int = 1                   # torch threads (0: torch's default; 1 is fastest for a 4-parameter toy)

    def validate(self) -> None:
        require(len(self.start) == 4, f"start={self.start} must be 4 numbers (x1, x2, x3, x4)")
        require(self.lr > 0 and self.rho > 0, "lr and rho must be > 0")
        require(self.steps >= 2 and self.record_every >= 1, "steps must be >= 2 and record_every >= 1")
        require(len(self.gap.start) == 4, f"gap.start={self.gap.start} must be 4 numbers")
        require(all(len(p) == 2 and p[0] > 0 and p[1] > 0 for p in self.gap.pairs),
                f"gap.pairs={self.gap.pairs} must be [lr, rho] pairs of positive numbers")
        require(all(t > 0 for t in self.gap.taus), f"gap.taus={self.gap.taus} must be > 0")


def _toy_observer(toy: Figure1Toy, measure_at: set[int], rho: float):
    """Position, distance to Gamma and closed-form lambda_1 / lambda_M / Tr on Gamma at every record; at the
    measure points also the sharpness tool: the exact Hessian spectrum at the projection of the iterate onto
    Gamma (what the theorems speak about) and |cos(g, v_1)| at the iterate itself."""
    objective, data = toy.objective(), toy.data()
    on_gamma = Settings(rho=rho, notions=(), finite=False, stochastic_examples=0, exact=True, chunk_size=2)
    at_iterate = Settings(rho=rho, notions=("ascent",), finite=False, stochastic_examples=0, lanczos_iters=4,
                          chunk_size=2)

    def observe(theta, record):
        x = theta.tolist()
        out = {"x1": x[0], "x2": x[1], "x3": x[2], "x4": x[3], "dist_gamma": math.hypot(x[2], x[3])}
        out.update({f"{k}_gamma": v for k, v in toy.on_gamma(x[0], x[1]).items()})
        if record["step"] in measure_at:
            exact = measure(objective, toy.project(theta), data, on_gamma).exact
            report = measure(objective, theta, data, at_iterate)
            out.update(lambda_1=exact.lambda_1, lambda_m=exact.lambda_m, trace=exact.trace,
                       alignment=report.alignment)
        return out
    return observe


@with_threads
def figure1(cfg: Figure1Config, out: Path, *, toy: Optional[Figure1Toy] = None, quick: bool = False,
            log: Log = _quiet) -> StudyResult:
    started = time.perf_counter()
    toy = toy or Figure1Toy()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out)
    start_xy = (cfg.start[0], cfg.start[1])
    minimizers = toy.minimizers(start_xy)
    a, b, c = (torch.tensor(minimizers[k], dtype=torch.float64) for k in ("argmin F1", "argmin F2", "argmin F1+F2"))
    task = toy.task(cfg.start)
    record_at = record_schedule(cfg.steps, cfg.record_every)
    every = max(1, len(record_at) // max(cfg.measure_points, 1))
    measure_at = {0, *record_at[every - 1::every], cfg.steps}

    runs: dict[str, Trajectory] = {}
    for method in METHODS:
        log(f"figure1: {LABELS[method]}, {cfg.steps} steps (lr {cfg.lr}, rho {cfg.rho})")
        runs[method] = run_trajectory(task, optimizer_settings(method, cfg.lr, cfg.rho), cfg.steps, record_at,
                                      seed=cfg.seed, chunk_size=2, method=method,
                                      observe=_toy_observer(toy, measure_at, cfg.rho))

    def xy(run: Trajectory, i: int = -1) -> torch.Tensor:
        return run.thetas[i][:2].to(torch.float64)

    # The limiting flows start at Phi(x0): the gradient-flow projection of the start onto Gamma,
    # approximated by where GD ends.
    phi0 = toy.project(runs["gd"].theta.to(torch.float64))
    eta_rho2 = cfg.lr * cfg.rho ** 2
    stride = max(1, len(runs["sam-full"].steps) // 60)        # the flows at <= ~60 points along the run
    flow_steps = runs["sam-full"].steps[::stride]
    flow_steps = flow_steps + ([] if flow_steps[-1] == cfg.steps else [cfg.steps])
    flow_taus = [eta_rho2 * s for s in flow_steps]
    flows = {}
    for method, reg in (("sam-full", "lambda_1"), ("sam-1", "trace"), ("ascent-gd", "lambda_m")):
        log(f"figure1: limiting flow of {reg} to tau = {flow_taus[-1]:.3g}")
        flow = ManifoldFlow(toy.objective(), toy.data(), reg, project=toy.project)
        flows[method] = flow.integrate(phi0, flow_taus, dt=cfg.flow_dt).points

    # ---- end points and the along-the-way table -----------------------------------------------------
    ends, along = [], []
    for method, run in runs.items():
        end = xy(run)
        rec = run.records[-1]
        ends.append({"method": LABELS[method], "x1": float(end[0]), "x2": float(end[1]),
                     "dist_gamma": rec["dist_gamma"], "to argmin F1": float((end - a).norm()),
                     "to argmin F2": float((end - b).norm()), "to argmin F1+F2": float((end - c).norm()),
                     "lambda_1": rec.get("lambda_1"), "lambda_M": rec.get("lambda_m"), "Tr": rec.get("trace"),
                     "alignment": rec.get("alignment"), "train_loss": rec.get("train_loss"), "status": run.status})
        for step, r in zip(run.steps, run.records):
            if "lambda_1" in r:
                along.append({"method": LABELS[method], "step": step, "tau": eta_rho2 * step, "x1": r["x1"],
                              "x2": r["x2"], "dist_gamma": r["dist_gamma"], "lambda_1": r["lambda_1"],
                              "lambda_M": r["lambda_m"], "Tr": r["trace"], "alignment": r["alignment"]})
    files = write_table(out, "endpoints", ends) + write_table(out, "along_the_way", along)
    minimizer_rows = [{"point": k, "x1": v[0], "x2": v[1], **toy.on_gamma(*v)} for k, v in minimizers.items()]
    files += write_table(out, "minimizers", minimizer_rows, digits=6)

    # ---- the gap to the flow for shrinking (lr, rho) ------------------------------------------------
    gap_rows = []
    gap_start = torch.tensor(cfg.gap.start, dtype=torch.float64)
    gap_task = toy.task(cfg.gap.start)
    taus = sorted(cfg.gap.taus)
    gap_flows = {}
    for method, reg in (("sam-full", "lambda_1"), ("sam-1", "trace")):
        flow = ManifoldFlow(toy.objective(), toy.data(), reg, project=toy.project)
        gap_flows[method] = flow.integrate(toy.project(gap_start), taus, dt=min(cfg.flow_dt, taus[0] / 2)).points
        for lr, rho in cfg.gap.pairs:
            steps_at = [max(1, round(t / (lr * rho ** 2))) for t in taus]
            log(f"figure1: gap of {LABELS[method]} at lr {lr}, rho {rho} ({steps_at[-1]} steps)")
            run = run_trajectory(gap_task, optimizer_settings(method, lr, rho), steps_at[-1], steps_at,
                                 seed=cfg.seed, chunk_size=2, method=method)
            by_step = dict(zip(run.steps, run.thetas))
            for tau, s, x_flow in zip(taus, steps_at, gap_flows[method]):
                x = by_step[s]
                gap_rows.append({"method": LABELS[method], "lr": lr, "rho": rho, "tau": tau, "steps": s,
                                 "tau_discrete": lr * rho ** 2 * s,
                                 "gap": float((x[:2].to(torch.float64) - x_flow[:2]).norm()),
                                 "flow_moved": float((x_flow[:2] - gap_start[:2]).norm())})
    files += write_table(out, "flow_gap", gap_rows)

    # ---- verdicts -------------------------------------------------------------------------------------
    verdicts = []
    gd = runs["gd"]
    settled = next((i for i, r in enumerate(gd.records) if r["dist_gamma"] < 1e-6), None)
    moved_after = float((xy(gd) - xy(gd, settled)).norm()) if settled is not None else float("nan")
    verdicts.append(Verdict(
        "gd-no-drift", "GD reaches Gamma and then does not move along it", "Sec. 4 (GD stops on Gamma)",
        f"movement in (x1, x2) after reaching dist(Gamma) < 1e-6 is <= {cfg.tol_gd}",
        {"reached Gamma at step": gd.steps[settled] if settled is not None else None,
         "moved after": moved_after, "moved in Phase I": float((xy(gd) - xy(gd, 0)).norm()),
         "end to argmin F1": float((xy(gd) - a).norm())},
        settled is not None and moved_after <= cfg.tol_gd))
    sam, one = runs["sam-full"], runs["sam-1"]
    d_sam = {k: float((xy(sam) - p).norm()) for k, p in (("to argmin F1", a), ("to argmin F2", b), ("to argmin F1+F2", c))}
    verdicts.append(Verdict(
        "sam-to-argmin-F1", "full-batch SAM drifts to argmin F1 (minimizes lambda_1 = 2 F1)", "Thm 4.5, Fig. 1",
        f"end point within {cfg.tol_sam} of argmin F1", d_sam, d_sam["to argmin F1"] <= cfg.tol_sam))
    d_one = {k: float((xy(one) - p).norm()) for k, p in (("to argmin F1", a), ("to argmin F2", b), ("to argmin F1+F2", c))}
    verdicts.append(Verdict(
        "1sam-to-argmin-sum", "1-SAM drifts to argmin (F1 + F2) (minimizes Tr = 2 (F1 + F2))", "Thm 5.4, Fig. 1",
        f"end point within {cfg.tol_one_sam} of argmin F1+F2 and nearer to it than to argmin F1 or argmin F2",
        d_one, d_one["to argmin F1+F2"] <= cfg.tol_one_sam and d_one["to argmin F1+F2"] < min(d_one["to argmin F1"], d_one["to argmin F2"]),
        note="Thm 5.4's error is O~(sqrt(eta) + rho): a finite-eta bias toward argmin F1 is expected"))
    asc = runs["ascent-gd"]
    d_asc = {k: float((xy(asc) - p).norm()) for k, p in (("to argmin F1", a), ("to argmin F2", b), ("to argmin F1+F2", c))}
    d_asc["dist to Gamma"] = asc.records[-1]["dist_gamma"]
    verdicts.append(Verdict(
        "ascent-gd-to-argmin-F2", "GD on the ascent-direction loss drifts to argmin F2 (lambda_M = 2 F2)", "Fig. 1",
        "open check (PAPER.md: sensitive to eta and rho); reported, not judged", d_asc, None,
        note=f"ended nearest to {min(('argmin F1', 'argmin F2', 'argmin F1+F2'), key=lambda k: d_asc['to ' + k])}"))
    first, last = sam.records[0], sam.records[-1]
    verdicts.append(Verdict(
        "sam-lambda1-alignment", "under full-batch SAM lambda_1 decreases and the gradient aligns with the top "
        "eigenvector (angle O(rho))", "Thm 4.5", "lambda_1(end) < lambda_1(start) and |cos(g, v_1)| >= 0.99 at the end",
        {"lambda_1 start": first["lambda_1"], "lambda_1 end": last["lambda_1"], "alignment end": last["alignment"]},
        last["lambda_1"] < first["lambda_1"] and last["alignment"] >= 0.99))
    lam_end = 2 * float(toy.values(*xy(sam).tolist())[0])
    predicted = cfg.lr * cfg.rho * lam_end / (2 - cfg.lr * lam_end)
    bounce = last["dist_gamma"]
    verdicts.append(Verdict(
        "sam-bounce", "full-batch SAM bounces across the valley at distance eta rho lambda_1 / (2 - eta lambda_1)",
        "Thm 4.5", f"relative error <= {cfg.tol_bounce}",
        {"measured": bounce, "predicted": predicted, "relative error": abs(bounce - predicted) / predicted},
        abs(bounce - predicted) / predicted <= cfg.tol_bounce))
    one_last = one.records[-1]
    verdicts.append(Verdict(
        "sam-vs-1sam-regularizers", "full-batch SAM ends with the lower lambda_1, 1-SAM with the lower Tr",
        "Thm 4.5 vs Thm 5.4", "lambda_1(SAM) < lambda_1(1-SAM) and Tr(1-SAM) < Tr(SAM), measured at the end points",
        {"lambda_1 SAM": last["lambda_1"], "lambda_1 1-SAM": one_last["lambda_1"], "Tr SAM": last["trace"],
         "Tr 1-SAM": one_last["trace"]},
        last["lambda_1"] < one_last["lambda_1"] and one_last["trace"] < last["trace"]))
    for method in ("sam-full", "sam-1"):
        worst = [max(r["gap"] for r in gap_rows if r["method"] == LABELS[method] and r["lr"] == lr and r["rho"] == rho)
                 for lr, rho in cfg.gap.pairs]
        shrinking = all(w2 < w1 for w1, w2 in zip(worst, worst[1:]))
        verdicts.append(Verdict(
            f"flow-gap-{method}", f"{LABELS[method]} follows its limiting flow "
            f"(-1/2 grad {'lambda_1' if method == 'sam-full' else 'Tr'}) as (eta, rho) shrink together",
            "Thm 4.5" if method == "sam-full" else "Thm 5.4",
            f"max gap over tau in {taus} decreases strictly along the (lr, rho) pairs {cfg.gap.pairs}",
            {f"gap at lr={lr},rho={rho}": w for (lr, rho), w in zip(cfg.gap.pairs, worst)}, shrinking))
    problem = toy.check_order(*[torch.tensor([float(r[k]) for run in runs.values() for r in run.records])
                                for k in ("x1", "x2")])
    if problem:
        verdicts.append(Verdict("toy-assumption", "the toy's F1 > F2 > 0 along every trajectory", "Sec. 3 (Fig. 1 setup)",
                                "F1 > F2 > 0 at every recorded point", {"problem": problem}, False))

    # ---- plots ------------------------------------------------------------------------------------------
    files += plots.figure1_trajectories(out / "trajectories.png", toy, runs, flows, minimizers, cfg)
    files += plots.figure1_sharpness(out / "sharpness.png", runs, eta_rho2)
    files += plots.figure1_gap(out / "flow_gap.png", gap_rows, cfg.gap.pairs)

    result = StudyResult("figure1", out, verdicts, time.perf_counter() - started, quick, files,
                         {"endpoints": ends, "minimizers": minimizer_rows, "flow_gap": gap_rows})
    trajectories = {method: {"steps": run.steps, "x": [t.tolist() for t in run.thetas]} for method, run in runs.items()}
    return finish(result, cfg, {"toy": toy.name, "trajectories": trajectories,
                                "flows": {m: {"tau": flow_taus, "x": p.tolist()} for m, p in flows.items()},
                                "phi0": phi0.tolist(), "tau_per_step": eta_rho2})


# =====================================================================================================
# quadratic: Thm 4.8
# =====================================================================================================

@dataclass
class QuadraticCase:
    eigenvalues: list[float] = field(default_factory=lambda: [1.0, 0.8, 0.6, 0.45, 0.3, 0.2])
    lr: float = 0.5
    rho: float = 0.1
    seed: int = 0                      # seeds the eigenbasis and the start direction


@dataclass
class QuadraticConfig:
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

    def validate(self) -> None:
        require(self.steps >= 2, "steps must be >= 2")
        require(len(self.cases) >= 1, "cases must list at least one case")
        for i, case in enumerate(self.cases):
            require(case.lr > 0 and case.rho > 0, f"cases[{i}]: lr and rho must be > 0")


@with_threads
def quadratic_study(cfg: QuadraticConfig, out: Path, *, quick: bool = False, log: Log = _quiet) -> StudyResult:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out)
    rows, curves, verdicts = [], [], []
    for i, case in enumerate(cfg.cases):
        quad = quadratic(case.eigenvalues, seed=case.seed)
        lam1, v1 = quad.lambda_1, quad.v1
        start = cfg.start_norm * random_unit(len(case.eigenvalues), seed=1000 + case.seed)
        predicted = quad.predicted_radius(case.lr, case.rho, lam1)
        log(f"quadratic: case {i} (D={len(case.eigenvalues)}, lr {case.lr}, rho {case.rho}, "
            f"eta lambda_1 = {case.lr * lam1:.3g}), {cfg.steps} steps")

        def observe(theta, record):
            return {"norm": float(theta.norm()), "cos": angle_cos(theta, v1)}
        record_at = record_schedule(cfg.steps - 1, cfg.record_every) + [cfg.steps]
        run = run_trajectory(quad.task(start), optimizer_settings("sam-full", case.lr, case.rho, grad_eps=cfg.grad_eps),
                             cfg.steps, record_at, chunk_size=len(case.eigenvalues), observe=observe, method="sam-full")
        x_t, x_prev = run.thetas[-1], run.thetas[-2]
        norm, cos = float(x_t.norm()), angle_cos(x_t, v1)
        rel = abs(norm - predicted) / predicted
        row = {"case": i, "D": len(case.eigenvalues), "lambda_1": lam1, "lambda_2": float(quad.eigenvalues[1]) if len(case.eigenvalues) > 1 else None,
               "lr": case.lr, "rho": case.rho, "eta_lambda_1": case.lr * lam1, "steps": run.steps[-1],
               "predicted_norm": predicted, "measured_norm": norm, "measured_norm_prev": float(x_prev.norm()),
               "relative_error": rel, "one_minus_abs_cos": 1 - cos,
               "two_cycle_residual": float((x_t + x_prev).norm()) / predicted, "status": run.status}
        rows.append(row)
        curves.append({"lr": case.lr, "rho": case.rho, "eta_lambda_1": case.lr * lam1, "predicted": predicted,
                       "steps": run.steps, "norms": run.column("norm"), "cosines": run.column("cos")})
        pre = case.lr * lam1 < 1
        verdicts.append(Verdict(
            f"radius-case{i}", f"||x_t|| -> eta rho lambda_1 / (2 - eta lambda_1) (case {i}: lr {case.lr}, rho {case.rho}, "
            f"lambda_1 {lam1:g})", "Thm 4.8", f"relative error <= {cfg.tol_radius:g}",
            {"predicted": f"{predicted:.15g}", "measured": f"{norm:.15g}", "relative error": rel},
            run.status == "completed" and rel <= cfg.tol_radius,
            note="" if pre else "precondition eta lambda_1 < 1 does not hold in this case"))
        verdicts.append(Verdict(
            f"direction-case{i}", f"x_t aligns with +-v_1 (case {i})", "Thm 4.8",
            f"1 - |cos(x_t, v_1)| <= {cfg.tol_direction:g}",
            {"1 - |cos|": 1 - cos, "x_t + x_(t-1) (2-cycle), relative": row["two_cycle_residual"]},
            run.status == "completed" and 1 - cos <= cfg.tol_direction))
    files = write_table(out, "radius", rows, digits=15)
    files += plots.quadratic_convergence(out / "convergence.png", curves)
    result = StudyResult("quadratic", out, verdicts, time.perf_counter() - started, quick, files, {"radius": rows})
    return finish(result, cfg, {"curves": curves})


# =====================================================================================================
# timescale: drift along Gamma needs Theta(1/(eta rho^2)) steps
# =====================================================================================================

@dataclass
class TimescaleConfig:
    start: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.001, 0.001])
    lr: float = 0.04
    rhos: list[float] = field(default_factory=lambda: [0.2, 0.1, 0.05, 0.025])
    methods: list[str] = field(default_factory=lambda: ["sam-full", "sam-1"])
    drift: float = 0.3                 # distance moved along Gamma whose step count is compared
    max_tau: float = 0.25              # give up at tau = eta rho^2 t beyond this
    points: int = 100                  # records per run (the crossing is interpolated between them)
    tol_ratio: float = 0.1             # steps(rho/2) / steps(rho) within 4 (1 +- tol_ratio)
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        require(len(self.start) == 4, f"start={self.start} must be 4 numbers")
        require(len(self.rhos) >= 2 and all(r > 0 for r in self.rhos), "rhos must list >= 2 positive radii")
        require(all(m in METHODS for m in self.methods), f"methods must be among {', '.join(METHODS)}")
        require(self.drift > 0 and self.max_tau > 0 and self.points >= 2, "drift, max_tau > 0 and points >= 2")


@with_threads
def timescale(cfg: TimescaleConfig, out: Path, *, toy: Optional[Figure1Toy] = None, quick: bool = False,
              log: Log = _quiet) -> StudyResult:
    started = time.perf_counter()
    toy = toy or Figure1Toy()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out)
    task = toy.task(cfg.start)
    origin = torch.tensor(cfg.start[:2], dtype=torch.float64)
    rows, curves, verdicts = [], [], []
    for method in cfg.methods:
        for rho in sorted(cfg.rhos, reverse=True):
            max_steps = max(2, math.ceil(cfg.max_tau / (cfg.lr * rho ** 2)))
            every = max(1, max_steps // cfg.points)
            log(f"timescale: {LABELS[method]}, rho {rho} (at most {max_steps} steps)")

            def observe(theta, record):
                return {"drift": float((theta[:2].to(torch.float64) - origin).norm())}
            run = run_trajectory(task, optimizer_settings(method, cfg.lr, rho), max_steps,
                                 record_schedule(max_steps, every), seed=cfg.seed, chunk_size=2, method=method,
                                 observe=observe, stop=lambda r: r["drift"] >= cfg.drift)
            drift = run.column("drift")
            crossing = math.nan
            for (s0, d0), (s1, d1) in zip(zip(run.steps, drift), zip(run.steps[1:], drift[1:])):
                if d0 < cfg.drift <= d1:
                    crossing = s0 + (cfg.drift - d0) / (d1 - d0) * (s1 - s0)
                    break
            rows.append({"method": LABELS[method], "rho": rho, "lr": cfg.lr, "steps_to_drift": crossing,
                         "tau_at_drift": cfg.lr * rho ** 2 * crossing, "status": run.status})
            curves.append({"method": LABELS[method], "rho": rho, "lr": cfg.lr, "steps": run.steps, "drift": drift})
        mine = [r for r in rows if r["method"] == LABELS[method]]
        ratios = {}
        for big, small in zip(mine, mine[1:]):
            expected = (big["rho"] / small["rho"]) ** 2
            ratios[f"steps(rho={small['rho']:g}) / steps(rho={big['rho']:g})"] = small["steps_to_drift"] / big["steps_to_drift"]
            big["expected_ratio_next"] = expected
        ok = all(abs(v / ((mine[i]["rho"] / mine[i + 1]["rho"]) ** 2) - 1) <= cfg.tol_ratio
                 for i, v in enumerate(ratios.values()))
        taus = [r["tau_at_drift"] for r in mine]
        ratios["spread of tau at the drift (max/min - 1)"] = max(taus) / min(taus) - 1
        verdicts.append(Verdict(
            f"quadruple-{method}", f"{LABELS[method]}: halving rho needs about four times the steps for the same drift "
            f"along Gamma ({cfg.drift})", "Thm 4.5 / 5.4 (tau = eta rho^2 t)",
            f"each ratio within (rho ratio)^2 x (1 +- {cfg.tol_ratio})", ratios,
            ok and all(r["status"] == "completed" for r in mine) and all(math.isfinite(t) for t in taus)))
    files = write_table(out, "steps_to_drift", rows)
    files += plots.timescale_drift(out / "drift.png", curves, cfg.drift)
    result = StudyResult("timescale", out, verdicts, time.perf_counter() - started, quick, files, {"steps_to_drift": rows})
    return finish(result, cfg, {"curves": curves})


# =====================================================================================================
# network: Setting 5.1 on an MLP; batchsize: the open case (Example 5.8)
# =====================================================================================================

@dataclass
class NetworkConfig:
    positive: list[int] = field(default_factory=lambda: [3])   # mnist1d digits labelled +1
    negative: list[int] = field(default_factory=lambda: [8])   # digits labelled -1 (scalar output: Setting 5.1)
    train_size: int = 256
    test_size: Optional[int] = None    # None: every test example of those digits
    widths: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"           # smooth, as the theory assumes
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    gd_lr: float = 0.1                 # phase 0: GD from initialization to an interpolating point
    gd_steps: int = 5000
    interpolation_loss: float = 1e-3   # the GD end point counts as interpolating below this train loss
    lr: Union[float, str] = "auto"     # continuation lr; auto = lr_scale / max_k ||grad f_k||^2 at that point
    lr_scale: float = 0.5              # so eta lambda_1(H_k) <= lr_scale for every example (1-SAM is stable)
    rho: float = 0.1
    steps: int = 8000                  # continuation steps for every method
    measure_every: int = 1000
    lanczos_iters: int = 60
    trace_probes: int = 4
    tol_gd_change: float = 0.05        # GD: relative change of lambda_1 and Tr at most this
    batch_sizes: list[Union[int, str]] = field(default_factory=lambda: [1, 4, 16, 64, "full"])   # batchsize study
    align_batches: int = 8             # batchsize study: random batches for E_B |cos(g_B, v_1(H_B))|
    threads: int = 1                   # torch threads: 1 avoids thread thrashing on small, shared CPUs

    def validate(self) -> None:
        require(self.train_size >= 2, "train_size must be >= 2")
        require(not set(self.positive) & set(self.negative) and self.positive and self.negative,
                "positive and negative must be disjoint, non-empty lists of digits")
        require(self.gd_lr > 0 and self.rho > 0 and self.lr_scale > 0, "gd_lr, rho and lr_scale must be > 0")
        require(self.lr == "auto" or (isinstance(self.lr, float) and self.lr > 0), "lr must be a number > 0 or 'auto'")
        require(self.steps >= 1 and self.gd_steps >= 1 and self.measure_every >= 1, "steps must be >= 1")
        require(self.dtype in ("float32", "float64"), "dtype must be float32 or float64")
        for b in self.batch_sizes:
            require(b == "full" or (isinstance(b, int) and 1 <= b <= self.train_size),
                    f"batch_sizes entry {b!r} must be 'full' or an integer in [1, train_size]")


def network_task(cfg: NetworkConfig):
    """mnist1d digits `positive` vs `negative` as +-1 targets, a scalar-output MLP, squared loss."""
    from ..config import DataConfig, ModelConfig
    from ..data import load_data
    from ..models import build_model
    from ..objective import Batch, Objective
    from ..task import Task, resolve_device
    splits = load_data(DataConfig(name="mnist1d"), seed=cfg.seed)
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)

    def pick(batch, size, salt):
        keep = torch.nonzero(torch.isin(batch.targets, torch.tensor(cfg.positive + cfg.negative))).flatten()
        if size is not None:
            if size > len(keep):
                raise ConfigError(f"{size} examples requested but mnist1d has {len(keep)} of digits "
                                  f"{cfg.positive + cfg.negative} in that split")
            order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(1000 * cfg.seed + salt))
            keep = keep[order[:size]].sort().values
        targets = torch.isin(batch.targets[keep], torch.tensor(cfg.positive)).to(torch.float64) * 2 - 1
        return Batch(batch.inputs[keep], targets).to(device, dtype)
    train_data, test_data = pick(splits.train, cfg.train_size, 1), pick(splits.test, cfg.test_size, 2)
    torch.manual_seed(cfg.seed)
    module = build_model(ModelConfig(name="mlp", widths=cfg.widths, activation=cfg.activation), splits.input_shape, 1)
    module = module.to(device=device, dtype=dtype)
    objective, theta = Objective.from_module(module, "mse")
    return Task(objective, theta, train_data, test_data, 0)


def _sign_accuracy(objective, theta, data) -> float:
    with torch.no_grad():
        return float((objective.outputs(theta, data.inputs).reshape(-1).sign() == data.targets).to(torch.float64).mean())


def _network_observer(task, cfg: NetworkConfig, measure_at: set[int]):
    settings = Settings(rho=cfg.rho, notions=("worst", "ascent", "average"), finite=False, stochastic_examples=0,
                        k=2, lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes, seed=cfg.seed)

    def observe(theta, record):
        out = {"test_accuracy": _sign_accuracy(task.objective, theta, task.test),
               "train_accuracy": _sign_accuracy(task.objective, theta, task.train)}
        if record["step"] in measure_at and math.isfinite(record.get("train_loss", 0.0)):
            report = measure(task.objective, theta, task.train, settings)
            top = report.worst.eigenvalues
            out.update(lambda_1=top[0], lambda_2=top[1] if len(top) > 1 else None,
                       lanczos_converged=report.worst.converged,
                       trace=report.average.trace, trace_stderr=report.average.trace_stderr,
                       alignment=report.alignment, grad_norm=report.ascent.grad_norm)
        return out
    return observe


def interpolating_point(cfg: NetworkConfig, log: Log):
    """Phase 0: GD (the engine's sgd, full batch) from initialization to near-zero loss."""
    from ..curvature.ggn import per_example_gram
    task = network_task(cfg)
    log(f"network: GD to an interpolating point ({cfg.gd_steps} steps, lr {cfg.gd_lr}, "
        f"{len(task.train)} examples, D = {task.objective.dim})")
    run = run_trajectory(task, optimizer_settings("gd", cfg.gd_lr, cfg.rho), cfg.gd_steps, [cfg.gd_steps],
                         chunk_size=4096, method="gd")
    theta = run.theta
    loss = run.records[-1]["train_loss"]
    norms = per_example_gram(task.objective, theta, task.train).reshape(len(task.train), -1)[:, 0]
    lr = cfg.lr_scale / float(norms.max()) if cfg.lr == "auto" else float(cfg.lr)
    info = {"gd_status": run.status, "train_loss": loss, "test_accuracy": _sign_accuracy(task.objective, theta, task.test),
            "max_k ||grad f_k||^2": float(norms.max()), "mean_k ||grad f_k||^2": float(norms.mean()),
            "continuation lr": lr, "seconds": run.seconds, "parameters": task.objective.dim,
            "train examples": len(task.train), "test examples": len(task.test)}
    from dataclasses import replace as _replace
    return _replace(task, theta=theta), lr, info


def _continue(task, cfg: NetworkConfig, method: str, lr: float, batch_size=None, log: Log = _quiet) -> Trajectory:
    measure_at = {0, *range(cfg.measure_every, cfg.steps + 1, cfg.measure_every), cfg.steps}
    opt = optimizer_settings(method, lr, cfg.rho, batch_size=batch_size)
    return run_trajectory(task, opt, cfg.steps, sorted(measure_at - {0}), seed=cfg.seed, chunk_size=4096,
                          method=method, observe=_network_observer(task, cfg, measure_at))


def _relative(run: Trajectory, key: str) -> float:
    values = [r[key] for r in run.records if r.get(key) is not None]
    return (values[-1] - values[0]) / abs(values[0]) if len(values) >= 2 else math.nan


@with_threads
def network(cfg: NetworkConfig, out: Path, *, quick: bool = False, log: Log = _quiet) -> StudyResult:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out)
    task, lr, setup = interpolating_point(cfg, log)
    runs = {}
    for method in ("gd", "sam-full", "sam-1"):
        log(f"network: {LABELS[method]} from the interpolating point ({cfg.steps} steps, lr {lr:.4g}, rho {cfg.rho})")
        runs[method] = _continue(task, cfg, method, lr)
    rows, along = [], []
    for method, run in runs.items():
        first, last = run.records[0], run.records[-1]
        rows.append({"method": LABELS[method], "status": run.status, "steps": run.steps[-1],
                     "lambda_1 start": first.get("lambda_1"), "lambda_1 end": last.get("lambda_1"),
                     "lambda_1 change": _relative(run, "lambda_1"),
                     "Tr start": first.get("trace"), "Tr end": last.get("trace"), "Tr change": _relative(run, "trace"),
                     "lambda_2/lambda_1 end": (last["lambda_2"] / last["lambda_1"]) if last.get("lambda_2") else None,
                     "alignment end": last.get("alignment"), "train loss end": last.get("train_loss"),
                     "test acc start": first.get("test_accuracy"), "test acc end": last.get("test_accuracy"),
                     "seconds": run.seconds})
        for step, r in zip(run.steps, run.records):
            if "lambda_1" in r:
                along.append({"method": LABELS[method], "step": step, "tau": lr * cfg.rho ** 2 * step,
                              "train_loss": r.get("train_loss"), "lambda_1": r["lambda_1"], "lambda_2": r["lambda_2"],
                              "Tr": r["trace"],
                              "Tr stderr": r["trace_stderr"], "alignment": r["alignment"],
                              "test_accuracy": r["test_accuracy"], "lanczos_converged": r["lanczos_converged"]})
    files = write_table(out, "summary", rows) + write_table(out, "along_the_way", along)
    files += write_table(out, "setup", [setup])
    by = {m: r for m, r in zip(runs, rows)}
    ok = {m: runs[m].status == "completed" for m in runs}
    d_l1 = {m: by[m]["lambda_1 change"] for m in runs}
    d_tr = {m: by[m]["Tr change"] for m in runs}
    verdicts = [
        Verdict("setup-interpolation", "GD reaches an interpolating point (the start of Setting 5.1's Phase II)",
                "Setting 5.1", f"train loss <= {cfg.interpolation_loss:g}",
                {"train loss": setup["train_loss"], "GD steps": cfg.gd_steps}, setup["train_loss"] <= cfg.interpolation_loss),
        Verdict("sam-lowers-lambda1-more", "full-batch SAM lowers lambda_1 more than 1-SAM does", "Thm 4.5 vs Thm 5.4",
                "relative change of lambda_1: SAM < 1-SAM",
                {"SAM": d_l1["sam-full"], "1-SAM": d_l1["sam-1"]},
                ok["sam-full"] and ok["sam-1"] and d_l1["sam-full"] < d_l1["sam-1"]),
        Verdict("1sam-lowers-trace-more", "1-SAM lowers Tr(H) more than full-batch SAM does", "Thm 5.4 vs Thm 4.5",
                "relative change of Tr: 1-SAM < SAM", {"SAM": d_tr["sam-full"], "1-SAM": d_tr["sam-1"]},
                ok["sam-full"] and ok["sam-1"] and d_tr["sam-1"] < d_tr["sam-full"]),
        Verdict("gd-changes-neither", "GD from the interpolating point changes neither lambda_1 nor Tr much",
                "Sec. 4 (GD stops on Gamma)", f"|relative change| <= {cfg.tol_gd_change} for both",
                {"lambda_1": d_l1["gd"], "Tr": d_tr["gd"]},
                ok["gd"] and abs(d_l1["gd"]) <= cfg.tol_gd_change and abs(d_tr["gd"]) <= cfg.tol_gd_change),
        Verdict("sam-alignment", "under full-batch SAM the gradient aligns with the top Hessian eigenvector",
                "Thm 4.5", "|cos(g, v_1)| >= 0.9 at the end", {"SAM": by["sam-full"]["alignment end"],
                                                                "1-SAM": by["sam-1"]["alignment end"],
                                                                "SAM lambda_2/lambda_1 at the end":
                                                                    by["sam-full"]["lambda_2/lambda_1 end"]},
                ok["sam-full"] and (by["sam-full"]["alignment end"] or 0) >= 0.9),
        Verdict("test-accuracy", "test accuracy beside the sharpness changes (the paper makes no claim)", "-",
                "reported, not judged", {LABELS[m]: by[m]["test acc end"] for m in runs}
                | {"at the interpolating point": setup["test_accuracy"]}, None),
    ]
    files += plots.network_curves(out / "sharpness.png", runs, [("lambda_1", "lambda_1 (Lanczos)"), ("lambda_2", "lambda_2"), ("trace", "Tr(H)"),
                                  ("alignment", "|cos(g, v_1)|"), ("train_loss", "train loss"),
                                  ("test_accuracy", "test accuracy")],
                                  f"continuing from an interpolating point: lr {lr:.3g}, rho {cfg.rho}, "
                                  f"{len(task.train)} mnist1d examples, D = {task.objective.dim}")
    result = StudyResult("network", out, verdicts, time.perf_counter() - started, quick, files,
                         {"summary": rows, "setup": [setup]})
    return finish(result, cfg, {"along_the_way": along})


@with_threads
def batchsize(cfg: NetworkConfig, out: Path, *, quick: bool = False, log: Log = _quiet) -> StudyResult:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out)
    task, lr, setup = interpolating_point(cfg, log)
    n = len(task.train)
    runs, rows = {}, []
    settings = Settings(rho=cfg.rho, notions=("ascent",), finite=False, stochastic_examples=0,
                        lanczos_iters=min(cfg.lanczos_iters, 40), seed=cfg.seed)
    for b in cfg.batch_sizes:
        size = n if b == "full" else int(b)
        name = f"b={b}"
        log(f"batchsize: SAM with batch size {b} ({cfg.steps} steps, lr {lr:.4g}, rho {cfg.rho})")
        run = _continue(task, cfg, "sam-full" if b == "full" else "sam-b", lr, batch_size=None if b == "full" else size)
        runs[name] = run
        generator = torch.Generator().manual_seed(cfg.seed)
        cosines = []
        for _ in range(cfg.align_batches if size < n else 1):
            index = torch.randperm(n, generator=generator)[:size].sort().values
            report = measure(task.objective, run.theta, task.train.take(index.to(task.train.inputs.device)), settings)
            if report.alignment is not None:
                cosines.append(report.alignment)
        first, last = run.records[0], run.records[-1]
        rows.append({"batch_size": b, "n_batch": size, "status": run.status,
                     "lambda_1_start": first.get("lambda_1"), "lambda_1": last.get("lambda_1"),
                     "lambda_1 change": _relative(run, "lambda_1"), "trace_start": first.get("trace"),
                     "trace": last.get("trace"), "Tr change": _relative(run, "trace"),
                     "alignment": last.get("alignment"), "batch_alignment": sum(cosines) / len(cosines) if cosines else None,
                     "train_loss": last.get("train_loss"), "test_accuracy": last.get("test_accuracy"),
                     "seconds": run.seconds})
    files = write_table(out, "by_batch_size", rows) + write_table(out, "setup", [setup])
    completed = [r for r in rows if r["status"] == "completed"]
    order_tr = [r["batch_size"] for r in sorted(completed, key=lambda r: r["trace"])]
    order_l1 = [r["batch_size"] for r in sorted(completed, key=lambda r: r["lambda_1"])]
    verdicts = [
        Verdict("setup-interpolation", "GD reaches an interpolating point", "Setting 5.1",
                f"train loss <= {cfg.interpolation_loss:g}", {"train loss": setup["train_loss"]},
                setup["train_loss"] <= cfg.interpolation_loss),
        Verdict("trace-vs-batch-size", "how Tr(H) after SAM depends on the batch size (open: Example 5.8)", "Example 5.8",
                "reported, not judged", {"batch sizes from lowest to highest Tr": order_tr,
                                         **{f"Tr change b={r['batch_size']}": r["Tr change"] for r in rows}}, None),
        Verdict("lambda1-vs-batch-size", "how lambda_1 after SAM depends on the batch size (open)", "Example 5.8",
                "reported, not judged", {"batch sizes from lowest to highest lambda_1": order_l1,
                                         **{f"lambda_1 change b={r['batch_size']}": r["lambda_1 change"] for r in rows}}, None),
        Verdict("alignment-vs-batch-size", "alignment of the batch gradient with the batch Hessian's top eigenvector "
                "(Example 5.8: can fail for b >= 2)", "Example 5.8", "reported, not judged",
                {f"b={r['batch_size']}": r["batch_alignment"] for r in rows}, None),
    ]
    files += plots.network_curves(out / "curves.png", runs, [("lambda_1", "lambda_1"), ("trace", "Tr(H)"),
                                  ("alignment", "|cos(g, v_1)| full data"), ("test_accuracy", "test accuracy")],
                                  f"SAM by batch size from one interpolating point: lr {lr:.3g}, rho {cfg.rho}",
                                  labels={k: k for k in runs}, colors={})
    files += plots.batchsize_summary(out / "by_batch_size.png", rows)
    result = StudyResult("batchsize", out, verdicts, time.perf_counter() - started, quick, files,
                         {"by_batch_size": rows, "setup": [setup]})
    return finish(result, cfg, {})


# =====================================================================================================
# the registry the CLI uses
# =====================================================================================================

@dataclass(frozen=True)
class Study:
    name: str
    summary: str
    config: type
    run: Callable


STUDIES = {s.name: s for s in [
    Study("figure1", "4-parameter toy: GD, full-batch SAM, 1-SAM, ascent-GD end points; limiting flows and their gap",
          Figure1Config, figure1),
    Study("quadratic", "full-batch SAM on 0.5 x^T A x: ||x_t|| -> eta rho lambda_1/(2 - eta lambda_1), direction -> v_1",
          QuadraticConfig, quadratic_study),
    Study("timescale", "drift along the manifold scales with eta rho^2 t: halving rho needs 4x the steps",
          TimescaleConfig, timescale),
    Study("network", "Setting 5.1 on an MLP (mnist1d subset, squared loss): SAM lowers lambda_1, 1-SAM lowers Tr",
          NetworkConfig, network),
    Study("batchsize", "the open case (Example 5.8): SAM at batch sizes 1..full, Tr, lambda_1 and alignment",
          NetworkConfig, batchsize),
]}


def reproduce(name: str, out: Optional[Path] = None, *, quick: bool = False, config: Optional[Path] = None,
              overrides: Sequence[str] = (), log: Log = _quiet, **kwargs) -> StudyResult:
    """Run one study; results go to `out` (default results/paper/NAME). `kwargs` reach the study
    (e.g. toy=Figure1Toy(F1, F2) for figure1 and timescale)."""
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose from {', '.join(STUDIES)} (or all)")
    study = STUDIES[name]
    cfg = load_study_config(study.config, name, config, quick, overrides)
    out = Path(out) if out is not None else Path("results/paper") / name
    return study.run(cfg, out, quick=quick, log=log, **kwargs)


def write_index(results: Sequence[StudyResult], out: Path) -> None:
    """OUT/summary.md and OUT/summary.json: one line per study and per verdict (for `reproduce all`)."""
    from ..runs import write_json
    from .common import fmt
    lines = ["# `samcli reproduce all`", "", "| study | verdicts | seconds |", "|---|---|---|"]
    for r in results:
        counts = {s: sum(v.status == s for v in r.verdicts) for s in ("PASS", "FAIL", "open")}
        lines.append(f"| [{r.name}]({r.name}/verdicts.md) | {counts['PASS']} pass, {counts['FAIL']} fail, "
                     f"{counts['open']} open | {r.seconds:.1f} |")
    lines += ["", "| study | verdict | prediction | measured |", "|---|---|---|---|"]
    for r in results:
        for v in r.verdicts:
            measured = "; ".join(f"{k} = {fmt(x)}" for k, x in v.measured.items())
            lines.append(f"| {r.name} | **{v.status}** | {v.claim} | {measured} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    write_json(out / "summary.json", [{"study": r.name, "seconds": round(r.seconds, 3), "quick": r.quick,
                                       "verdicts": [{"id": v.id, "status": v.status, "claim": v.claim,
                                                     "measured": v.measured} for v in r.verdicts]} for r in results])
