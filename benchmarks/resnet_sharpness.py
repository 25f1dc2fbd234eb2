"""Seconds per part of `samcli sharpness` on a ResNet-18 (11.2M parameters) trained on digits.

The model: the CIFAR-style ResNet-18 (BatchNorm, measured in eval mode) trained 100 steps of SGD
(lr 0.02, momentum 0.9, batch 128) on scikit-learn's digits, to train loss ~5e-4. Measured on all
1437 training examples, float32, at rho 0.05, twice: with the default settings (every notion at
finite rho too: the worst-direction ascent, the Monte Carlo average, the per-example notions) and
with only the rho -> 0 notions (lambda_1 by Lanczos, the exact trace, R^Asc; `finite=False`,
`stochastic_examples=0`). Each part's seconds come from the report (`notion_seconds`).

    python benchmarks/resnet_sharpness.py                 # ~5 minutes on 2 CPU cores
    python benchmarks/resnet_sharpness.py --threads 1

Writes results/benchmarks/resnet_sharpness.json and .md. The issue's target: the full report in at
most 60 s on 2 cores, with Tr exact.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from samcli import measure_run, train
from step_time import cpu_model      # benchmarks/ is the script's own directory, first on sys.path

CONFIG = {"seed": 0, "data": {"name": "digits"}, "model": {"name": "resnet", "depth": 18, "norm": "batch"},
          "steps": 100, "eval_every": 50,
          "optimizer": {"method": "sgd", "lr": 0.02, "momentum": 0.9, "batch_size": 128}}
SETTINGS = {
    "default (every notion, finite rho too)": {},
    "rho -> 0 notions only (finite=False, stochastic_examples=0)": {"finite": False, "stochastic_examples": 0},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = train(CONFIG, Path(tmp) / "run")
        for label, settings in SETTINGS.items():
            report = measure_run(run.run_dir, **settings)
            rows.append({"settings": label, "seconds": report.seconds, "parts": report.notion_seconds,
                         "lambda_1": report.worst.eigenvalues[0], "lanczos_iterations": report.worst.lanczos_iterations,
                         "trace": report.average.trace, "trace_method": report.average.trace_method,
                         "r_max": report.worst.finite, "ascent_points": report.worst.finite_iterations,
                         "r_avg": report.average.finite, "r_asc": report.ascent.value})
    machine = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(),
               "load_average_after": list(os.getloadavg()), "date": datetime.now(timezone.utc).isoformat()}
    summary = {"train_loss": run.summary["final"]["train_loss"], "parameters": run.summary["parameters"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "resnet_sharpness.json").write_text(json.dumps({"run": summary, "rows": rows, "machine": machine},
                                                               indent=2))
    parts = ["gradient", "lanczos", "worst", "ascent", "average", "stochastic"]
    lines = [f"# `samcli sharpness` on ResNet-18 / digits ({summary['parameters']:,} parameters, 1437 examples, "
             f"train loss {summary['train_loss']:.2g})", "",
             "| settings | total s | " + " | ".join(parts) + " |", "|---|---:|" + "---:|" * len(parts)]
    for row in rows:
        lines.append(f"| {row['settings']} | **{row['seconds']:.1f}** | "
                     + " | ".join(f"{row['parts'].get(p, 0.0):.1f}" for p in parts) + " |")
    first = rows[0]
    lines += ["", f"lambda_1 = {first['lambda_1']:.6g} ({first['lanczos_iterations']} Lanczos iterations), "
              f"Tr = {first['trace']:.6g} ({first['trace_method'].split(';')[0]}), R^Asc = {first['r_asc']:.4g}, "
              f"R^Max = {first['r_max']:.4g} ({first['ascent_points']} ascent points), R^Avg = {first['r_avg']:.3g}.",
              "", f"{machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, threads "
              f"{machine['threads']}; load average after the run {machine['load_average_after']}; one run each."]
    (args.out / "resnet_sharpness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
