"""Wall time of one update step per method, on the mnist1d MLP and the digits CNN, in one process.

One step is what `samcli.train.train` does per step once the batch is drawn: the method's
registered direction (`samcli.methods.direction_for`; for the two m-SAM rows `samcli.msam.msam_direction`,
the factorized path, and `samcli.msam.vmapped_msam_direction`, the per-group reference) at a
parameter vector bound to the objective for the whole run (`Objective.bound`, as train() binds its
own), the finiteness check, then the base optimizer's step. Every method runs on its own task (built
by `samcli.task.build_task`), parameters and optimizer; after a warm-up
the methods are timed round-robin (in short blocks of back-to-back steps, see `measure`), so drift
on the machine (other processes, frequency changes) hits all of them alike. Besides wall time,
process CPU time is recorded: on a shared machine it is the steadier of the two (it stops while
the process is descheduled).

A second part times whole training loops at batch size 1 (`samcli.train.train` with method sgd
and sam on the mnist1d MLP 40-128-128-10) against a plain eager PyTorch loop doing the same
forward/backward passes, alternating, per step = loop time / steps.

    python benchmarks/step_time.py --repeats 300 --device cpu --threads 1
    python benchmarks/step_time.py --quick --out /tmp/bench     # a seconds-long check that it runs

Writes results/benchmarks/step_time.json (numbers + machine info) and step_time.md (the tables).
The issue's targets: a SAM step costs at most 2.2x an SGD step at the same batch size (it needs two
gradients, so 2.0x is the floor); m-SAM (m = 1, b = 128) at most 3x on the MLP; 1-SAM at batch
size 1 through samcli.train no slower than the eager loop.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from samcli.config import TrainConfig
from samcli.methods import StepResult, direction_for
from samcli.msam import msam_direction, msam_path, vmapped_msam_direction
from samcli.task import build_task, resolve_device
from samcli.train import BatchSampler, train

TARGET = 2.2          # SAM / SGD step-time ratio the issue asks for
MSAM_TARGET = 3.0     # m-SAM (m = 1, b = 128) / SGD on the MLP

# the models: mnist1d MLP (79k parameters) and the digits CNN (5k; no BatchNorm, which msam refuses)
MODELS = {
    "mlp": ({"name": "mnist1d"}, {"name": "mlp", "widths": [256, 256], "activation": "relu"}),
    "cnn": ({"name": "digits"}, {"name": "cnn", "channels": [16, 32], "norm": "none", "activation": "relu"}),
}
# (label, model, direction, optimizer overrides); batch 'full' is the whole training set
CASES = [
    ("sgd", "mlp", "methods", {"method": "sgd", "batch_size": 128}),
    ("sam", "mlp", "methods", {"method": "sam", "batch_size": 128}),
    ("msam m=1 factorized", "mlp", "msam", {"method": "msam", "m": 1, "batch_size": 128}),
    ("msam m=1 vmapped", "mlp", "msam-vmapped", {"method": "msam", "m": 1, "batch_size": 128}),
    ("usam", "mlp", "methods", {"method": "usam", "batch_size": 128}),
    ("sgd (GD)", "mlp", "methods", {"method": "sgd", "batch_size": "full"}),
    ("sam", "mlp", "methods", {"method": "sam", "batch_size": "full"}),
    ("sgd", "cnn", "methods", {"method": "sgd", "batch_size": 128}),
    ("sam", "cnn", "methods", {"method": "sam", "batch_size": 128}),
    ("msam m=1 factorized", "cnn", "msam", {"method": "msam", "m": 1, "batch_size": 128}),
    ("msam m=1 vmapped", "cnn", "msam-vmapped", {"method": "msam", "m": 1, "batch_size": 128}),
]


def base_config(device: str, model: str = "mlp") -> TrainConfig:
    data, net = MODELS[model]
    return TrainConfig.from_dict({
        "seed": 0, "device": device, "dtype": "float32", "loss": "cross-entropy",
        "data": data, "model": net,
        "optimizer": {"method": "sgd", "lr": 0.1, "batch_size": 128},
    })


def direction_fn(kind: str, objective, cfg: TrainConfig):
    """The method's registered direction, or one of the two m-SAM implementations as a StepResult."""
    if kind == "methods":
        return direction_for(objective, cfg.optimizer)
    implementation = msam_direction if kind == "msam" else vmapped_msam_direction

    def msam(objective, theta, batch, o, chunk_size):
        return StepResult(*implementation(objective, theta, batch, o.rho, o.m, o.grad_eps, chunk_size))
    return msam


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

    def __init__(self, label: str, model: str, kind: str, cfg: TrainConfig, task, stack: contextlib.ExitStack):
        self.label, self.model, self.cfg, self.task = label, model, cfg, task
        self.direction = direction_fn(kind, task.objective, cfg)
        o = cfg.optimizer
        self.theta = torch.nn.Parameter(task.theta.clone())
        self.theta_data = self.theta.detach()
        stack.enter_context(task.objective.bound(self.theta_data))     # as train() does for its run
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
        result = self.direction(self.task.objective, self.theta_data, batch, self.cfg.optimizer,
                                self.cfg.chunk_size)
        if not (math.isfinite(result.loss) and torch.isfinite(result.direction).all()):
            raise RuntimeError(f"{self.label}: the step diverged; the benchmark needs finite steps")
        self.theta.grad = result.direction
        self.base.step()
        sync()
        return time.perf_counter() - start, time.process_time() - cpu_start


