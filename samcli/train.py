"""The training loop: sample a batch, ask the method for a direction, let the base optimizer step.

One loop serves every method and every task (model + data set, or the paper's toys). The SAM
family's direction goes through torch's SGD (momentum, Nesterov, weight decay), as in Foret et
al.; with momentum 0 and no weight decay that is exactly x <- x - lr * direction.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import torch

from .config import TrainConfig, config_hash
from .data import augment as augment_images
from .methods import direction_for
from .objective import Batch
from .runs import (
    CONFIG,
    METRICS,
    SUMMARY,
    MetricsLog,
    RunFileError,
    finish_run,
    open_run_dir,
    refuse_empty_out,
    run_summary,
    write_json,
    write_yaml,
)
from .spec.targets import short_name
from .task import Task, build_task, data_fingerprint

ProgressFn = Callable[[int, int, float], None]   # (step, total steps, latest batch loss)
RecordHook = Callable[[int, torch.Tensor, dict], None]   # (step, theta, record): may add keys to the record
StopFn = Callable[[dict], bool]                  # True ends the run at this evaluation


@dataclass(frozen=True)
class RunResult:
    """What `train` returns: the run directory (None when not written), status, summary, metrics, final theta."""
    run_dir: Optional[Path]
    status: str                      # completed | diverged | interrupted | failed
    summary: dict
    metrics: list[dict] = field(repr=False)
    theta: torch.Tensor = field(repr=False)


class BatchSampler:
    """Seeded batches. sampling "epochs": each epoch visits every example once in a fresh random order;
    "iid": every batch is a uniform random set of b examples, drawn independently of the other steps
    (the paper's 1-SAM, Eq. 17, draws k_t i.i.d.). With batch_size 'full' every step sees the whole
    training set (GD, full-batch SAM)."""

    def __init__(self, data: Batch, batch_size, seed: int, augment: bool = False, sampling: str = "epochs"):
        self.data, self.n = data, len(data)
        self.augment, self.iid = augment, sampling == "iid"
        self.full = batch_size == "full"
        self.size = self.n if self.full else batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._epoch: Optional[Batch] = None
        self._pos = self.n

    def next(self) -> Batch:
        """The next training batch (augmented when data.augment is set)."""
        if self.full:
            return self._augmented(self.data)
        if self.iid:
            index = (torch.randint(self.n, (1,), generator=self.generator) if self.size == 1
                     else torch.randperm(self.n, generator=self.generator)[:self.size])
            return self._augmented(self.data.take(index.to(self.data.inputs.device)))
        if self._pos + self.size > self.n:     # drop the ragged tail: every batch has b examples
            order = torch.randperm(self.n, generator=self.generator).to(self.data.inputs.device)
            # the epoch's examples gathered once, in order: a batch is then a slice (a view), where a
            # gather per batch costs a tenth of a step at batch size 1; the same examples either way
            self._epoch = None          # the last epoch's copy goes before the next is made
            self._epoch, self._pos = self.data.take(order), 0
        start, self._pos = self._pos, self._pos + self.size
        epoch = self._epoch
        assert epoch is not None        # drawn above on the first call: _pos starts at n
        return self._augmented(Batch(epoch.inputs[start:self._pos], epoch.targets[start:self._pos]))

    def _augmented(self, batch: Batch) -> Batch:
        """Fresh random crops and flips per draw (data.augment, image sets only)."""
        if not self.augment:
            return batch
        return Batch(augment_images(batch.inputs, self.generator), batch.targets)


def lr_factor(schedule: str, step: int, total: int, milestones, gamma: float) -> float:
    """The multiplier of the base learning rate at `step` of `total` under the schedule (constant, cosine or step)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    if schedule == "step":
        return gamma ** sum(step >= m * total for m in milestones)
    return 1.0


def default_run_dir(cfg: TrainConfig) -> Path:
    """Where a run goes when no --out is given: results/runs/<data>-<model>-<method>-<time stamp>-<config hash>."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    data, model = (short_name(c.target) if c.target else c.name for c in (cfg.data, cfg.model))
    name = f"{data}-{model}-{cfg.optimizer.method}-{stamp}-{config_hash(cfg)[:6]}"
    return Path("results/runs") / name


def train(config: TrainConfig | dict, out: str | Path | None = None, *, task: Optional[Task] = None,
          progress: Optional[ProgressFn] = None, write: bool = True, on_record: Optional[RecordHook] = None,
          stop: Optional[StopFn] = None, eval_at: Iterable[int] = (), overwrite: bool = False) -> RunResult:
    """Train as `config` says and write the run directory (unless write=False).

    `out` must not hold a run already: that is refused (SamcliError) unless `overwrite`, which removes
    the old run's files first, its sharpness.json included.

    `task` overrides the model + data set the config would build (the paper's toys use this); its module
    ends holding the trained parameters. No config describes such a module, so the run directory records
    that it came from Python (`samcli sharpness RUN` then asks for --model/--weights instead of guessing);
    a model of the user's own is better given as a target (model.target), which the run records.
    Evaluations happen at step 0, every `eval_every` steps, at the last step and at the steps in `eval_at`.
    At each one `on_record(step, theta, record)` sees a copy of the parameters (safe to keep) and may add
    keys to the record before it is logged; then the config's target (`stop:`) being reached, or
    `stop(record)` returning True, ends the run there, with status "completed" and the step in the
    summary's "stopped_at" (and, for a target, "target": reached, step, epoch).

    A run file that cannot be written (a full disk, a quota) ends the run: the rest is written where it
    can be, the summary says "failed" with the "error", and `runs.RunFileError` (a SamcliError, with
    `.path`) is raised, its one line saying what became of the summary.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    started = time.perf_counter()
    task = task or build_task(cfg)
    objective, train_data, test_data = task.objective, task.train, task.test
    o = cfg.optimizer
    theta = torch.nn.Parameter(task.theta.clone())
    base = torch.optim.SGD([theta], lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    sampler = BatchSampler(train_data, o.batch_size, cfg.seed, augment=cfg.data.augment, sampling=o.sampling)
    chunk = cfg.chunk_size
    extra_evals = {int(s) for s in eval_at}
    n = len(train_data)
    batch_size = n if o.batch_size == "full" else o.batch_size

    refuse_empty_out(out, "results/runs/NAME")
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    log = None
    if write:
        open_run_dir(run_dir, overwrite)
        write_yaml(run_dir / CONFIG, cfg.to_dict())
        write_json(run_dir / SUMMARY, {"status": "running", "config_hash": config_hash(cfg)})
        log = MetricsLog(run_dir / METRICS)
    metrics: list[dict] = []
    status, step, batch_loss = "completed", 0, None
    stopped_at: Optional[int] = None
    target_at: Optional[dict] = None

    def record(step: int, batch_loss: Optional[float]) -> dict:
        objective.set_training(False)     # BatchNorm evaluates with its running statistics
        train_eval = objective.evaluate(theta.detach(), train_data, chunk)
        test_eval = objective.evaluate(theta.detach(), test_data, chunk) if len(test_data) else {}
        entry = {"step": step, "epoch": step * batch_size / n,
                 **{f"train_{k}": v for k, v in train_eval.items()},
                 **{f"test_{k}": v for k, v in test_eval.items()},
                 "batch_loss": batch_loss, "lr": base.param_groups[0]["lr"],
                 "wall_time": time.perf_counter() - started}
        if cfg.measure.every and step % cfg.measure.every == 0:
            from .sharpness.measure import measure_during_training
            entry.update(measure_during_training(objective, theta.detach(), train_data, cfg.measure.spec(), chunk))
        if on_record:
            on_record(step, theta.detach().clone(), entry)
        if log:
            log.write(entry)
        metrics.append(entry)     # after the write: a summary never cites a record metrics.jsonl lacks
        return entry

    def evaluation_ends_run(step: int, batch_loss: Optional[float]) -> bool:
        nonlocal status, stopped_at, target_at
        entry = record(step, batch_loss)
        if step > 0 and not math.isfinite(entry["train_loss"]):     # a start that is already inf trains on, as always
            status = "diverged"
            return True
        if cfg.stop.reached(entry):
            target_at = entry
        if target_at is not None or (stop is not None and stop(entry)):
            stopped_at = step
            return True
        return False

    fault: Optional[RunFileError] = None
    # plain SGD (no momentum, no weight decay) is x <- x - lr d, exactly what torch.optim.SGD
    # computes; done directly it skips the optimizer's per-step bookkeeping (small-batch steps)
    plain = o.momentum == 0 and o.weight_decay == 0
    theta_data = theta.detach()
    scheduled = o.schedule != "constant"     # a constant rate is set once, not per step
    try:
        if not evaluation_ends_run(0, None):
            training = False        # module mode: evaluation switches it off, steps switch it back on
            lr = o.lr
            direction = direction_for(objective, o, seed=cfg.seed,
                                      momentum=lambda: base.state.get(theta, {}).get("momentum_buffer"))
            with objective.bound(theta_data):
                for step in range(1, cfg.steps + 1):
                    if scheduled:
                        lr = o.lr * lr_factor(o.schedule, step - 1, cfg.steps, o.milestones, o.gamma)
                        for group in base.param_groups:
                            group["lr"] = lr
                    if not training:
                        objective.set_training(True)
                        training = True
                    result = direction(objective, theta_data, sampler.next(), o, chunk)
                    batch_loss = result.loss
                    if not (math.isfinite(batch_loss) and _finite(result.direction)):
                        status = "diverged"
                        break
                    if plain:
                        theta_data.add_(result.direction, alpha=-lr)
                    else:
                        theta.grad = result.direction
                        base.step()
                    if result.decoupled is not None:
                        theta_data.add_(result.decoupled, alpha=-lr)
                    if progress:
                        progress(step, cfg.steps, batch_loss)
                    if (step % cfg.eval_every == 0 or step == cfg.steps or step in extra_evals
                            or (cfg.measure.every and step % cfg.measure.every == 0)):
                        training = False
                        if evaluation_ends_run(step, batch_loss):
                            break
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except RunFileError as err:     # a full disk or quota: stop, keep what is written, say so in one line
        fault = err
    except Exception:
        status = "failed"          # an error mid-run: the summary must not claim "completed"
        raise
    finally:
        if log is not None:     # opened with the run directory
            log.close()
        if task.origin != "config" and objective.module is not None:
            # the caller's own module: it holds the trained weights (its buffers are the objective's already)
            objective.load_into_module(theta.detach())

        def summarize(fault: Optional[RunFileError]) -> dict:
            summary = run_summary(cfg, "failed" if fault else status, step, metrics, started,
                                  train_data.inputs.device, objective.dim)
            summary["stopped_at"] = stopped_at
            if cfg.stop.active:     # train to a target: whether it was reached, and when (steps and epochs)
                summary["target"] = {"reached": target_at is not None,
                                     "step": target_at["step"] if target_at else None,
                                     "epoch": target_at["epoch"] if target_at else None}
            summary["data"] = data_fingerprint(train_data, test_data)
            summary["origin"] = task.origin
            return summary
        if write:   # a disk fault raised from here outranks an interrupt in flight ("checkpoint written" is untrue)
            summary = finish_run(run_dir, {"theta": theta.detach().cpu(), "config": cfg.to_dict(),
                                           "buffers": {k: v.cpu() for k, v in objective.buffers.items()},
                                           "origin": task.origin}, summarize, fault)
        else:
            summary = summarize(None)
        status = summary["status"]
    return RunResult(run_dir if write else None, status, summary, metrics, theta.detach())


def _finite(direction: torch.Tensor) -> bool:
    """Every entry finite? A finite sum says so in one reduction (elementwise isfinite costs as much
    as a small model's step); only a non-finite sum (or one that overflowed) needs the full check."""
    return math.isfinite(direction.sum().item()) or bool(torch.isfinite(direction).all())


def halt_line(summary: dict) -> Optional[str]:
    """One line saying where a run that did not complete stopped and what its last finite metrics are
    (None for a completed run); the CLI prints it whatever the verbosity."""
    status = summary.get("status")
    if status == "completed":
        return None
    last = summary.get("last_finite") or {}
    metrics = ", ".join(f"{k} {float(last[k]):.4g}" for k in ("train_loss", "test_loss", "test_accuracy")
                        if last.get(k) is not None)
    tail = f"; last finite evaluation at step {last['step']}: {metrics}" if last else "; no finite evaluation"
    return f"run {status} at step {summary.get(f'{status}_at', summary.get('steps_done'))}{tail}"
