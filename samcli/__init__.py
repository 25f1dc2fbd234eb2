"""samcli: train with SGD/GD and every SAM variant, measure three notions of sharpness, compare.

The torch-free names load here; the engine's (train, measure_sharpness, compare ...) load on first
use (PEP 562), so that `import samcli.config` validates a config without importing torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import ConfigError, SamcliError, TrainConfig
from .spec.measure import Column, MeasureSpec, Notion, register_notion

if TYPE_CHECKING:
    from .sharpness import SharpnessReport, measure_run, measure_sharpness
    from .study import CompareResult, compare
    from .train import RunResult, train
    from .writer import RunWriter

_LAZY = {"RunResult": ".train", "train": ".train", "SharpnessReport": ".sharpness", "measure_sharpness": ".sharpness",
         "measure_run": ".sharpness", "CompareResult": ".study", "compare": ".study", "RunWriter": ".writer"}

__all__ = ["__version__", "TrainConfig", "ConfigError", "SamcliError", "RunResult", "train", "SharpnessReport",
           "measure_sharpness", "measure_run", "CompareResult", "compare", "RunWriter", "MeasureSpec", "Notion",
           "Column", "register_notion"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    try:     # a subpackage (samcli.sharpness ...), reachable after `import samcli` as when it loaded eagerly
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'samcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`samcli.train` is the function, as it always was, though the submodule has the same name:
    importing samcli/train.py (by anyone, in any order) sets the package's attribute to the module,
    which would shadow the lazily loaded function, so that one assignment keeps the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            value = value.train
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
