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
from .targets import check_outputs


@dataclass
class Task:
    """What training and measurement need: the objective, initial parameters, train and test data."""
    objective: Objective
    theta: Tensor            # initial flat parameters
    train: Batch
    test: Batch
    num_classes: int         # 0 for regression / toys
    # what rebuilds the model: "config" (built-ins and targets, from the run's config) or "python" (a
    # Task made by hand: its module is the caller's, which no config describes)
    origin: str = "python"


def resolve_device(name: str) -> torch.device:
    """The torch device for 'auto', 'cpu' or 'cuda' (refused when no CUDA device is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def build_task(cfg: TrainConfig) -> Task:
    """The model, data and objective a TrainConfig describes, validated, on its device and dtype."""
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
    train, test = splits.train.to(device, dtype), splits.test.to(device, dtype)
    if cfg.model.target is not None or cfg.data.target is not None:    # the user's code: check it fits
        check_outputs(module, train, test, _describe(cfg.model, "model"), _describe(cfg.data, "data"))
    objective, theta = Objective.from_module(module, cfg.loss)
    validate_optimizer(cfg.optimizer, has_batchnorm=bool(objective.buffers))
    return Task(objective, theta, train, test, splits.num_classes, origin="config")


def _describe(section, kind: str) -> str:
    return f"{kind}.target={section.target}" if section.target is not None else f"{kind}.name={section.name}"


def data_fingerprint(train: Batch, test: Batch) -> dict:
    """Sizes and sha256 of the examples a run trained and was evaluated on (inputs and targets, as the
    run saw them): the config names a data set, this says which data it was, so a regenerated cache,
    new files under data.root or a changed loader make a stored run stale."""
    import hashlib
    digest = hashlib.sha256()
    for tensor in (train.inputs, train.targets, test.inputs, test.targets):
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"train": len(train), "test": len(test), "sha256": digest.hexdigest()[:16]}


def expected_data_fingerprint(cfg: TrainConfig) -> dict:
    """The fingerprint `train(cfg)` would record, from the data alone (no model is built)."""
    splits = load_data(cfg.data, seed=cfg.seed)
    dtype = getattr(torch, cfg.dtype)
    return data_fingerprint(splits.train.to("cpu", dtype), splits.test.to("cpu", dtype))
