"""What the network and batchsize studies share: the paper's Setting 5.1 on a real network. Squared loss,
scalar output (so each example's Hessian is rank one on Gamma), an MLP that interpolates a few hundred
mnist1d examples; GD (the engine's sgd, full batch) first reaches an interpolating point, and every
method continues from it, measured with samcli's sharpness tool."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal, Optional

import torch

from ...config import ConfigError, DataConfig, ModelConfig
from ...curvature.ggn import per_example_gram
from ...data import load_data
from ...models import ACTIVATIONS, build_model
from ...objective import Batch, Objective
from ...sharpness import Settings, measure
from ...task import Task, resolve_device
from ..configs import COUNT, POSITIVE, SEED, Rule, at_least, one_of, require
from ..drift import Regression, output_jacobian
from ..skeleton import Log
from ..trajectory import Trajectory, optimizer_settings, run_trajectory


@dataclass
class NetworkSetup:
    """Settings shared by the network studies: data, the MLP, dtype and GD's run to interpolation."""
    positive: list[int] = field(default_factory=lambda: [3])   # mnist1d digits labelled +1
    negative: list[int] = field(default_factory=lambda: [8])   # digits labelled -1 (scalar output: Setting 5.1)
    train_size: int = 256
    test_size: Optional[int] = None    # None: every test example of those digits
    widths: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["relu", "tanh", "gelu", "softplus"] = "tanh"   # smooth, as the theory assumes
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    gd_lr: float = 0.1                 # phase 0: GD from initialization to an interpolating point
    gd_steps: int = 5000
    interpolation_loss: float = 1e-3   # the GD end point counts as interpolating below this train loss
    lr_scale: float = 0.5              # 1-SAM's lr = lr_scale / max_k ||grad f_k||^2 (every example's SAM stable)
    lanczos_iters: int = 60
    trace_probes: int = 4
    threads: int = 1                   # torch threads: 1 avoids thread thrashing on small, shared CPUs
    RULES: ClassVar[dict[str, Rule]] = {
        "positive": Rule(lo=0, hi=9), "negative": Rule(lo=0, hi=9), "train_size": at_least(2), "test_size": COUNT,
        "widths": COUNT, "activation": one_of(*ACTIVATIONS), "dtype": one_of("float32", "float64"),
        "device": one_of("auto", "cpu", "cuda"), "seed": SEED, "gd_lr": POSITIVE, "gd_steps": COUNT,
        "interpolation_loss": POSITIVE, "lr_scale": POSITIVE, "lanczos_iters": COUNT, "trace_probes": COUNT,
        "threads": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        require(not set(self.positive) & set(self.negative) and bool(self.positive) and bool(self.negative),
                "positive and negative must be disjoint, non-empty lists of digits")


def network_task(cfg: NetworkSetup) -> Task:
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


def sign_accuracy(objective, theta, data) -> float:
    """The fraction of examples whose output has the sign of its +-1 target."""
    with torch.no_grad():
        signs = objective.outputs(theta, data.inputs).reshape(-1).sign()
        return float((signs == data.targets).to(torch.float64).mean())


@dataclass(frozen=True)
class StartPoint:
    """GD's interpolating point: the task there, 1-SAM's lr and the curvature measured there."""
    task: Task                 # theta: the interpolating point
    one_sam_lr: float          # lr_scale / max_k ||grad f_k||^2
    max_example_lambda: float  # max_k ||grad f_k||^2: the largest per-example Hessian eigenvalue on Gamma
    lambda_1: float            # of the full Hessian there
    info: dict


def interpolating_point(cfg: NetworkSetup, log: Log) -> StartPoint:
    """Phase 0: GD from initialization to near-zero loss, and the curvature there."""
    task = network_task(cfg)
    log(f"network: GD to an interpolating point ({cfg.gd_steps} steps, lr {cfg.gd_lr}, "
        f"{len(task.train)} examples, D = {task.objective.dim})")
    run = run_trajectory(task, optimizer_settings("gd", cfg.gd_lr, 0.01), cfg.gd_steps, [cfg.gd_steps],
                         chunk_size=4096, method="gd")
    theta = run.theta
    norms = per_example_gram(task.objective, theta, task.train).reshape(len(task.train), -1)[:, 0]
    settings = Settings(notions=("worst",), finite=False, stochastic_examples=0, lanczos_iters=cfg.lanczos_iters)
    worst = measure(task.objective, theta, task.train, settings).worst
    assert worst is not None        # measured: "worst" is the one notion asked for
    lambda_1 = worst.eigenvalues[0]
    info = {"gd_status": run.status, "train_loss": run.records[-1]["train_loss"],
            "test_accuracy": sign_accuracy(task.objective, theta, task.test), "lambda_1": lambda_1,
            "max_k ||grad f_k||^2": float(norms.max()), "mean_k ||grad f_k||^2": float(norms.mean()),
            "1-SAM lr": cfg.lr_scale / float(norms.max()), "seconds": run.seconds,
            "parameters": task.objective.dim, "train examples": len(task.train), "test examples": len(task.test)}
    return StartPoint(replace(task, theta=theta), info["1-SAM lr"], float(norms.max()), lambda_1, info)


def network_observer(task: Task, rho: float, measure_at: set[int], lanczos_iters: int, trace_probes: int, seed: int):
    """At every record: sign accuracies. At `measure_at`: lambda_1, lambda_2 (Lanczos), Tr(H) (the tool's
    estimate), the exact Gauss-Newton trace (1/n) ||J||_F^2, and |cos(g, v_1)|."""
    settings = Settings(rho=rho, notions=("worst", "ascent", "average"), finite=False, stochastic_examples=0,
                        k=2, lanczos_iters=lanczos_iters, trace_probes=trace_probes, seed=seed)
    model = Regression.from_objective(task.objective, task.train)

    def observe(theta, record):
        out = {"test_accuracy": sign_accuracy(task.objective, theta, task.test),
               "train_accuracy": sign_accuracy(task.objective, theta, task.train)}
        if record["step"] in measure_at and math.isfinite(record.get("train_loss", 0.0)):
            report = measure(task.objective, theta, task.train, settings)
            top = report.worst.eigenvalues
            with torch.no_grad():
                trace_ggn = float(output_jacobian(model, theta.detach()).pow(2).sum()) / model.examples
            out.update(lambda_1=top[0], lambda_2=top[1] if len(top) > 1 else None,
                       lanczos_converged=report.worst.converged, trace=report.average.trace,
                       trace_stderr=report.average.trace_stderr, trace_ggn=trace_ggn,
                       alignment=report.alignment, grad_norm=report.ascent.grad_norm)
        return out
    return observe


def continue_from(task: Task, method: str, lr: float, rho: float, steps: int, measure_at, *, seed: int,
                  lanczos_iters: int, trace_probes: int, batch_size=None) -> Trajectory:
    """`method` from the interpolating point for `steps` steps, measured at the steps in `measure_at`."""
    at = {0, *measure_at, steps}
    opt = optimizer_settings(method, lr, rho, batch_size=batch_size)
    return run_trajectory(task, opt, steps, sorted(at - {0}), seed=seed, chunk_size=4096, method=method,
                          observe=network_observer(task, rho, at, lanczos_iters, trace_probes, seed))


def relative_change(run: Trajectory, key: str) -> float:
    """(last - first) / |first| of the recorded values of `key` (NaN with fewer than two)."""
    values = [r[key] for r in run.records if r.get(key) is not None]
    return (values[-1] - values[0]) / abs(values[0]) if len(values) >= 2 else math.nan
