"""The user's own code as a model or a data set: a target `module:attr` or `path/to/file.py:attr`.

`load_target` imports it, `build_target_model` calls a model factory, `load_target_data` a data loader,
and `load_weights` puts a state_dict file into a model. Whatever goes wrong on the user's side (a module
that is not there, a misspelt attribute, a syntax error, the factory's own exception, a return value of
the wrong kind) is one ConfigError line naming the target and what to fix, never a traceback into samcli.
The spelling of a target (and a file path made absolute) is checked torch-free in samcli/spec/targets.py.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, near_miss, short_repr
from .objective import Batch
from .spec.targets import is_file_target, split_target

_FILES: dict[tuple[str, int, int], Any] = {}      # (path, mtime, size) -> module: an edited file is re-read


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _import_file(path: Path, key: str, target: str):
    if not path.is_file():
        raise ConfigError(f"{key}={target}: the file {path} does not exist; check the path (relative paths are "
                          "read from the directory samcli runs in)")
    stat = path.stat()
    cache = (str(path), stat.st_mtime_ns, stat.st_size)
    if cache in _FILES:
        return _FILES[cache]
    name = f"samcli_target_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{key}={target}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:        # the file may import its neighbours
        sys.path.append(str(path.parent))
    sys.modules[name] = module                  # pickling (a pool worker, torch.save) finds its classes
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        sys.modules.pop(name, None)
        raise ConfigError(f"{key}={target}: {path.name} line {err.lineno} has a syntax error ({err.msg}); "
                          "fix the file") from None
    except Exception as err:
        sys.modules.pop(name, None)
        raise ConfigError(f"{key}={target}: importing {path.name} raised {_first_line(err)}") from None
    _FILES[cache] = module
    return module


def _import_module(where: str, key: str, target: str):
    if os.getcwd() not in sys.path and "" not in sys.path:    # "importable from the working directory"
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as err:
        if err.name and (where == err.name or where.startswith(err.name + ".")):
            raise ConfigError(f"{key}={target}: no module named {err.name!r} in the working directory "
                              f"({os.getcwd()}) or on sys.path; check the spelling, install the package, or "
                              f"name the file: path/to/{where.rsplit('.', 1)[-1]}.py:{split_target(target)[1]}"
                              ) from None
        raise ConfigError(f"{key}={target}: importing {where} raised {_first_line(err)}") from None
    except SyntaxError as err:
        raise ConfigError(f"{key}={target}: {Path(err.filename or where).name} line {err.lineno} has a syntax "
                          f"error ({err.msg}); fix the file") from None
    except Exception as err:
        raise ConfigError(f"{key}={target}: importing {where} raised {_first_line(err)}") from None


def load_target(target: str, key: str) -> Callable:
    """The callable a target names, imported (a file target from its path); `key` names the setting
    (model.target, data.target, --model) in errors."""
    where, attribute = split_target(target)
    module = _import_file(Path(where), key, target) if is_file_target(target) else _import_module(where, key, target)
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            names = [n for n in dir(value) if not n.startswith("_")]
            near = near_miss(part, names)
            hint = f" (did you mean {near}?)" if near else ""
            owner = Path(where).name if is_file_target(target) else where
            raise ConfigError(f"{key}={target}: {owner} has no attribute {part!r}{hint}; callables there: "
                              f"{', '.join(n for n in names if callable(getattr(value, n, None)))[:200] or 'none'}")
        value = getattr(value, part)
    if not callable(value):
        raise ConfigError(f"{key}={target} is a {type(value).__name__}, not a function or class; name the "
                          "factory (or loader) itself")
    return value


def call_target(target: str, args: dict, key: str, offered: dict | None = None) -> Any:
    """Call the target with `args`, plus those of `offered` its signature names (and args do not set);
    an argument it does not take, or its own exception, is one line naming the target."""
    function = load_target(target, key)
    kwargs = dict(args)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):     # a builtin without a signature: call it as it is
        signature = None
    if signature is not None:
        names = signature.parameters
        kwargs.update({k: v for k, v in (offered or {}).items() if k in names and k not in kwargs})
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            section = key.rsplit(".", 1)[0]
            takes_any = any(p.kind is p.VAR_KEYWORD for p in names.values())
            wrong = [k for k in args if k not in names] if not takes_any else []
            near = near_miss(wrong[0], list(names)) if wrong else None
            why = (f"{section}.args.{wrong[0]} is not one of its parameters" + (f" (did you mean {near}?)" if near
                   else "") if wrong else str(err))
            raise ConfigError(f"{key}={target} cannot be called with {section}.args {short_repr(args)}: {why}; "
                              f"its parameters: {', '.join(names) or 'none'}") from None
    try:
        return function(**kwargs)
    except Exception as err:
        raise ConfigError(f"{key}={target} raised {_first_line(err)}") from None


def build_target_model(target: str, args: dict, input_shape: tuple[int, ...], outputs: int,
                       key: str = "model.target") -> nn.Module:
    """The model a factory target returns, called with `args` (plus input_shape and num_outputs when
    its signature names them); anything but an nn.Module is refused."""
    module = call_target(target, args, key, {"input_shape": tuple(input_shape), "num_outputs": outputs})
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{key}={target} returned a {type(module).__name__}, not a torch.nn.Module; "
                          "return the model")
    if next(iter(module.parameters()), None) is None:
        raise ConfigError(f"{key}={target} returned a model without parameters; sharpness and training need "
                          "trainable weights")
    return module


def _as_batch(value: Any, where: str) -> Batch:
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, torch.Tensor) for v in value):
        inputs, targets = value
    elif isinstance(value, torch.utils.data.Dataset) and hasattr(value, "__len__"):
        if len(value) == 0:
            raise ConfigError(f"{where} is an empty Dataset; give it at least one example")
        items = [value[i] for i in range(len(value))]
        if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
            raise ConfigError(f"{where} is a Dataset whose items are not (input, target) pairs")
        inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
        targets = torch.stack([torch.as_tensor(y) for _, y in items])
    else:
        raise ConfigError(f"{where} is a {type(value).__name__}; give a pair of tensors (inputs, targets) or a "
                          "torch Dataset of (input, target) pairs")
    if inputs.ndim == 0 or len(inputs) == 0 or targets.ndim == 0 or len(targets) != len(inputs):
        raise ConfigError(f"{where} has inputs of shape {tuple(inputs.shape)} and targets of shape "
                          f"{tuple(targets.shape)}; give one target per input (first dimension the example)")
    if not inputs.is_floating_point():
        raise ConfigError(f"{where} has inputs of dtype {inputs.dtype}; give floating-point inputs")
    if targets.is_complex() or targets.dtype == torch.bool:
        raise ConfigError(f"{where} has targets of dtype {targets.dtype}; give integer labels or float targets")
    if not targets.is_floating_point():
        if targets.ndim != 1:
            raise ConfigError(f"{where} has integer labels of shape {tuple(targets.shape)}; give one label per "
                              "example")
        if int(targets.min()) < 0:
            raise ConfigError(f"{where} has the label {int(targets.min())}; class labels are 0, 1, ...")
        targets = targets.long()
    return Batch(inputs.detach().cpu(), targets.detach().cpu())


def load_target_data(target: str, args: dict, key: str = "data.target") -> tuple[Batch, Batch, int]:
    """(train, test, number of classes: 0 for float targets) from a loader target returning (train, test)."""
    value = call_target(target, args, key)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        kind = f"a {len(value)}-tuple" if isinstance(value, (tuple, list)) else f"a {type(value).__name__}"
        raise ConfigError(f"{key}={target} returned {kind}; return (train, test), each a pair of tensors "
                          "(inputs, targets) or a torch Dataset of such pairs")
    train, test = (_as_batch(v, f"the {split} split of {key}={target}") for split, v in zip(("train", "test"), value))
    if train.inputs.shape[1:] != test.inputs.shape[1:] or train.targets.dtype.is_floating_point != \
            test.targets.dtype.is_floating_point:
        raise ConfigError(f"{key}={target}: its train and test splits differ in input shape or target kind "
                          f"({tuple(train.inputs.shape[1:])} vs {tuple(test.inputs.shape[1:])})")
    if train.targets.is_floating_point():
        return train, test, 0
    return train, test, int(max(train.targets.max(), test.targets.max() if len(test) else 0)) + 1


def outputs_on_two(module: nn.Module, inputs: torch.Tensor) -> Any:
    """The module's outputs on the first two examples, in eval mode without gradients (its mode restored
    after): the probe every way in checks a model against its data with. The module's own error propagates."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(inputs[:2])
    finally:
        module.train(was_training)


