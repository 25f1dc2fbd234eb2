"""Sharpness of a trained model by three notions (worst, ascent, average direction).

`measure_sharpness` is the door for a user's own model and data: everything it is handed is checked
(settings, loss name, data types, shapes and labels against the model) before any curvature is
computed, and anything wrong is one SamcliError line, never a raw torch error from deep inside.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import SamcliError
from ..objective import Batch, Objective, known_loss, resolve_loss
from ..spec.measure import MeasureSpec, default_notions
from ..targets import outputs_on_two
from .measure import measure
from .report import SharpnessReport

__all__ = ["measure_sharpness", "measure_run", "measure_weights", "measure", "MeasureSpec", "Settings",
           "SharpnessReport", "DEFAULT_NOTIONS", "SharpnessInputError", "build_spec"]

Settings = MeasureSpec          # the name this knob set had before it was the one measurement spec
DEFAULT_NOTIONS = default_notions()
# knobs with their own keyword in measure_sharpness / measure_run (the rest arrive through **settings)
NAMED = ("rho", "notions", "samples", "seed", "exact")


class SharpnessInputError(SamcliError, ValueError):
    """Bad input to a measurement: one line naming the value and how to fix it."""


def build_spec(spec: Optional[MeasureSpec] = None, **knobs) -> MeasureSpec:
    """The MeasureSpec of a call's keywords (on top of `spec` when one is passed), every knob checked."""
    if spec is not None and not isinstance(spec, MeasureSpec):
        raise SharpnessInputError(f"spec is a {type(spec).__name__}; pass a samcli.MeasureSpec or keywords")
    return MeasureSpec.build(knobs, base=spec)       # a SpecError names the knob, in Python or CLI words


def _as_batch(data) -> Batch:
    if isinstance(data, Batch):
        batch = data
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        batch = Batch(*data)
    elif isinstance(data, torch.utils.data.DataLoader):
        pairs = [(x, y) for x, y in data]
        if not pairs:
            raise SharpnessInputError("data is an empty DataLoader; pass at least one example")
        inputs, targets = zip(*pairs)
        batch = Batch(torch.cat(inputs), torch.cat(targets))
    else:
        raise SharpnessInputError(f"data is a {type(data).__name__}; pass a pair of tensors (inputs, targets), "
                                  "a samcli Batch or a DataLoader of pairs")
    x, y = batch.inputs, batch.targets
    if x.ndim == 0 or len(x) == 0:
        raise SharpnessInputError("data holds no examples; pass at least one (inputs, targets) pair")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise SharpnessInputError(f"data has {x.shape[0]} inputs but targets of shape {tuple(y.shape)}; "
                                  "pass one target per input")
    if not x.is_floating_point():
        raise SharpnessInputError(f"inputs have dtype {x.dtype}; pass floating-point inputs (e.g. inputs.float())")
    if not torch.isfinite(x).all():
        raise SharpnessInputError("inputs hold NaN or inf values; clean the data first")
    if y.is_complex() or y.dtype == torch.bool:
        raise SharpnessInputError(f"targets have dtype {y.dtype}; pass integer class labels or float targets")
    return batch


def _check_against_model(module: nn.Module, loss: str | Callable, batch: Batch) -> None:
    """A forward pass on two examples: the inputs fit the model and the targets fit its outputs."""
    try:
        outputs = outputs_on_two(module, batch.inputs)
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SharpnessInputError(f"the model cannot take inputs of shape {tuple(batch.inputs.shape[1:])} per "
                                  f"example ({text[:160]}); pass inputs shaped as the model expects") from None
    if not isinstance(loss, str):
        return       # a user's loss function: its targets are its own business
    y = batch.targets
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise SharpnessInputError(f"the model's outputs have shape {shape}; loss={loss!r} needs (examples, "
                                  "outputs) per batch; pass a loss function for other outputs")
    classes = outputs.shape[1]
    if loss == "cross-entropy" and y.is_floating_point():
        raise SharpnessInputError(f"targets have dtype {y.dtype}; cross-entropy needs integer class labels "
                                  "(targets.long()), or use loss='mse' for real-valued targets")
    if not y.is_floating_point():
        if y.ndim != 1:
            raise SharpnessInputError(f"class labels have shape {tuple(y.shape)}; pass one label per example")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise SharpnessInputError(f"label {bad} is out of range: the model has {classes} outputs, so labels "
                                      f"must be in 0..{classes - 1}")
    elif y[0].numel() != classes:
        raise SharpnessInputError(f"targets have {y[0].numel()} values per example but the model has {classes} "
                                  "outputs; pass targets shaped as the outputs")


