"""batchsize: the open case the paper leaves (Example 5.8). From the network study's interpolating point,
SAM continues at each batch size with the same lr, rho and steps; reported against the batch size: Tr,
lambda_1, full-data alignment and the mean over random batches B of |cos(grad L_B, v_1(H_B))|. No pass /
fail: the theory has no prediction."""
from __future__ import annotations

from pathlib import Path

import torch

from ...sharpness.notions import Settings, measure
from .. import plots
from ..skeleton import Findings, Log, write_table
from ..verdicts import Verdict
from .network import NetworkConfig, continue_from, interpolating_point, relative_change


def batchsize(cfg: NetworkConfig, out: Path, log: Log) -> Findings:
    task, lr, setup = interpolating_point(cfg, log)
    n = len(task.train)
    runs, rows = {}, []
    settings = Settings(rho=cfg.rho, notions=("ascent",), finite=False, stochastic_examples=0,
                        lanczos_iters=min(cfg.lanczos_iters, 40), seed=cfg.seed)
    for b in cfg.batch_sizes:
        size = n if b == "full" else int(b)
        name = f"b={b}"
        log(f"batchsize: SAM with batch size {b} ({cfg.steps} steps, lr {lr:.4g}, rho {cfg.rho})")
        run = continue_from(task, cfg, "sam-full" if b == "full" else "sam-b", lr, batch_size=None if b == "full" else size)
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
                     "lambda_1 change": relative_change(run, "lambda_1"), "trace_start": first.get("trace"),
                     "trace": last.get("trace"), "Tr change": relative_change(run, "trace"),
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
    return Findings(verdicts, {"by_batch_size": rows, "setup": [setup]}, files)