def measure(repeats: int, warmup: int, device: str, block: int = 5) -> tuple[list[Runner], TrainConfig]:
    configs = {model: base_config(device, model) for model in MODELS}
    with contextlib.ExitStack() as stack:
        # a task per method: each binds its own parameter vector to its own objective for the run
        runners = []
        for label, model, kind, over in CASES:
            cfg = configs[model].replace(**{f"optimizer.{k}": v for k, v in over.items()})
            runners.append(Runner(label, model, kind, cfg, build_task(cfg), stack))
        _round_robin(runners, repeats, warmup, device, block)
    return runners, configs["mlp"]


def _round_robin(runners: list[Runner], repeats: int, warmup: int, device: str, block: int) -> None:
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


def summarize(runners: list[Runner]) -> list[dict]:
    sgd = {(r.model, r.batch): statistics.median(r.times) for r in runners if r.cfg.optimizer.method == "sgd"}
    sgd_cpu = {(r.model, r.batch): statistics.median(r.cpu_times) for r in runners
               if r.cfg.optimizer.method == "sgd"}
    rows = []
    for r in runners:
        q = statistics.quantiles(r.times, n=4) if len(r.times) >= 2 else [r.times[0]] * 3
        med = statistics.median(r.times)
        key = (r.model, r.batch)
        rows.append({"model": r.model, "method": r.label, "batch": r.batch,
                     "batch_size": r.cfg.optimizer.batch_size,
                     "median_ms": med * 1e3, "p25_ms": q[0] * 1e3, "p75_ms": q[2] * 1e3,
                     "min_ms": min(r.times) * 1e3,
                     "ratio_to_sgd": med / sgd[key],
                     # CPU time counts only while the process runs: steadier on a shared machine
                     "median_cpu_ms": statistics.median(r.cpu_times) * 1e3,
                     "cpu_ratio_to_sgd": statistics.median(r.cpu_times) / sgd_cpu[key],
                     "msam_path": msam_path(r.task.objective) if r.cfg.optimizer.method == "msam" else None})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | method | batch | median ms | p25-p75 ms | min ms | ratio to sgd | cpu ms | cpu ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        batch = f"{row['batch']} (full)" if row["batch_size"] == "full" else str(row["batch"])
        lines.append(f"| {row['model']} | {row['method']} | {batch} | {row['median_ms']:.3f} | "
                     f"{row['p25_ms']:.3f}-{row['p75_ms']:.3f} | {row['min_ms']:.3f} | {row['ratio_to_sgd']:.2f}x | "
                     f"{row['median_cpu_ms']:.3f} | {row['cpu_ratio_to_sgd']:.2f}x |")
    return "\n".join(lines)


# ---- whole loops at batch size 1: samcli.train against a plain eager loop -------------------------

LOOP_MODEL = {"name": "mlp", "widths": [128, 128], "activation": "relu"}      # mnist1d 40-128-128-10


def loop_config(device: str, method: str, steps: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "seed": 0, "device": device, "dtype": "float32", "loss": "cross-entropy", "steps": steps,
        "eval_every": steps, "data": {"name": "mnist1d"}, "model": LOOP_MODEL,
        "optimizer": {"method": method, "lr": 0.01, "batch_size": 1, "rho": 0.05},
    })


