"""Wall time of one update step per method, on the mnist1d MLP, in one process.

One step is what `samcli.train.train` does per step once the batch is drawn:
`samcli.methods.descent_direction`, the finiteness check, then the base optimizer's step.
Every method runs on the same task (built once by `samcli.task.build_task`), each with its own
parameters and optimizer; after a warm-up the methods are timed round-robin (in short blocks of
back-to-back steps, see `measure`), so drift on the machine (other processes, frequency changes)
hits all of them alike. Besides wall time, process CPU time is recorded: on a shared machine it
is the steadier of the two (it stops while the process is descheduled).

    python benchmarks/step_time.py --repeats 300 --device cpu

Writes results/benchmarks/step_time.json (numbers + machine info) and step_time.md (the table).
The issue's target: a SAM step costs at most 2.2x an SGD step at the same batch size (it needs two
gradients, so 2.0x is the floor).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from samcli.config import TrainConfig
from samcli.methods import descent_direction
from samcli.task import build_task, resolve_device
from samcli.train import BatchSampler

TARGET = 2.2      # SAM / SGD step-time ratio the issue asks for

# (label, optimizer overrides); batch 'full' is the whole 4000-example training set
CASES = [
    ("sgd", {"method": "sgd", "batch_size": 128}),
    ("sam", {"method": "sam", "batch_size": 128}),
    ("msam m=1", {"method": "msam", "m": 1, "batch_size": 128}),
    ("usam", {"method": "usam", "batch_size": 128}),
    ("sgd (GD)", {"method": "sgd", "batch_size": "full"}),
    ("sam", {"method": "sam", "batch_size": "full"}),
]


def base_config(device: str) -> TrainConfig:
    return TrainConfig.from_dict({
        "seed": 0, "device": device, "dtype": "float32", "loss": "cross-entropy",
        "data": {"name": "mnist1d"},
        "model": {"name": "mlp", "widths": [256, 256], "activation": "relu"},
        "optimizer": {"method": "sgd", "lr": 0.1, "batch_size": 128},
    })


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Runner:
    """One method's training state: parameters, base optimizer, batch sampler."""

    def __init__(self, label: str, cfg: TrainConfig, task):
        self.label, self.cfg, self.task = label, cfg, task
        o = cfg.optimizer
        self.theta = torch.nn.Parameter(task.theta.clone())
        self.base = torch.optim.SGD([self.theta], lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                    weight_decay=o.weight_decay)
        self.sampler = BatchSampler(task.train, o.batch_size, cfg.seed)
        self.batch = len(task.train) if o.batch_size == "full" else o.batch_size
        self.times: list[float] = []       # wall seconds per timed step
        self.cpu_times: list[float] = []   # process CPU seconds per timed step (all threads)

    def step(self, sync) -> tuple[float, float]:
        batch = self.sampler.next()              # drawing the batch is not part of the step
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        self.task.objective.set_training(True)
        result = descent_direction(self.task.objective, self.theta.detach(), batch, self.cfg.optimizer,
                                   self.cfg.chunk_size)
        if not (math.isfinite(result.loss) and torch.isfinite(result.direction).all()):
            raise RuntimeError(f"{self.label}: the step diverged; the benchmark needs finite steps")
        self.theta.grad = result.direction
        self.base.step()
        sync()
        return time.perf_counter() - start, time.process_time() - cpu_start


def measure(repeats: int, warmup: int, device: str, block: int = 5) -> tuple[list[Runner], TrainConfig]:
    cfg = base_config(device)
    task = build_task(cfg)
    runners = [Runner(label, cfg.replace(**{f"optimizer.{k}": v for k, v in over.items()}), task)
               for label, over in CASES]
    dev = resolve_device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for r in runners:
            r.step(sync)
    # Round-robin in short blocks: each method in turn gets one untimed step (its caches were
    # just flushed by the other methods, msam's per-example gradients especially), then `block`
    # timed back-to-back steps, as in a training loop. Drift still hits every method alike.
    while min(len(r.times) for r in runners) < repeats:
        for r in runners:
            r.step(sync)
            for _ in range(min(block, repeats - len(r.times))):
                wall, cpu = r.step(sync)
                r.times.append(wall)
                r.cpu_times.append(cpu)
    return runners, cfg