def check_outputs(module: nn.Module, train: Batch, test: Batch, model: str, data: str) -> None:
    """A forward pass on two examples: the model takes the data's inputs, and class labels fit its outputs."""
    try:
        outputs = outputs_on_two(module, train.inputs)
    except Exception as err:
        raise ConfigError(f"{model} cannot take the inputs of {data} (shape {tuple(train.inputs.shape[1:])} per "
                          f"example): {_first_line(err)}") from None
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ConfigError(f"{model} gives outputs of shape {shape}; samcli's losses need (examples, outputs)")
    if not train.targets.is_floating_point():
        high = int(max(train.targets.max(), test.targets.max() if len(test) else 0))
        if high >= outputs.shape[1]:
            raise ConfigError(f"{data} has the label {high}, but {model} has {outputs.shape[1]} outputs; labels "
                              f"must be in 0..{outputs.shape[1] - 1} (give the model num_outputs outputs)")


def load_weights(module: nn.Module, path: str | Path, model: str) -> str:
    """Load a state_dict file (or a samcli checkpoint's theta and buffers) into `module`, every key and
    shape checked first; returns the file's sha256. A mismatch is one line naming both sides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights {path} does not exist; pass a file saved with torch.save(model.state_dict())")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"--weights {path} cannot be read ({_first_line(err)}); pass a torch.save'd "
                          "state_dict") from None
    if isinstance(state, dict) and isinstance(state.get("theta"), torch.Tensor):    # samcli's checkpoint.pt
        state = _checkpoint_state(module, state, path, model)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--weights {path} holds a {type(state).__name__}, not a state_dict (a mapping of "
                          "names to tensors); save model.state_dict()")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} is {tuple(state[k].shape)} there, {tuple(v.shape)} in the model" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = ([f"missing keys {', '.join(missing[:4])}"] if missing else []) + \
               ([f"unexpected keys {', '.join(unexpected[:4])}"] if unexpected else []) + wrong[:2]
    if problems:
        raise ConfigError(f"--weights {path} does not match {model}: {'; '.join(problems)}; pass the weights of "
                          "this model (or the args that built it)")
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:            # the model in the precision its weights were saved in, not rounded to it
        module.to(dtypes.pop())
    module.load_state_dict(state)
    return hashlib.sha256(path.read_bytes()).hexdigest()     # as runs.file_sha256 (which sits beside this)


def _checkpoint_state(module: nn.Module, state: dict, path: Path, model: str) -> dict:
    """A samcli checkpoint as a state_dict of `module`: theta split in parameter order, the buffers."""
    theta, named = state["theta"], dict(module.named_parameters())
    count = sum(p.numel() for p in named.values())
    if theta.dim() != 1 or theta.numel() != count:
        raise ConfigError(f"--weights {path} holds {theta.numel()} parameters, but {model} has {count}; pass the "
                          "checkpoint of this model (or the args that built it)")
    pieces = theta.split([p.numel() for p in named.values()])
    out = {k: piece.view(p.shape) for (k, p), piece in zip(named.items(), pieces)}
    out.update(state.get("buffers") or {})
    keys = module.state_dict()          # persistent entries only, as a state_dict file would hold
    return {k: v for k, v in out.items() if k in keys}
