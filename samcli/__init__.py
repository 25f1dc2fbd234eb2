"""samcli: train with SGD/GD and every SAM variant, measure three notions of sharpness, compare."""
__version__ = "0.1.0"

from .config import ConfigError, SamcliError, TrainConfig  # noqa: E402
from .train import RunResult, train  # noqa: E402

__all__ = ["TrainConfig", "ConfigError", "SamcliError", "RunResult", "train"]

from .sharpness import SharpnessReport, measure_run, measure_sharpness  # noqa: E402

__all__ += ["SharpnessReport", "measure_sharpness", "measure_run"]

from .study import compare  # noqa: E402

__all__ += ["compare"]