def summarize(runners: list[Runner]) -> list[dict]:
    medians = {(r.label, r.batch): statistics.median(r.times) for r in runners}
    sgd = {r.batch: medians[(r.label, r.batch)] for r in runners if r.cfg.optimizer.method == "sgd"}
    sgd_cpu = {r.batch: statistics.median(r.cpu_times) for r in runners if r.cfg.optimizer.method == "sgd"}
    rows = []
    for r in runners:
        q = statistics.quantiles(r.times, n=4) if len(r.times) >= 2 else [r.times[0]] * 3
        med = medians[(r.label, r.batch)]
        rows.append({"method": r.label, "batch": r.batch,
                     "batch_size": r.cfg.optimizer.batch_size,
                     "median_ms": med * 1e3, "p25_ms": q[0] * 1e3, "p75_ms": q[2] * 1e3,
                     "min_ms": min(r.times) * 1e3,
                     "ratio_to_sgd": med / sgd[r.batch] if r.batch in sgd else None,
                     # CPU time counts only while the process runs: steadier on a shared machine
                     "median_cpu_ms": statistics.median(r.cpu_times) * 1e3,
                     "cpu_ratio_to_sgd": statistics.median(r.cpu_times) / sgd_cpu[r.batch]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| method | batch | median ms | p25-p75 ms | min ms | ratio to sgd | cpu ms | cpu ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        batch = f"{row['batch']} (full)" if row["batch_size"] == "full" else str(row["batch"])
        lines.append(f"| {row['method']} | {batch} | {row['median_ms']:.3f} | "
                     f"{row['p25_ms']:.3f}-{row['p75_ms']:.3f} | {row['min_ms']:.3f} | {row['ratio_to_sgd']:.2f}x | "
                     f"{row['median_cpu_ms']:.3f} | {row['cpu_ratio_to_sgd']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed steps per method (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per method first (default 20)")
    parser.add_argument("--block", type=int, default=5,
                        help="timed back-to-back steps per method per round-robin turn (default 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.block < 1:
        parser.error("--repeats and --block must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    runners, cfg = measure(args.repeats, args.warmup, args.device, args.block)
    rows = summarize(runners)
    sam_row = next(r for r in rows if r["method"] == "sam" and r["batch_size"] == 128)
    sam, sam_cpu = sam_row["ratio_to_sgd"], sam_row["cpu_ratio_to_sgd"]
    sam_full = next(r for r in rows if r["method"] == "sam" and r["batch_size"] == "full")["ratio_to_sgd"]
    dev = resolve_device(args.device)
    machine = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    result = {
        "benchmark": "step_time", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": {"data": cfg.data.name, "model": f"{cfg.model.name} {cfg.model.widths} {cfg.model.activation}",
                 "loss": cfg.loss, "dtype": cfg.dtype, "train_examples": len(runners[0].task.train),
                 "parameters": runners[0].task.objective.dim, "chunk_size": cfg.chunk_size},
        "repeats": args.repeats, "warmup": args.warmup, "block": args.block, "machine": machine,
        "target": {"sam_over_sgd_max": TARGET, "sam_over_sgd_b128": sam, "sam_over_sgd_b128_cpu": sam_cpu,
                   "sam_over_gd_full": sam_full,
                   "met": sam <= TARGET},
        "rows": rows, "seconds": round(time.perf_counter() - started, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_time.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "meets" if sam <= TARGET else "misses"
    md = (f"# Step time per method (mnist1d, MLP [256, 256] relu, cross-entropy, float32)\n\n"
          f"{table(rows)}\n\n"
          f"SAM / SGD at batch 128: **{sam:.2f}x** wall, {sam_cpu:.2f}x CPU time ({verdict} the {TARGET}x target "
          f"on wall time; 2.0x is the floor). "
          f"Full batch: {sam_full:.2f}x.\n\n"
          f"Median of {args.repeats} timed steps per method (round-robin in blocks of {args.block}) after "
          f"{args.warmup} warm-up steps; {machine['gpu'] or machine['cpu']}, torch {machine['torch']}, "
          f"threads: {machine['threads']}, "
          f"device {machine['device']}. A step is `descent_direction` + finiteness check + "
          f"`torch.optim.SGD.step`, as in `samcli.train.train`. Load average after the run: "
          f"{machine['load_average_after']} on {machine['cpu_count']} CPUs (numbers from a busy machine are noisy).\n")
    (args.out / "step_time.md").write_text(md)
    print(table(rows))
    print(f"\nSAM/SGD at b=128: {sam:.2f}x wall, {sam_cpu:.2f}x cpu ({verdict} target <= {TARGET}x); full batch: {sam_full:.2f}x")
    print(f"wrote {args.out / 'step_time.json'} and {args.out / 'step_time.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