def _subsample(data: Batch, samples: Optional[int], seed: int) -> Batch:
    if samples is None or samples >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:samples]
    return data.take(index.sort().values.to(data.inputs.device))


def measure_sharpness(model: nn.Module | str | dict, data, *, loss: str | Callable | nn.Module = "cross-entropy",
                      spec: Optional[MeasureSpec] = None, chunk_size: int = 4096,
                      weights: str | Path | None = None, **knobs) -> SharpnessReport:
    """Measure any torch module on (inputs, targets). The knobs are `MeasureSpec`'s (rho, samples,
    notions, seed, exact, lanczos_iters, ...), as keywords and/or a `spec`.

    `model` may also be a target ("pkg.nets:build", "nets.py:build", or {"target": ..., "args": {...}})
    and `data` a loader target (its training split is measured) or a built-in data set's name; `weights`
    is a state_dict file (or a samcli checkpoint.pt) loaded into the model first, a copy of it when the
    model is yours. A torch loss module samcli knows (nn.CrossEntropyLoss(), nn.MSELoss()) takes the
    same exact paths as the loss's name. The module is measured in eval mode (BatchNorm running
    statistics, no dropout). Bad input raises SharpnessInputError (a SamcliError) with one line.
    """
    config = build_spec(spec, **knobs)
    checkpoint = None
    named = f"model.target={_section(model).get('target')}" if isinstance(model, (str, dict)) else "the model"
    model, data = _from_targets(model, data)
    if weights is not None:
        if not isinstance(model, nn.Module):
            raise SharpnessInputError(f"model is a {type(model).__name__}; pass a torch.nn.Module or a target")
        from ..targets import load_weights
        model = copy.deepcopy(model)       # the user's module stays as it was
        checkpoint = load_weights(model, weights, named)
    if not isinstance(model, nn.Module):
        raise SharpnessInputError(f"model is a {type(model).__name__}; pass a torch.nn.Module or a target "
                                  "('pkg.module:factory')")
    param = next(iter(model.parameters()), None)
    if param is None:
        raise SharpnessInputError("the model has no parameters: sharpness is a property of the loss in the "
                                  "parameters; pass a model with trainable weights")
    given, loss = loss, known_loss(loss)      # nn.CrossEntropyLoss() is "cross-entropy"
    if isinstance(loss, str):
        loss = given = resolve_loss(loss)
    elif not callable(loss):
        raise SharpnessInputError(f"loss={loss!r} must be a loss name (cross-entropy, mse) or a function")
    if config.dtype != "model" and param.dtype != getattr(torch, config.dtype):
        model = copy.deepcopy(model).to(getattr(torch, config.dtype))    # the user's module stays as it was
        param = next(iter(model.parameters()))
    batch = _as_batch(data).to(param.device, param.dtype)
    _check_against_model(model, loss, batch)
    objective, theta = Objective.from_module(model, given)      # the loss as given: the report names it
    was_training = model.training
    try:
        return measure(objective, theta, _subsample(batch, config.samples, config.seed), config,
                       chunk_size=chunk_size, checkpoint=checkpoint)
    finally:
        model.train(was_training)


def _section(value, kind: str = "model") -> dict:
    """A target string, a built-in name or a {target, args} mapping as a config section."""
    from ..config import DATASETS, MODELS
    if isinstance(value, str) and ":" not in value and value not in (MODELS if kind == "model" else DATASETS):
        what = ("a torch.nn.Module or a factory target ('pkg.nets:build', 'nets.py:build')" if kind == "model" else
                "a pair of tensors (inputs, targets), a samcli Batch, a DataLoader of pairs, a loader target "
                "('pkg.data:load') or a built-in data set's name")
        raise SharpnessInputError(f"{kind}={value!r} is neither a target nor a built-in {kind}; pass {what}")
    if isinstance(value, str):
        return {"target": value} if ":" in value else {"name": value}
    return dict(value)


