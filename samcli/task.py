"""A task = an objective plus its data. Model + data set pairs are built here from a config;
the paper's analytic toys (samcli/paper/toys.py) construct `Task` directly."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ConfigError, TrainConfig
from .data import load_data
from .models import build_model
from .objective import Batch, Objective
from .spec.methods import validate_optimizer


@dataclass
class Task:
    objective: Objective
    theta: Tensor            # initial flat parameters
    train: Batch
    test: Batch
    num_classes: int         # 0 for regression / toys


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def build_task(cfg: TrainConfig) -> Task:
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    splits = load_data(cfg.data, seed=cfg.seed)
    n = len(splits.train)
    validate_optimizer(cfg.optimizer, train_size=n)
    if cfg.loss == "cross-entropy" and splits.num_classes == 0:
        raise ConfigError("loss=cross-entropy needs class labels, but the data set is a regression; use loss: mse")
    if cfg.data.augment and len(splits.input_shape) != 3:
        raise ConfigError(f"data.augment=true needs image inputs, but {cfg.data.name} gives shape "
                          f"{splits.input_shape}; set data.augment: false")
    torch.manual_seed(cfg.seed)   # the seed fixes initialization
    outputs = splits.num_classes or splits.train.targets.reshape(n, -1).shape[1]
    module = build_model(cfg.model, splits.input_shape, outputs).to(device=device, dtype=dtype)
    objective, theta = Objective.from_module(module, cfg.loss)
    validate_optimizer(cfg.optimizer, has_batchnorm=bool(objective.buffers))
    return Task(objective, theta, splits.train.to(device, dtype), splits.test.to(device, dtype), splits.num_classes)
