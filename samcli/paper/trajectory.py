"""The paper's update rules as engine settings, and a trajectory: one `train()` run recorded along the way.

Every optimizer run of the paper studies is `samcli.train.train` on a `Task` (the engine users train
with), one run per trajectory with one seed, on the device the task lives on. train()'s on_record hook
keeps the parameters and the study's own measurements at the requested steps.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor

from ..errors import unknown_choice
from ..task import Task
from ..train import train

# The paper's vocabulary, in one place: each update rule as an engine method and batch size.
METHODS = {
    "gd": ("sgd", "full"),               # gradient descent
    "sam-full": ("sam", "full"),         # full-batch SAM (Thm 4.5)
    "sam-1": ("sam", 1),                 # 1-SAM (Thm 5.4)
    "ascent-gd": ("ascent-gd", "full"),  # GD on the ascent-direction loss (Figure 1's third algorithm)
}
LABELS = {"gd": "GD", "sam-full": "full-batch SAM", "sam-1": "1-SAM", "ascent-gd": "GD on ascent loss",
          "sam-in-regime": "full-batch SAM in Thm 4.5's regime"}
COLORS = {"gd": "tab:gray", "sam-full": "tab:blue", "sam-1": "tab:red", "ascent-gd": "tab:green",
          "sam-in-regime": "tab:purple"}
ENGINE_KEYS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")   # what a record keeps of train()'s


def optimizer_settings(method: str, lr: float, rho: float, batch_size=None, grad_eps: float = 1e-12) -> dict:
    """The engine's optimizer section for a paper method; "sam-b" is SAM at the given batch size.
    Momentum and weight decay are 0, and batches are drawn i.i.d. (the paper's 1-SAM, Eq. 17, samples
    k_t i.i.d. every step), as in the paper."""
    if method not in METHODS and not method.startswith("sam-b"):
        raise unknown_choice("method", method, METHODS)
    engine, size = METHODS.get(method, ("sam", batch_size))
    return {"method": engine, "lr": lr, "rho": rho, "batch_size": batch_size if batch_size is not None else size,
            "momentum": 0.0, "weight_decay": 0.0, "grad_eps": grad_eps, "sampling": "iid"}


@dataclass
class Trajectory:
    """Points recorded along one run: steps, parameters, and whatever `observe` returned there."""
    method: str
    steps: list[int] = field(default_factory=list)
    thetas: list[Tensor] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    status: str = "completed"
    seconds: float = 0.0

    @property
    def theta(self) -> Tensor:
        """The last recorded parameters."""
        return self.thetas[-1]

    def column(self, key: str) -> list:
        """The value of `key` in every record (None where a record lacks it)."""
        return [r.get(key) for r in self.records]


def record_schedule(steps: int, every: int) -> list[int]:
    """Every `every` steps, always ending at `steps`."""
    ends = list(range(every, steps, every)) + [steps]
    return sorted(set(e for e in ends if e > 0))


def run_trajectory(task: Task, optimizer: dict, steps: int, record_at: Sequence[int], *, seed: int = 0,
                   chunk_size: int = 4096, observe: Optional[Callable[[Tensor, dict], dict]] = None,
                   method: str = "", stop: Optional[Callable[[dict], bool]] = None) -> Trajectory:
    """Train `steps` steps with the engine, recording at step 0, at the given step counts and at the end.

    `observe(theta, record)` adds numbers to each record (which holds the step and the engine's
    train/test loss there; not called once the loss is no longer finite); `stop(record)` ends the run early.
    """
    started = time.perf_counter()
    out = Trajectory(method)

    def on_record(step: int, theta: Tensor, entry: dict) -> None:
        record = {"step": step, **{k: entry[k] for k in ENGINE_KEYS if k in entry}}
        if observe and math.isfinite(entry["train_loss"]):
            record.update(observe(theta, record))
        out.steps.append(step)
        out.thetas.append(theta)
        out.records.append(record)

    config = {"seed": seed, "device": task.train.inputs.device.type, "steps": steps, "eval_every": steps,
              "chunk_size": chunk_size, "optimizer": optimizer}
    result = train(config, task=task, write=False, on_record=on_record, eval_at=record_at,
                   stop=(lambda _: stop(out.records[-1])) if stop else None)
    out.status = result.status
    out.seconds = time.perf_counter() - started
    return out
