"""samcli: train with SGD/GD and every SAM variant, measure three notions of sharpness, compare."""
from ._version import __version__
from .config import ConfigError, SamcliError, TrainConfig
from .spec.measure import Column, MeasureSpec, Notion, register_notion
from .train import RunResult, train

__all__ = ["__version__", "TrainConfig", "ConfigError", "SamcliError", "RunResult", "train", "MeasureSpec", "Notion",
           "Column", "register_notion"]

from .sharpness import SharpnessReport, measure_run, measure_sharpness  # noqa: E402

__all__ += ["SharpnessReport", "measure_sharpness", "measure_run"]

from .study import CompareResult, compare  # noqa: E402

__all__ += ["CompareResult", "compare"]
