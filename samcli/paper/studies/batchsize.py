"""batchsize: the open case the paper leaves (Example 5.8). From the network study's interpolating point,
SAM continues at each batch size with the same lr, rho and steps; reported against the batch size: Tr,
lambda_1, full-data alignment and the mean over random batches B of |cos(grad L_B, v_1(H_B))|. No pass /
fail: the theory has no prediction."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import torch

from ...sharpness import Settings, measure
from .. import plots, regimes
from ..configs import COUNT, POSITIVE, Rule, require
from ..skeleton import Findings, Log, write_table
from .netsetup import NetworkSetup, continue_from, interpolating_point, relative_change


@dataclass
class BatchsizeConfig(NetworkSetup):
    """The batchsize study's settings: the network setup plus SAM's rho, steps and batch sizes."""
    rho: float = 0.1                   # lr: 1-SAM's (lr_scale / max_k ||grad f_k||^2), so b = 1 is stable
    steps: int = 3000
    measure_every: int = 500
    batch_sizes: list[Union[int, str]] = field(default_factory=lambda: [1, 4, 16, 64, "full"])
    align_batches: int = 8             # random batches for E_B |cos(g_B, v_1(H_B))|
    RULES: ClassVar[dict[str, Rule]] = {"rho": POSITIVE, "steps": COUNT, "measure_every": COUNT,
                               "batch_sizes": Rule(lo=1, choices=("full",)), "align_batches": COUNT}

    def validate(self) -> None:
        """Refuse settings the study cannot run (ConfigError naming the key)."""
        super().validate()
        for b in self.batch_sizes:
            require(b == "full" or (isinstance(b, int) and 1 <= b <= self.train_size),
                    f"batch_sizes entry {b!r} must be 'full' or an integer in [1, train_size]")


def batchsize(cfg: BatchsizeConfig, out: Path, log: Log) -> Findings:
    """Run SAM at each batch size from the interpolating point and report Tr, lambda_1, alignment."""
    start = interpolating_point(cfg, log)
    task, lr = start.task, start.one_sam_lr
    n = len(task.train)
    runs: dict = {}
    rows: list[dict[str, Any]] = []
    settings = Settings(rho=cfg.rho, notions=("ascent",), finite=False, stochastic_examples=0,
                        lanczos_iters=min(cfg.lanczos_iters, 40), seed=cfg.seed)
    measure_at = range(cfg.measure_every, cfg.steps + 1, cfg.measure_every)
    for b in cfg.batch_sizes:
        size = n if b == "full" else int(b)
        name = f"b={b}"
        log(f"batchsize: SAM with batch size {b} ({cfg.steps} steps, lr {lr:.4g}, rho {cfg.rho})")
        run = continue_from(task, "sam-full" if b == "full" else "sam-b", lr, cfg.rho, cfg.steps, measure_at,
                            seed=cfg.seed, lanczos_iters=cfg.lanczos_iters, trace_probes=cfg.trace_probes,
                            batch_size=None if b == "full" else size)
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
                     "lambda_1 change": relative_change(run, "lambda_1"), "trace_start": first.get("trace_ggn"),
                     "trace": last.get("trace_ggn"), "Tr change": relative_change(run, "trace_ggn"),
                     "alignment": last.get("alignment"),
                     "batch_alignment": sum(cosines) / len(cosines) if cosines else None,
                     "train_loss": last.get("train_loss"), "test_accuracy": last.get("test_accuracy"),
                     "seconds": run.seconds})
    files = write_table(out, "by_batch_size", rows) + write_table(out, "setup", [start.info])
    completed = [r for r in rows if r["status"] == "completed"]
    order_tr = [r["batch_size"] for r in sorted(completed, key=lambda r: r["trace"])]
    order_l1 = [r["batch_size"] for r in sorted(completed, key=lambda r: r["lambda_1"])]
    loss = start.info["train_loss"]
    open_case = regimes.Regime("Example 5.8 (open: the general batch size)", "none: no theorem covers b >= 2",
                               {"eta": lr, "rho": cfg.rho, "steps": cfg.steps}, None)
    verdicts = [
        regimes.precondition("Setting 5.1", gd_lr=cfg.gd_lr, gd_steps=cfg.gd_steps).verdict(
            "setup-interpolation", "GD reaches an interpolating point", f"train loss <= {cfg.interpolation_loss:g}",
            {"train loss": loss}, loss <= cfg.interpolation_loss),
        open_case.verdict("trace-vs-batch-size", "how Tr(H) after SAM depends on the batch size",
                          "reported, not judged",
                          {"batch sizes from lowest to highest Tr": order_tr,
                           **{f"Tr change b={r['batch_size']}": r["Tr change"] for r in rows}}, None),
        open_case.verdict("lambda1-vs-batch-size", "how lambda_1 after SAM depends on the batch size",
                          "reported, not judged", {"batch sizes from lowest to highest lambda_1": order_l1,
                                                   **{f"lambda_1 change b={r['batch_size']}": r["lambda_1 change"]
                                                      for r in rows}}, None),
        open_case.verdict("alignment-vs-batch-size", "alignment of the batch gradient with the batch Hessian's top "
                          "eigenvector (Example 5.8: can fail for b >= 2)", "reported, not judged",
                          {f"b={r['batch_size']}": r["batch_alignment"] for r in rows}, None),
    ]
    files += plots.network_curves(out / "curves.png", runs, [("lambda_1", "lambda_1"),
                                                             ("trace_ggn", "Tr(H) (Gauss-Newton, exact)"),
                                  ("alignment", "|cos(g, v_1)| full data"), ("test_accuracy", "test accuracy")],
                                  f"SAM by batch size from one interpolating point: lr {lr:.3g}, rho {cfg.rho}",
                                  labels={k: k for k in runs}, colors={})
    files += plots.batchsize_summary(out / "by_batch_size.png", rows)
    return Findings(verdicts, {"by_batch_size": rows, "setup": [start.info]}, files)
