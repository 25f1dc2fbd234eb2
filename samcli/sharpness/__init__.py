"""Sharpness of a trained model by three notions (worst, ascent, average direction)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..config import SamcliError
from ..objective import Batch, Objective
from .notions import NOTIONS, Settings, measure
from .report import SharpnessReport

__all__ = ["measure_sharpness", "measure_run", "Settings", "SharpnessReport", "NOTIONS"]


def _as_batch(data) -> Batch:
    if isinstance(data, Batch):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return Batch(*data)
    if isinstance(data, torch.utils.data.DataLoader):
        inputs, targets = zip(*[(x, y) for x, y in data])
        return Batch(torch.cat(inputs), torch.cat(targets))
    raise SamcliError("data must be a pair of tensors (inputs, targets), a samcli Batch or a DataLoader of pairs")


def _subsample(data: Batch, samples: Optional[int], seed: int) -> Batch:
    if samples is None or samples >= len(data):
        return data
    if samples < 1:
        raise SamcliError(f"samples={samples} must be >= 1 or None (all examples)")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:samples]
    return data.take(index.sort().values.to(data.inputs.device))


def measure_sharpness(model: nn.Module, data, *, loss: str | Callable = "cross-entropy", rho: float = 0.05,
                      notions: Sequence[str] = NOTIONS, samples: Optional[int] = None, seed: int = 0,
                      exact: bool = False, **settings) -> SharpnessReport:
    """Measure any torch module on (inputs, targets); see `Settings` for the remaining knobs.

    The module is measured in eval mode (BatchNorm running statistics, no dropout).
    """
    if rho <= 0:
        raise SamcliError(f"rho={rho} must be > 0")
    batch = _as_batch(data)
    objective, theta = Objective.from_module(model, loss)
    param = next(iter(model.parameters()))
    batch = batch.to(param.device, param.dtype)
    was_training = model.training
    try:
        return measure(objective, theta, _subsample(batch, samples, seed),
                       Settings(rho=rho, notions=tuple(notions), seed=seed, exact=exact, **settings))
    finally:
        model.train(was_training)


def measure_run(run_dir: str | Path, *, rho: float = 0.05, notions: Sequence[str] = NOTIONS,
                samples: Optional[int] = None, seed: int = 0, exact: bool = False, **settings) -> SharpnessReport:
    """Measure a run directory's checkpoint on its own training set (config read from the run)."""
    from ..runs import load_run
    from ..task import build_task
    if rho <= 0:
        raise SamcliError(f"--rho {rho} must be > 0")
    cfg, state = load_run(run_dir)
    task = build_task(cfg)
    theta = state["theta"].to(task.theta)
    for name, value in state.get("buffers", {}).items():
        task.objective.buffers[name].copy_(value)
    settings.setdefault("chunk_size", cfg.chunk_size)
    return measure(task.objective, theta, _subsample(task.train, samples, seed),
                   Settings(rho=rho, notions=tuple(notions), seed=seed, exact=exact, **settings))