def _from_targets(model, data):
    """(module, data) with a data target loaded (its training split) and a model target built for it."""
    from ..config import TrainConfig
    from ..data import load_data
    from ..models import build_model
    if not isinstance(data, (str, dict)) and not isinstance(model, (str, dict)):
        return model, data
    cfg = TrainConfig.from_dict({"model": _section(model) if isinstance(model, (str, dict)) else {},
                                 "data": _section(data, "data") if isinstance(data, (str, dict)) else {}})
    if isinstance(data, (str, dict)):
        splits = load_data(cfg.data)
        data = splits.train
    if isinstance(model, (str, dict)):
        batch = _as_batch(data)
        n = len(batch)
        outputs = (batch.targets.reshape(n, -1).shape[1] if batch.targets.is_floating_point()
                   else int(batch.targets.max()) + 1)
        torch.manual_seed(0)        # a factory's initialization, when no weights follow, is reproducible
        model = build_model(cfg.model, tuple(batch.inputs.shape[1:]), outputs)
    return model, data


def measure_run(run_dir: str | Path, *, spec: Optional[MeasureSpec] = None, chunk_size: Optional[int] = None,
                **knobs) -> SharpnessReport:
    """Measure a run directory's checkpoint on its own training set (config read from the run); the
    report records the checkpoint's sha256, so it can be matched to the run it measured."""
    from ..runs import CHECKPOINT, file_sha256, load_run
    from ..task import build_task
    config = build_spec(spec, **knobs)
    cfg, state = load_run(run_dir)
    if config.dtype != "model":
        cfg = cfg.replace(dtype=config.dtype)
    task = build_task(cfg)
    theta = state["theta"].to(task.theta)
    built = "the model its config builds" + (f" (model.target={cfg.model.target})" if cfg.model.target else "")
    missing = [k for k in state.get("buffers", {}) if k not in task.objective.buffers or
               task.objective.buffers[k].shape != state["buffers"][k].shape]
    if theta.numel() != task.objective.dim or missing:
        what = (f"a buffer {missing[0]!r} that {built} lacks in that shape" if missing
                else f"{theta.numel()} parameters, but {built} has {task.objective.dim}")
        raise SamcliError(f"{Path(run_dir) / CHECKPOINT} holds {what}; the factory or its file changed since the "
                          "run: restore it, or re-run the training")
    for name, value in state.get("buffers", {}).items():
        task.objective.buffers[name].copy_(value.to(task.objective.buffers[name]))
    return measure(task.objective, theta, _subsample(task.train, config.samples, config.seed), config,
                   chunk_size=chunk_size or cfg.chunk_size, checkpoint=file_sha256(Path(run_dir) / CHECKPOINT))


def measure_weights(model: str, data: str, weights: str | Path, out: str | Path | None = None, *,
                    overrides: Sequence[str] = (), spec: Optional[MeasureSpec] = None,
                    **knobs) -> tuple[SharpnessReport, Path]:
    """`samcli sharpness --model --data --weights`: measure a state_dict file samcli did not write, on the
    training split of `data`, and write OUT/sharpness.json (default: the weights' directory). `model` and
    `data` are targets (with a ':') or built-in names; `overrides` are `key=value` items of their config
    (model.args.width=64, data.args.n=100, loss=mse)."""
    from ..config import TrainConfig, apply_override
    from ..runs import write_sharpness
    raw: dict = {}
    for section, value in (("model", model), ("data", data)):
        raw[section] = {"target": value} if ":" in value else {"name": value}
    for item in overrides:
        apply_override(raw, item)
    cfg = TrainConfig.from_dict(raw)            # targets and args checked, file paths made absolute
    sections = cfg.to_dict()
    report = measure_sharpness(sections["model"], sections["data"], loss=cfg.loss, weights=weights, spec=spec,
                               chunk_size=cfg.chunk_size, **knobs)
    return report, write_sharpness(Path(out) if out is not None else Path(weights).parent, report)
