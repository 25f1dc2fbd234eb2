"""What a step of each SAM-family method costs, in one process, as ratios to baselines timed in the same run.

Part 1, samcli's own loop: one step of every registered rule-based method (`samcli.methods.direction_for`
at a bound parameter vector, then torch.optim.SGD's step: what `samcli.train` does per step), on the
mnist1d MLP and the digits CNN at batch 128, timed round-robin with SGD and SAM on the same model
(step_time.py's Runner and schedule), reported as ratios to SGD and to SAM.

Part 2, a user's loop: the same model and batches through `samcli.optim.SAM` and through
pytorch-optimizer's implementation of the same rule (SAM, SAM(adaptive), GSAM, LookSAM, FriendlySAM,
WSAM), each step = forward + backward + the optimizer's passes, round-robin, ratio ours / theirs.

    python benchmarks/family_step_time.py --repeats 200
    python benchmarks/family_step_time.py --quick --out /tmp/bench    # a seconds-long check that it runs

Writes results/benchmarks/family_step_time.json and .md. The issue's targets: looksam (k = 5) and
momentum-sam within 1.3x of SGD, esam below sam, every other variant within 2.2x of SGD; each
variant no slower than its pytorch-optimizer counterpart (ratio <= 1.0).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from step_time import Runner, _round_robin, base_config, cpu_model  # noqa: E402

from samcli.optim import SAM  # noqa: E402
from samcli.task import build_task  # noqa: E402

FAMILY = [("sgd", {}), ("sam", {}), ("asam", {}), ("gsam", {}), ("looksam", {}), ("fsam", {}), ("wsam", {}),
          ("momentum-sam", {"momentum": 0.9}), ("esam", {}), ("rwp", {})]
CHEAP = {"looksam": 1.3, "momentum-sam": 1.3}     # targets against SGD; esam: below sam; others 2.2


def measure_family(repeats: int, warmup: int, block: int) -> list[dict]:
    rows = []
    for model in ("mlp", "cnn"):
        base = base_config("cpu", model)
        with contextlib.ExitStack() as stack:
            runners = []
            for method, extra in FAMILY:
                over = {"method": method, "batch_size": 128, **extra}
                if method != "sgd" and "momentum" not in extra:
                    over["momentum"] = 0.0
                cfg = base.replace(**{f"optimizer.{k}": v for k, v in over.items()})
                runners.append(Runner(method, model, "methods", cfg, build_task(cfg), stack))
            _round_robin(runners, repeats, warmup, "cpu", block)
        medians = {r.label: statistics.median(r.times) for r in runners}
        cpu = {r.label: statistics.median(r.cpu_times) for r in runners}
        for r in runners:
            target = CHEAP.get(r.label, 2.2)
            rows.append({"model": model, "method": r.label, "median_ms": medians[r.label] * 1e3,
                         "ratio_to_sgd": medians[r.label] / medians["sgd"],
                         "ratio_to_sam": medians[r.label] / medians["sam"],
                         "cpu_ratio_to_sgd": cpu[r.label] / cpu["sgd"],
                         "target": "< sam" if r.label == "esam" else f"<= {target}x sgd",
                         "met": (medians[r.label] < medians["sam"]) if r.label == "esam"
                         else medians[r.label] / medians["sgd"] <= target})
    return rows


# ---- part 2: samcli.optim.SAM against pytorch-optimizer in a plain loop ---------------------------

def _peers(po):
    kw = {"lr": 0.05, "momentum": 0.9}
    return {
        "sam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, **kw),
                lambda m: po.SAM(m.parameters(), torch.optim.SGD, rho=0.05, **kw)),
        "asam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.5, "asam", eta=0.0, asam_biases=True, **kw),
                 lambda m: po.SAM(m.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, **kw)),
        "gsam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "gsam", alpha=0.4, **kw), _peer_gsam(po, kw)),
        "looksam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "looksam", k=5, alpha=0.7, **kw),
                    lambda m: po.LookSAM(m.parameters(), torch.optim.SGD, rho=0.05, k=5, alpha=0.7, **kw)),
        "fsam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "fsam", **kw),
                 lambda m: po.FriendlySAM(m.parameters(), torch.optim.SGD, rho=0.05, **kw)),
        "wsam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "wsam", wsam_gamma=0.9, **kw),
                 lambda m: po.WSAM(m, m.parameters(), torch.optim.SGD, rho=0.05, gamma=0.9, decouple=False, **kw)),
    }


def _peer_gsam(po, kw):
    """pytorch-optimizer's GSAM at a constant radius (its scheduler min = max); it runs its own closure."""
    def make(model):
        base = torch.optim.SGD(model.parameters(), **kw)
        constant = torch.optim.lr_scheduler.LambdaLR(base, lambda step: 1.0)
        radius = po.ProportionScheduler(constant, max_lr=kw["lr"], min_lr=0.0, max_value=0.05, min_value=0.05)
        return po.GSAM(model.parameters(), base, model, radius, alpha=0.4)
    return make


