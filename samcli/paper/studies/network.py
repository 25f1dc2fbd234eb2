"""network: the paper's Setting 5.1 on a real network. Squared loss, scalar output (so each example's
Hessian is rank one on Gamma), an MLP that interpolates a few hundred mnist1d examples. GD first reaches
an interpolating point; GD, full-batch SAM and 1-SAM continue from it with the same lr and rho, measured
with samcli's sharpness tool. The batchsize study starts from the same point."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

import torch

from ...config import ConfigError, DataConfig, ModelConfig
from ...curvature.ggn import per_example_gram
from ...data import load_data
from ...models import build_model
from ...objective import Batch, Objective
from ...sharpness.notions import Settings, measure
from ...task import Task, resolve_device
from .. import plots
from ..configs import require
from ..skeleton import Findings, Log, write_table
from ..trajectory import LABELS, Trajectory, optimizer_settings, run_trajectory
from ..verdicts import Verdict


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
    return replace(task, theta=theta), lr, info


def continue_from(task, cfg: NetworkConfig, method: str, lr: float, batch_size=None) -> Trajectory:
    """`method` from the interpolating point, measured every `measure_every` steps."""
    measure_at = {0, *range(cfg.measure_every, cfg.steps + 1, cfg.measure_every), cfg.steps}
    opt = optimizer_settings(method, lr, cfg.rho, batch_size=batch_size)
    return run_trajectory(task, opt, cfg.steps, sorted(measure_at - {0}), seed=cfg.seed, chunk_size=4096,
                          method=method, observe=_network_observer(task, cfg, measure_at))


def relative_change(run: Trajectory, key: str) -> float:
    values = [r[key] for r in run.records if r.get(key) is not None]
    return (values[-1] - values[0]) / abs(values[0]) if len(values) >= 2 else math.nan


def network(cfg: NetworkConfig, out: Path, log: Log) -> Findings:
    task, lr, setup = interpolating_point(cfg, log)
    runs = {}
    for method in ("gd", "sam-full", "sam-1"):
        log(f"network: {LABELS[method]} from the interpolating point ({cfg.steps} steps, lr {lr:.4g}, rho {cfg.rho})")
        runs[method] = continue_from(task, cfg, method, lr)
    rows, along = [], []
    for method, run in runs.items():
        first, last = run.records[0], run.records[-1]
        rows.append({"method": LABELS[method], "status": run.status, "steps": run.steps[-1],
                     "lambda_1 start": first.get("lambda_1"), "lambda_1 end": last.get("lambda_1"),
                     "lambda_1 change": relative_change(run, "lambda_1"),
                     "Tr start": first.get("trace"), "Tr end": last.get("trace"), "Tr change": relative_change(run, "trace"),
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
    return Findings(verdicts, {"summary": rows, "setup": [setup]}, files, {"along_the_way": along})
