"""The study spec, at the bottom of the study floor: a study's runs (`RunSpec`), the study itself
(`Study`) and the checks it states for its baseline (`Tolerance`, `Ordering`, parsed here by
`parse_checks`). Every other study module reads these; this one imports no other study module (the
metric names a check may use are passed in: they are the table's), so grid (which builds studies),
rundir, table, the executors and baseline (which only checks) sit on top of it without importing
each other in a circle.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import ConfigError, TrainConfig

ORDERING = re.compile(r"^\s*(?P<a>.+?)\s+(?P<ma>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|<|>)\s*"
                      r"(?P<b>.+?)\s+(?P<mb>[A-Za-z_][A-Za-z0-9_]*)\s*$")


class StudyError(ConfigError):
    """An invalid study: one line naming the offending entry."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its configuration's label, its seed, the overrides and the config they make."""

    label: str                 # the configuration (a table row); seeds of one label are aggregated
    seed: int
    overrides: dict            # dotted keys -> values applied to the base (for display)
    config: TrainConfig = field(repr=False, compare=False)
    hash: str = ""
    given: Optional[str] = None  # a given run's own directory (`runs:`): copied, measured, never trained

    @property
    def method(self) -> str:
        """The run's optimizer method (the config's `optimizer.method`)."""
        return self.config.optimizer.method

    @property
    def name(self) -> str:
        """The run's display name: its label and seed."""
        return f"{self.label} seed {self.seed}"


@dataclass(frozen=True)
class Ordering:
    """A baseline ordering 'LABEL METRIC < LABEL METRIC': its text, both sides and the comparison."""

    text: str
    left: str
    left_metric: str
    op: str
    right: str
    right_metric: str


@dataclass(frozen=True)
class Tolerance:
    """A baseline tolerance of one metric: absolute and relative to the reference value."""

    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, reference: float) -> float:
        """The deviation from `reference` the tolerance allows: abs + rel * |reference|."""
        return self.abs + self.rel * abs(reference)


@dataclass(frozen=True)
class Study:
    """A study: its runs, their configurations in order, the sharpness spec and the baseline's checks."""

    name: str
    raw: dict = field(repr=False)              # the study as written (study.yaml in the study directory)
    runs: tuple[RunSpec, ...] = field(repr=False)
    labels: tuple[str, ...] = ()               # configurations in order
    sharpness: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)   # metric -> Tolerance
    orderings: tuple[Ordering, ...] = ()
    source: Optional[str] = None
    description: str = ""
    confound_tolerance: Optional[float] = None   # correlations.confound_warning's (None: no check)

    @property
    def has_checks(self) -> bool:
        """Whether a baseline can check anything: the study states tolerances or orderings."""
        return bool(self.tolerances or self.orderings)


def parse_checks(raw: Any, labels: tuple[str, ...], metrics: Sequence[str], where: str = "study"
                 ) -> tuple[dict, tuple[Ordering, ...]]:
    """(metric -> Tolerance, orderings) from a study's `baseline:` mapping; `labels` are its
    configurations, `metrics` the table's metrics a check may name."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: baseline must be a mapping with tolerances and orderings")
    unknown = [k for k in raw if k not in ("tolerances", "orderings")]
    if unknown:
        raise StudyError(f"{where}: unknown key baseline.{unknown[0]}; allowed: tolerances, orderings")
    tolerances_raw = raw.get("tolerances") or {}
    if not isinstance(tolerances_raw, dict):
        raise StudyError(f"{where}: baseline.tolerances must be a mapping of metric -> {{abs: x, rel: y}}")
    tolerances = {metric: _tolerance(metric, tol, metrics, where) for metric, tol in tolerances_raw.items()}
    orderings_raw = raw.get("orderings") or []
    if not isinstance(orderings_raw, list):
        raise StudyError(f"{where}: baseline.orderings must be a list such as ['SAM lambda_1 < GD lambda_1']")
    return tolerances, tuple(_ordering(text, labels, metrics, where) for text in orderings_raw)


def _tolerance(metric: Any, tol: Any, metrics: Sequence[str], where: str) -> Tolerance:
    if metric not in metrics:
        raise StudyError(f"{where}: baseline.tolerances.{metric} is not a table metric; choose from "
                         f"{', '.join(metrics)}")
    if not isinstance(tol, dict) or not tol or any(k not in ("abs", "rel") for k in tol):
        raise StudyError(f"{where}: baseline.tolerances.{metric}={tol!r} must be {{abs: x}}, {{rel: y}} or both")
    for k, v in tol.items():
        # NaN compares false with everything, so a NaN tolerance would make every check hold or fail at random
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise StudyError(f"{where}: baseline.tolerances.{metric}.{k}={v!r} must be a number >= 0, and finite")
    return Tolerance(float(tol.get("abs", 0.0)), float(tol.get("rel", 0.0)))


def _ordering(text: Any, labels: tuple[str, ...], metrics: Sequence[str], where: str) -> Ordering:
    match = ORDERING.match(text) if isinstance(text, str) else None
    if not match:
        raise StudyError(f"{where}: baseline ordering {text!r} must read 'LABEL METRIC < LABEL METRIC'")
    o = Ordering(text, match["a"], match["ma"], match["op"], match["b"], match["mb"])
    for label, metric in ((o.left, o.left_metric), (o.right, o.right_metric)):
        if label not in labels:
            raise StudyError(f"{where}: baseline ordering {text!r} names configuration {label!r}, which the "
                             f"study does not have; configurations: {', '.join(labels)}")
        if metric not in metrics:
            raise StudyError(f"{where}: baseline ordering {text!r} names metric {metric!r}; choose from "
                             f"{', '.join(metrics)}")
    return o