def eager_loop(cfg: TrainConfig, task, sync) -> tuple[float, float]:
    """What a PyTorch user writes: the module's own parameters, autograd.grad, foreach updates;
    SAM's ascent step added to and taken off the parameters in place. Seconds (wall, cpu)."""
    o = cfg.optimizer
    model = task.objective.module
    params = list(model.parameters())
    with torch.no_grad():
        for p, value in zip(params, task.objective.unflatten(task.theta).values()):
            p.copy_(value)
    inputs, targets = task.train.inputs, task.train.targets
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(cfg.seed)).to(inputs.device)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(cfg.steps):
        index = order[step % len(order)].view(1)
        x, y = inputs[index], targets[index]
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        if o.method == "sam":
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            ascent = torch._foreach_mul(grads, o.rho / (norm + o.grad_eps))
            with torch.no_grad():
                torch._foreach_add_(params, ascent)
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
            with torch.no_grad():
                torch._foreach_sub_(params, ascent)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-o.lr)
    sync()
    return time.perf_counter() - start, time.process_time() - cpu_start


def samcli_loop(cfg: TrainConfig, task, sync) -> tuple[float, float]:
    """samcli.train over the same steps (evaluation only at step 0 and at the end)."""
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train(cfg, task=task, write=False)
    sync()
    if result.status != "completed":
        raise RuntimeError(f"the batch-size-1 {cfg.optimizer.method} run {result.status}")
    return time.perf_counter() - start, time.process_time() - cpu_start


def measure_loops(steps: int, repeats: int, device: str) -> list[dict]:
    """Per-step ms of each loop (median over `repeats` alternating runs after one warm-up round)."""
    dev = resolve_device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    loops = [(f"{method} via samcli.train" if fn is samcli_loop else f"{method} eager loop", method, fn)
             for method in ("sgd", "sam") for fn in (samcli_loop, eager_loop)]
    cfgs = {method: loop_config(device, method, steps) for method in ("sgd", "sam")}
    task = build_task(cfgs["sgd"])
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in loops}
    for round_ in range(repeats + 1):
        for label, method, fn in loops:
            measured = fn(cfgs[method], task, sync)
            if round_:
                times[label].append(measured)
    per_step = {label: (statistics.median(w for w, _ in runs) / steps * 1e3,
                        statistics.median(c for _, c in runs) / steps * 1e3) for label, runs in times.items()}
    rows = []
    for label, method, fn in loops:
        wall, cpu = per_step[label]
        sgd_wall, sgd_cpu = per_step[f"sgd {'via samcli.train' if fn is samcli_loop else 'eager loop'}"]
        eager_wall, eager_cpu = per_step[f"{method} eager loop"]
        rows.append({"loop": label, "method": method, "ms_per_step": wall, "cpu_ms_per_step": cpu,
                     "ratio_to_sgd_same_loop": wall / sgd_wall, "ratio_to_eager": wall / eager_wall,
                     "cpu_ratio_to_eager": cpu / eager_cpu})
    return rows