class LoopRunner:
    """One optimizer in a user's loop: its own copy of the model, the same batches as the others."""

    def __init__(self, label, make, task):
        import copy
        self.label, self.model = label, copy.deepcopy(task.objective.module)
        self.model.load_state_dict(task.objective.module.state_dict())
        self.opt = make(self.model)
        self.x, self.y = task.train.inputs[:128], task.train.targets[:128]
        self.times: list[float] = []

    def step(self) -> float:
        start = time.perf_counter()
        if hasattr(self.opt, "set_closure"):          # pytorch-optimizer's GSAM: both passes in its step()
            self.opt.set_closure(F.cross_entropy, self.x, self.y)
            self.opt.step()
            self.opt.zero_grad()
            return time.perf_counter() - start
        F.cross_entropy(self.model(self.x), self.y).backward()

        def closure():
            self.opt.zero_grad()
            loss = F.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            return loss
        self.opt.step(closure)
        self.opt.zero_grad()
        return time.perf_counter() - start


def measure_peers(repeats: int, warmup: int) -> list[dict]:
    try:
        import pytorch_optimizer as po
    except ImportError:
        return []
    task = build_task(base_config("cpu", "mlp"))
    runners = []
    for name, (ours, theirs) in _peers(po).items():
        runners += [LoopRunner((name, "samcli"), ours, task), LoopRunner((name, "pytorch-optimizer"), theirs, task)]
    for _ in range(warmup):
        for r in runners:
            r.step()
    for _ in range(repeats):
        for r in runners:
            r.times.append(r.step())
    med = {r.label: statistics.median(r.times) for r in runners}
    return [{"method": name, "samcli_ms": med[(name, "samcli")] * 1e3,
             "peer_ms": med[(name, "pytorch-optimizer")] * 1e3,
             "ratio": med[(name, "samcli")] / med[(name, "pytorch-optimizer")],
             "met": med[(name, "samcli")] <= med[(name, "pytorch-optimizer")]} for name in _peers(po)]


def tables(family: list[dict], peers: list[dict]) -> str:
    lines = ["| model | method | median ms | / sgd | / sam | cpu / sgd | target | met |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for r in family:
        lines.append(f"| {r['model']} | {r['method']} | {r['median_ms']:.3f} | {r['ratio_to_sgd']:.2f}x | "
                     f"{r['ratio_to_sam']:.2f}x | {r['cpu_ratio_to_sgd']:.2f}x | {r['target']} | "
                     f"{'yes' if r['met'] else 'no'} |")
    if peers:
        lines += ["", "| method (plain loop, mlp, batch 128) | samcli.optim.SAM ms | pytorch-optimizer ms | ratio "
                  "| <= 1.0 |", "|---|---:|---:|---:|---|"]
        for r in peers:
            lines.append(f"| {r['method']} | {r['samcli_ms']:.3f} | {r['peer_ms']:.3f} | {r['ratio']:.2f} | "
                         f"{'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed steps per method (default 200)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 steps each: checks that it runs, times nothing")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    family, peers = measure_family(repeats, warmup, args.block), measure_peers(repeats, warmup)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
               "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "family_step_time.json").write_text(json.dumps(
        {"machine": machine, "repeats": repeats, "family": family, "peers": peers}, indent=2) + "\n")
    md = (f"# SAM-family step time\n\n{machine['cpu']}, {machine['cores']} cores, {args.threads} thread(s), "
          f"torch {machine['torch']}, {repeats} timed steps per method, medians; {machine['date']}.\n\n"
          + tables(family, peers) + "\n")
    (args.out / "family_step_time.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
