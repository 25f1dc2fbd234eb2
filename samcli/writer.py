"""Runs from any loop: `RunWriter` lets a user's own training loop write a samcli run directory.

    with samcli.RunWriter("results/runs/mine", config, model) as run:
        for step in range(1, steps + 1):
            ...                                     # the user's own update
            if step % 50 == 0:
                run.log(step, train_loss=..., test_accuracy=...)

The directory is the one `samcli train` writes (config.yaml with the targets that rebuild the model,
metrics.jsonl, checkpoint.pt, summary.json), so `samcli sharpness RUN`, `samcli.measure_run` and a
study's `runs:` (`samcli compare --runs DIR ...`) read it unchanged. The config is checked when the
writer is made, before anything is written: it validates, its data load, and the user's module has
the parameters and buffers (names and shapes) of the model the config builds, so the checkpoint
rebuilds what was trained. Its summary says origin "writer": its evaluations follow the user's own
schedule, not the config's eval_every (study/rundir.py checks them accordingly).
"""
from __future__ import annotations

import numbers
import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import nn

from .config import ConfigError, SamcliError, TrainConfig, config_hash
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
from .task import build_task, data_fingerprint

__all__ = ["RunWriter", "ORIGIN"]

ORIGIN = "writer"       # summary.json's origin for a run written by a user's loop