def loop_table(rows: list[dict]) -> str:
    lines = ["| loop (batch 1) | ms/step | ratio to sgd (same loop) | ratio to eager | cpu ms/step "
             "| cpu ratio to eager |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['loop']} | {r['ms_per_step']:.3f} | {r['ratio_to_sgd_same_loop']:.2f}x | "
                     f"{r['ratio_to_eager']:.2f}x | {r['cpu_ms_per_step']:.3f} | {r['cpu_ratio_to_eager']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed steps per method (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per method first (default 20)")
    parser.add_argument("--block", type=int, default=5,
                        help="timed back-to-back steps per method per round-robin turn (default 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--loop-steps", type=int, default=2000, help="steps per batch-size-1 loop (default 2000)")
    parser.add_argument("--loop-repeats", type=int, default=5, help="timed runs per batch-size-1 loop (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="a short check that everything runs (5 repeats, 2 warm-up, 100-step loops, 1 run)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.block, args.loop_steps, args.loop_repeats = 5, 2, 5, 100, 1
    if min(args.repeats, args.block, args.loop_steps, args.loop_repeats) < 1:
        parser.error("--repeats, --block, --loop-steps and --loop-repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    runners, _ = measure(args.repeats, args.warmup, args.device, args.block)
    rows = summarize(runners)
    loops = measure_loops(args.loop_steps, args.loop_repeats, args.device)

    def row(model, method, batch_size):
        return next(r for r in rows if (r["model"], r["method"], r["batch_size"]) == (model, method, batch_size))
    sam_row = row("mlp", "sam", 128)
    sam, sam_cpu = sam_row["ratio_to_sgd"], sam_row["cpu_ratio_to_sgd"]
    sam_full = row("mlp", "sam", "full")["ratio_to_sgd"]
    msam = row("mlp", "msam m=1 factorized", 128)["ratio_to_sgd"]
    msam_vmapped = row("mlp", "msam m=1 vmapped", 128)["ratio_to_sgd"]
    msam_cnn = row("cnn", "msam m=1 factorized", 128)["ratio_to_sgd"]
    msam_cnn_vmapped = row("cnn", "msam m=1 vmapped", 128)["ratio_to_sgd"]
    one_sam = next(r for r in loops if r["loop"] == "sam via samcli.train")
    one_sam_ratio = one_sam["ratio_to_eager"]
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
        "tasks": {r.model: {"data": r.cfg.data.name, "model": r.cfg.model.name, "loss": r.cfg.loss,
                            "dtype": r.cfg.dtype, "train_examples": len(r.task.train),
                            "parameters": r.task.objective.dim, "chunk_size": r.cfg.chunk_size} for r in runners},
        "loop_task": {"data": "mnist1d", "model": LOOP_MODEL, "batch_size": 1, "steps": args.loop_steps,
                      "repeats": args.loop_repeats},
        "repeats": args.repeats, "warmup": args.warmup, "block": args.block, "quick": args.quick, "machine": machine,
        "target": {"sam_over_sgd_max": TARGET, "sam_over_sgd_b128": sam, "sam_over_sgd_b128_cpu": sam_cpu,
                   "sam_over_gd_full": sam_full, "met": sam <= TARGET,
                   "msam_over_sgd_max": MSAM_TARGET, "msam_over_sgd_b128": msam, "msam_met": msam <= MSAM_TARGET,
                   "msam_vmapped_over_sgd_b128": msam_vmapped, "msam_cnn_over_sgd_b128": msam_cnn,
                   "msam_cnn_vmapped_over_sgd_b128": msam_cnn_vmapped,
                   "one_sam_b1_over_eager": one_sam_ratio, "one_sam_met": one_sam_ratio <= 1.0},
        "rows": rows, "loops": loops, "seconds": round(time.perf_counter() - started, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_time.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "meets" if sam <= TARGET else "misses"
    md = (f"# Step time per method (mnist1d MLP [256, 256] relu; digits CNN [16, 32] relu, no norm; "
          f"cross-entropy, float32)\n\n"
          f"{table(rows)}\n\n"
          f"SAM / SGD at batch 128: **{sam:.2f}x** wall, {sam_cpu:.2f}x CPU time ({verdict} the {TARGET}x target "
          f"on wall time; 2.0x is the floor). "
          f"Full batch: {sam_full:.2f}x.\n\n"
          f"m-SAM (m = 1, b = 128) / SGD: **{msam:.2f}x** factorized against {msam_vmapped:.1f}x vmapped on the MLP "
          f"(target {MSAM_TARGET}x); {msam_cnn:.2f}x against {msam_cnn_vmapped:.1f}x on the CNN.\n\n"
          f"## Batch size 1: whole loops ({args.loop_steps} steps, median of {args.loop_repeats} alternating runs, "
          f"mnist1d MLP 40-128-128-10)\n\n"
          f"{loop_table(loops)}\n\n"
          f"1-SAM via samcli.train / plain eager loop: **{one_sam_ratio:.2f}x** wall "
          f"(target: no slower, 1.0x).\n\n"
          f"Median of {args.repeats} timed steps per method (round-robin in blocks of {args.block}) after "
          f"{args.warmup} warm-up steps; {machine['gpu'] or machine['cpu']}, torch {machine['torch']}, "
          f"threads: {machine['threads']}, "
          f"device {machine['device']}. A step is the method's direction at a bound parameter vector "
          f"+ finiteness check + "
          f"`torch.optim.SGD.step`, as in `samcli.train.train`. Load average after the run: "
          f"{machine['load_average_after']} on {machine['cpu_count']} CPUs (numbers from a busy machine are noisy).\n")
    (args.out / "step_time.md").write_text(md)
    print(table(rows))
    print(loop_table(loops))
    print(f"m-SAM/SGD (m=1, b=128): {msam:.2f}x factorized, {msam_vmapped:.1f}x vmapped (MLP); "
          f"{msam_cnn:.2f}x, {msam_cnn_vmapped:.1f}x (CNN); 1-SAM b=1 samcli/eager: {one_sam_ratio:.2f}x")
    print(f"\nSAM/SGD at b=128: {sam:.2f}x wall, {sam_cpu:.2f}x cpu ({verdict} target <= {TARGET}x); "
          f"full batch: {sam_full:.2f}x")
    print(f"wrote {args.out / 'step_time.json'} and {args.out / 'step_time.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
