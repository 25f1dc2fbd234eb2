"""Seconds of the density notion (stochastic Lanczos quadrature) against the default sharpness report, on a
~100k-parameter CNN trained on digits.

The model: samcli's CNN with channels [32, 64, 128] and BatchNorm (95,594 parameters, measured in eval
mode), trained 60 steps of SGD (lr 0.05, momentum 0.9, batch 128) on scikit-learn's digits. Measured on a
seeded subset of 512 training examples, float32: the default report (worst, ascent, average and the
per-example notions at their default settings) and `--notions density` alone at its defaults
(4 probes x 12 Lanczos steps = 48 Hessian-vector products, per-example notions off), each `--repeats`
times, interleaved; the medians of the reports' own seconds are written.

    python benchmarks/density.py                  # ~6 minutes on 2 busy CPU cores
    python benchmarks/density.py --repeats 1

Writes results/benchmarks/density.json and .md. The issue's target: density in at most the time of the
default sharpness report on 2 cores, with its error bar.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from samcli import measure_run, train
from step_time import cpu_model      # benchmarks/ is the script's own directory, first on sys.path

CONFIG = {"seed": 0, "data": {"name": "digits"}, "model": {"name": "cnn", "channels": [32, 64, 128], "norm": "batch"},
          "steps": 60, "eval_every": 60,
          "optimizer": {"method": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 128}}
SAMPLES = 512
SETTINGS = {
    "default report (worst, ascent, average, per-example)": {},
    "density alone (4 probes x 12 steps)": {"notions": ["density"], "stochastic_examples": 0},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = train(CONFIG, Path(tmp) / "run")
        measured: dict[str, list] = {label: [] for label in SETTINGS}
        for _ in range(args.repeats):        # interleaved, so a shared machine's load changes hit both alike
            for label, settings in SETTINGS.items():
                measured[label].append(measure_run(run.run_dir, samples=SAMPLES, **settings))
        for label, reports in measured.items():
            row = {"settings": label, "seconds": [r.seconds for r in reports],
                   "median_seconds": statistics.median(r.seconds for r in reports),
                   "parts": {k: statistics.median(r.notion_seconds.get(k, 0.0) for r in reports)
                             for k in reports[0].notion_seconds}}
            if reports[0].density is not None:
                d = reports[0].density
                row.update(trace_per_dim=d.trace_per_dim, trace_per_dim_stderr=d.trace_per_dim_stderr,
                           trace2_per_dim=d.trace2_per_dim, trace2_per_dim_stderr=d.trace2_per_dim_stderr,
                           lambda_1=d.lambda_1, matvecs=d.matvecs, bulk=[d.bulk_low, d.bulk_high])
            else:
                row.update(lambda_1=reports[0].worst.eigenvalues[0], trace=reports[0].average.trace,
                           trace_stderr=reports[0].average.trace_stderr)
            rows.append(row)
    machine = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(),
               "load_average_after": [round(x, 2) for x in os.getloadavg()],
               "date": datetime.now(timezone.utc).isoformat()}
    summary = {"train_loss": run.summary["final"]["train_loss"], "parameters": run.summary["parameters"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "density.json").write_text(json.dumps({"run": summary, "rows": rows, "machine": machine}, indent=2))
    default, density = rows
    d = summary["parameters"]
    lines = [f"# density (SLQ) vs the default `samcli sharpness` report: CNN [32, 64, 128] / digits "
             f"({d:,} parameters, {SAMPLES} examples, train loss {summary['train_loss']:.2g})", "",
             "| settings | median s | runs (s) | parts (median s) |", "|---|---:|---|---|"]
    for row in rows:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in row["parts"].items())
        lines.append(f"| {row['settings']} | **{row['median_seconds']:.1f}** | "
                     f"{', '.join(f'{s:.1f}' for s in row['seconds'])} | {parts} |")
    lines += ["", f"density: Tr(H)/D = {density['trace_per_dim']:.4g} +- {density['trace_per_dim_stderr']:.2g}, "
              f"Tr(H^2)/D = {density['trace2_per_dim']:.4g} +- {density['trace2_per_dim_stderr']:.2g}, "
              f"lambda_1 (top node) = {density['lambda_1']:.5g}, bulk [{density['bulk'][0]:.3g}, "
              f"{density['bulk'][1]:.3g}], {density['matvecs']} HVPs; "
              f"ratio density / default = {density['median_seconds'] / default['median_seconds']:.2f}.",
              f"default report: lambda_1 = {default['lambda_1']:.5g}, Tr(H)/D = {default['trace'] / d:.4g} "
              + (f"+- {default['trace_stderr'] / d:.2g}." if default["trace_stderr"] else "(exact: Tr(G), piecewise-"
                 "linear net)."),
              "", "The density's cost is probes x steps Hessian-vector products, each about 1.5 s here under "
              "load, against the default report's ~7 Lanczos products, ~60 ascent gradients, the trace and the "
              "per-example notions; 4 x 16 = 64 products took 1.15x the default report's time in an earlier run "
              "of this script, hence the default of 12 steps.",
              "", f"{machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, threads "
              f"{machine['threads']}; load average after the run {machine['load_average_after']} (a shared "
              f"machine); medians of {args.repeats} measurements each, one run of the script."]
    (args.out / "density.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