class RunWriter:
    """A context manager that writes a samcli run directory from a user's own loop.

    `config` (a TrainConfig or a dict) says what rebuilds the model and loads the data: its `model` and
    `data` sections (targets `{target: "pkg.mod:factory", args: {...}}`, or built-in names) and the run's
    seed, dtype and optimizer (recorded, not run: the loop is the user's). `model` is the module the loop
    trains; it must have the parameters and buffers of the model the config builds. `label` names the
    run's configuration in a study's table (default: the method and a config hash prefix).

    On entering, config.yaml and a "running" summary are written; `log(step, **metrics)` appends one
    record to metrics.jsonl; on leaving, the module's weights go to checkpoint.pt (as `samcli train`
    writes it) and summary.json says completed (final = the last record), or failed / interrupted
    when the block raised (the exception goes on). Bad input is one line (ConfigError / SamcliError),
    with nothing written.
    """

    def __init__(self, out: str | Path, config: TrainConfig | dict, model: nn.Module, *,
                 label: Optional[str] = None, overwrite: bool = False):
        refuse_empty_out(out, "results/runs/NAME")
        if isinstance(config, dict):
            missing = [k for k in ("model", "data") if k not in config]
            if missing:
                raise ConfigError(f"RunWriter config has no {missing[0]} section: give {missing[0]}: "
                                  f"{{target: 'pkg.module:attr', args: {{...}}}} (what rebuilds your "
                                  f"{'module' if missing[0] == 'model' else 'data'}) or a built-in "
                                  f"{missing[0]}.name")
            config = TrainConfig.from_dict(config)
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"RunWriter config is a {type(config).__name__}; pass a TrainConfig or a dict")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"RunWriter model is a {type(model).__name__}; pass the torch.nn.Module your loop trains")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError(f"RunWriter label={label!r} must be a non-empty string")
        self.config, self.model, self.label = config, model, label
        self.out, self.overwrite = Path(out), overwrite
        # the model the checkpoint will rebuild, and the data; building seeds torch's generator, which is
        # the user's loop's: its state is put back, so a loop draws the same numbers with or without a writer
        with torch.random.fork_rng(devices=[]):
            task = build_task(config.replace(device="cpu"))
        assert task.objective.module is not None            # built from a config: always a module
        _check_same_model(model, task.objective.module, config)
        self.data = data_fingerprint(task.train, task.test)
        self.records: list[dict] = []
        self._log: Optional[MetricsLog] = None
        self._started = 0.0

    def __enter__(self) -> RunWriter:
        open_run_dir(self.out, self.overwrite)
        write_yaml(self.out / CONFIG, self.config.to_dict())
        write_json(self.out / SUMMARY, {"status": "running", "config_hash": config_hash(self.config), "origin": ORIGIN})
        self._log = MetricsLog(self.out / METRICS)
        self._started = time.perf_counter()
        return self

    def log(self, step: int, **metrics: Any) -> dict:
        """Append one evaluation: `step` (an integer above the last logged one) and named numbers (floats,
        ints, 0-dim tensors or None), e.g. train_loss, train_accuracy, test_loss, test_accuracy, epoch."""
        if self._log is None:
            raise SamcliError("RunWriter.log() outside its with block; call it inside `with RunWriter(...) as run:`")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ConfigError(f"RunWriter.log step={step!r} must be an integer >= 0")
        if self.records and step <= self.records[-1]["step"]:
            raise ConfigError(f"RunWriter.log step={step} must be above the last logged step "
                              f"{self.records[-1]['step']}")
        record: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ConfigError(f"RunWriter.log {key}={value!r} must be a number (or None)")
            record[key] = None if value is None else (int(value) if isinstance(value, numbers.Integral)
                                                      else float(value))
        self._log.write(record)
        self.records.append(record)
        return record

    def __exit__(self, kind, error, traceback) -> Literal[False]:
        log, self._log = self._log, None
        if log is not None:
            log.close()
        status = "completed" if kind is None else "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed"
        params = [p.detach() for p in self.model.parameters()]
        device = params[0].device if params else torch.device("cpu")
        dtype = getattr(torch, self.config.dtype)
        theta = torch.cat([p.reshape(-1) for p in params]).to("cpu", dtype) if params else torch.zeros(0, dtype=dtype)
        if status == "completed" and not torch.isfinite(theta).all():
            status = "diverged"         # the loop ended, but at non-finite weights: not a model to measure
        empty = status == "completed" and not self.records
        step = self.records[-1]["step"] if self.records else 0

        def summarize(fault: Optional[RunFileError]) -> dict:
            summary = run_summary(self.config, "failed" if fault or empty else status, step, self.records,
                                  self._started, device, theta.numel())
            summary.update(stopped_at=None, data=self.data, origin=ORIGIN, label=self.label)
            if empty:
                summary["error"] = "no run.log(...) call: the run has no evaluation"
            elif status == "failed" and error is not None:
                summary["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            return summary
        checkpoint = {"theta": theta, "config": self.config.to_dict(), "origin": ORIGIN,
                      "buffers": {k: v.detach().cpu() for k, v in self.model.named_buffers()}}
        finish_run(self.out, checkpoint, summarize)
        if empty:
            raise SamcliError(f"{self.out}: the block logged nothing; call run.log(step, train_loss=..., "
                              "test_accuracy=...) at least once (the final evaluation)")
        return False        # an exception from the block goes on


def _check_same_model(mine: nn.Module, built: nn.Module, cfg: TrainConfig) -> None:
    """The user's module and the config's model have the same parameters and buffers (names, shapes, in
    order): else one line naming the first difference."""
    what = f"model.target={cfg.model.target}" if cfg.model.target else f"model.name={cfg.model.name}"
    fix = "pass the config your module was built from (its model target and args)"
    for kind, ours, theirs in (("parameter", mine.named_parameters(), built.named_parameters()),
                               ("buffer", mine.named_buffers(), built.named_buffers())):
        a = [(n, tuple(t.shape)) for n, t in ours]
        b = [(n, tuple(t.shape)) for n, t in theirs]
        for (name, shape), (other, other_shape) in zip(a, b):
            if name != other:
                raise ConfigError(f"your module's {kind} {name!r} is {other!r} in the model {what} builds; {fix}")
            if shape != other_shape:
                raise ConfigError(f"your module's {kind} {name!r} has shape {shape}, the model {what} builds has "
                                  f"{other_shape}; {fix}")
        if len(a) != len(b):
            name, shape = a[len(b)] if len(a) > len(b) else b[len(a)]
            has, lacks = ("your module", f"the model {what} builds") if len(a) > len(b) else \
                (f"the model {what} builds", "your module")
            raise ConfigError(f"{has} has a {kind} {name!r} of shape {shape} that {lacks} lacks; {fix}")
