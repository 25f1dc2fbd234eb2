"""What a sharpness measurement returns: frozen values with their diagnostics, never bare numbers.

Each notion's result knows its summary numbers (the keys its registry entry declares as columns) and
its rows for the terminal table; `SharpnessReport` holds the results by notion name, beside the spec
it was measured with, the samcli version and the checkpoint it measured, so a stored report can be
trusted only for exactly what made it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, cast

from ..spec.measure import NOTIONS, SpecError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Row = tuple[str, str, Optional[float], str]      # (notion, quantity, value, diagnostics)


class _Result:
    """Shared by every notion's result: plain-dict round trip (lists back to tuples)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(cast("DataclassInstance", self))      # every subclass is a dataclass

    @classmethod
    def from_dict(cls, data: dict):
        kinds = {f.name: f.type for f in dataclasses.fields(cast("type[DataclassInstance]", cls))}
        return cls(**{k: tuple(v) if isinstance(v, list) and "tuple" in str(kinds.get(k)) else v
                      for k, v in data.items()})


def _restarts(values) -> str:
    """Each restart's value, the one from rho v_1 first: equal ones climbed to the same point."""
    if len(values) < 2:
        return ""
    return f" (from v_1 {values[0]:.4g}; from random starts {', '.join(f'{v:.4g}' for v in values[1:])})"


@dataclass(frozen=True)
class WorstDirection(_Result):
    """max_{||v|| <= rho} L(x + v) - L(x); its limit rho^2 lambda_1 / 2."""
    eigenvalues: tuple[float, ...]     # top-k Hessian eigenvalues, largest first (Lanczos)
    residuals: tuple[float, ...]       # ||H v - lambda v|| for each
    converged: bool
    lanczos_iterations: int
    limit: float                       # rho^2 lambda_1 / 2
    finite: Optional[float] = None     # R^Max_rho by projected gradient ascent (best over restarts)
    finite_iterations: int = 0         # gradient evaluations spent by the ascent
    finite_restarts: int = 0
    error_bound: Optional[float] = None  # residual^2 / Ritz gap: a posteriori error of lambda_1
    # R^Max_rho reached from each start, rho v_1 first, then the random ones: equal values mean the
    # restarts climbed to the same point (in high dimension a random start's first step lands on g)
    restart_values: tuple[float, ...] = ()

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows: lambda_1, its limit and, once computed, R^Max_rho."""
        out = {"lambda_1": self.eigenvalues[0], "limit_max": self.limit}
        if self.finite is not None:
            out["r_max"] = self.finite
        return out

    def rows(self) -> list[Row]:
        """The worst-direction lines for the terminal table: lambda_1 with its residual, the limit, R^Max_rho."""
        return [("worst", "lambda_1 (Lanczos)", self.eigenvalues[0],
                 f"residual {self.residuals[0]:.2g} (error <~ {self.error_bound:.1g}), "
                 f"{'converged' if self.converged else 'NOT converged'} in {self.lanczos_iterations} its"),
                ("worst", "limit rho^2 lambda_1 / 2", self.limit, ""),
                ("worst", "R^Max_rho", self.finite, f"ascent on the sphere, {self.finite_restarts} restarts, "
                 f"{self.finite_iterations} gradients" + _restarts(self.restart_values))]


@dataclass(frozen=True)
class AscentDirection(_Result):
    """L(x + rho g/||g||) - L(x) with g the gradient over the measured set."""
    value: float
    rayleigh: float                    # n^T H n, n = g/||g||
    limit: float                       # rho^2 n^T H n / 2
    grad_norm: float
    alignment: Optional[float] = None  # |cos(g, v_1)|, v_1 the top Hessian eigenvector

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows: R^Asc_rho, n^T H n, ||g|| and, once computed, the alignment."""
        out = {"r_asc": self.value, "rayleigh": self.rayleigh, "grad_norm": self.grad_norm}
        if self.alignment is not None:
            out["alignment"] = self.alignment
        return out

    def rows(self) -> list[Row]:
        """The ascent-direction lines for the terminal table, the alignment last when it was computed."""
        rows: list[Row] = [("ascent", "R^Asc_rho", self.value, f"||g|| = {self.grad_norm:.3g}"),
                           ("ascent", "Rayleigh n^T H n", self.rayleigh, "n = g/||g||")]
        if self.alignment is not None:
            rows.append(("", "|cos(g, v_1)|", self.alignment, "gradient / top-eigenvector alignment"))
        return rows


@dataclass(frozen=True)
class AverageDirection(_Result):
    """E_u L(x + rho u) - L(x), u uniform on the unit sphere; its limit rho^2 Tr(H) / (2D)."""
    trace: float
    trace_stderr: float
    trace_method: str
    trace_matvecs: int
    ggn_trace: Optional[float]
    limit: float
    finite: Optional[float] = None     # Monte Carlo with antithetic pairs (+u, -u)
    finite_stderr: Optional[float] = None
    directions: int = 0

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows: Tr(H), its standard error, the limit and, once computed, R^Avg_rho."""
        out = {"trace": self.trace, "trace_stderr": self.trace_stderr, "limit_avg": self.limit}
        if self.finite is not None:
            out["r_avg"] = self.finite
        return out

    def rows(self) -> list[Row]:
        """The average-direction lines for the terminal table: Tr(H), the limit and, once computed, R^Avg_rho."""
        rows: list[Row] = [
            ("average", "Tr(H)", self.trace,
             f"+- {self.trace_stderr:.2g} ({self.trace_method}, {self.trace_matvecs} HVPs)"),
            ("average", "limit rho^2 Tr / (2D)", self.limit, "")]
        if self.finite is not None:
            rows.append(("average", "R^Avg_rho", self.finite,
                         f"+- {self.finite_stderr:.2g} ({self.directions} directions)"))
        return rows


@dataclass(frozen=True)
class StochasticNotions(_Result):
    """Per-example (stochastic) notions on a sample of examples: E_k lambda_1(grad^2 L_k), E_k R^Asc_k."""
    examples: int
    mean_lambda_1: float
    stderr_lambda_1: float
    max_residual: float                # worst per-example Lanczos residual
    mean_ascent: float
    stderr_ascent: float

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows: the per-example means of lambda_1 and R^Asc."""
        return {"stoch_lambda_1": self.mean_lambda_1, "stoch_r_asc": self.mean_ascent}

    def rows(self) -> list[Row]:
        """The per-example lines for the terminal table, each mean with its standard error."""
        return [("per-example", "E_k lambda_1(H_k)", self.mean_lambda_1,
                 f"+- {self.stderr_lambda_1:.2g} over {self.examples} examples"),
                ("per-example", "E_k R^Asc_k", self.mean_ascent, f"+- {self.stderr_ascent:.2g}")]


@dataclass(frozen=True)
class ExactSpectrum(_Result):
    """From the dense float64 Hessian: the ground truth for small models."""
    lambda_1: float
    lambda_m: float                    # smallest eigenvalue above zero_tol * lambda_1
    trace: float
    rank: int
    zero_tol: float
    limit_worst: float                 # rho^2 lambda_1 / 2
    limit_ascent: float                # rho^2 lambda_M / 2 (the infimum of the ascent notion's limit)
    limit_average: float               # rho^2 Tr / (2D)

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows: the dense Hessian's lambda_1, lambda_M and trace."""
        return {"exact_lambda_1": self.lambda_1, "exact_lambda_m": self.lambda_m, "exact_trace": self.trace}

    def rows(self) -> list[Row]:
        """The dense-Hessian line for the terminal table: lambda_1, lambda_M, trace and rank."""
        return [("exact", "lambda_1 / lambda_M / Tr", self.lambda_1,
                 f"lambda_M {self.lambda_m:.6g}, Tr {self.trace:.6g}, rank {self.rank}")]


@dataclass(frozen=True)
class AdaptiveSharpness(_Result):
    """Adaptive (scale-invariant) sharpness at radius rho, T = diag(|w| + eta_abs)."""
    rho: float
    eta_abs: float
    examples: int
    parameters: int
    loss: float
    # eps of the parameters' dtype times |L|: finite-rho values near it are rounding, not curvature
    # (in float32 the default rho = 0.05 moves the loss of a trained net by about that little)
    loss_resolution: float
    lambda_1: float                    # top eigenvalue of T H T (Lanczos)
    lambda_1_residual: float           # ||T H T v - lambda v||
    lambda_1_error_bound: float        # residual^2 / Ritz gap
    lanczos_converged: bool
    lanczos_iterations: int
    limit_worst: float                 # rho^2 lambda_1(T H T) / 2
    trace: float                       # Tr(T H T) by Hutch++
    trace_stderr: float
    trace_method: str
    trace_matvecs: int
    limit_average: float               # rho^2 Tr(T H T) / (2 D)
    worst: Optional[float] = None      # max_{||u|| <= rho} L(w + T u) - L(w), best over restarts
    worst_gradients: int = 0           # gradient evaluations spent by the ascent
    worst_restarts: int = 0
    average: Optional[float] = None    # E_u L(w + T u) - L(w), antithetic Monte Carlo
    average_stderr: Optional[float] = None
    directions: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows, prefixed ada_ beside the other notions' keys."""
        out = {"ada_lambda_1": self.lambda_1, "ada_limit_max": self.limit_worst, "ada_trace": self.trace,
               "ada_limit_avg": self.limit_average}
        if self.worst is not None:
            out["ada_r_max"] = self.worst
        if self.average is not None:
            out["ada_r_avg"] = self.average
        return out

    def rows(self) -> list[Row]:
        """The adaptive lines for the terminal table: lambda_1(T H T), R^Max, Tr(T H T) and R^Avg at rho."""
        return [("adaptive", "lambda_1(T H T), T = |w|", self.lambda_1, f"residual {self.lambda_1_residual:.2g}"),
                ("adaptive", f"R^Max at rho={self.rho:g}", self.worst,
                 f"{self.worst_restarts} restarts, {self.worst_gradients} gradients"),
                ("adaptive", "Tr(T H T)", self.trace, f"+- {self.trace_stderr:.2g} ({self.trace_method})"),
                ("adaptive", f"R^Avg at rho={self.rho:g}", self.average,
                 f"+- {self.average_stderr:.2g} ({self.directions} directions)"
                 if self.average_stderr is not None else "")]


@dataclass(frozen=True)
class DensitySpectrum(_Result):
    """The Hessian's eigenvalue distribution (1/D) sum_i delta(t - lambda_i) by stochastic Lanczos quadrature,
    smoothed by a Gaussian of width `sigma`, with the moments it implies (Ghorbani et al. 2019)."""
    probes: int
    probe: str                         # rademacher (normalized)
    steps: tuple[int, ...]             # Lanczos steps per probe (fewer at an exhausted Krylov space)
    matvecs: int                       # Hessian-vector products spent
    nodes: tuple[float, ...]           # quadrature nodes of every probe, probe after probe (probe_sizes each)
    weights: tuple[float, ...]         # their weights: each probe's sum to 1 / probes, all of them to 1
    probe_sizes: tuple[int, ...]
    sigma: float                       # the broadening's standard deviation, in eigenvalue units
    sigma_relative: float              # the same as a fraction of the nodes' range (spec.density_sigma)
    grid: tuple[float, ...]            # eigenvalues the smoothed curve is evaluated at
    values: tuple[float, ...]          # the smoothed density: the mean of the probes' curves (integrates to ~1)
    values_stderr: tuple[float, ...]   # the probes' spread at each grid point: std / sqrt(probes)
    trace_per_dim: float               # Tr(H)/D: the mean over probes of v^T H v
    trace_per_dim_stderr: float
    trace2_per_dim: float              # Tr(H^2)/D: the mean over probes of ||H v||^2
    trace2_per_dim_stderr: float
    lambda_1: float                    # the largest node (Lanczos' top Ritz value of the probes)
    bulk_low: float                    # the bulk: the central bulk_mass of the estimated distribution
    bulk_high: float
    parameters: int
    bulk_mass: float = 0.9             # the fraction of the mass in bulk_low .. bulk_high

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows: lambda_1 and the two moments with their standard errors."""
        return {"density_lambda_1": self.lambda_1, "density_trace_per_dim": self.trace_per_dim,
                "density_trace_per_dim_stderr": self.trace_per_dim_stderr,
                "density_trace2_per_dim": self.trace2_per_dim,
                "density_trace2_per_dim_stderr": self.trace2_per_dim_stderr}

    def rows(self) -> list[Row]:
        """The density lines for the terminal table: the two moments, the top node and the bulk."""
        how = f"{self.probes} probes x {max(self.steps)} Lanczos steps, {self.matvecs} HVPs"
        return [("density", "Tr(H)/D (SLQ)", self.trace_per_dim, f"+- {self.trace_per_dim_stderr:.2g} ({how})"),
                ("density", "Tr(H^2)/D (SLQ)", self.trace2_per_dim, f"+- {self.trace2_per_dim_stderr:.2g}"),
                ("density", "lambda_1 (top node)", self.lambda_1,
                 f"bulk ({self.bulk_mass:.0%} of the mass) in [{self.bulk_low:.3g}, {self.bulk_high:.3g}]; "
                 f"smoothed with sigma {self.sigma:.2g} ({self.sigma_relative:g} of the range); density.png")]

    def draw(self, path) -> None:
        """density.png: the log-density over eigenvalue with its error band, lambda_1 and the bulk marked."""
        from .density_plot import plot_density  # matplotlib only when a figure is drawn
        plot_density(self, path)


META = ("rho", "examples", "parameters", "loss", "mode", "seed", "seconds", "notion_seconds", "spec", "spec_hash",
        "version", "checkpoint")


@dataclass(frozen=True)
class SharpnessReport:
    """One measurement: each enabled notion's result by name, and what made it."""
    rho: float
    examples: int                      # examples the loss was measured on
    parameters: int
    loss: float
    mode: str                          # "eval": BatchNorm uses running statistics; dropout off
    seed: int
    results: dict = field(default_factory=dict)      # notion name -> its result, in registry order
    seconds: float = 0.0               # wall time of the whole measurement
    # wall seconds per part: gradient, lanczos (the top eigenpairs for worst and the alignment), then one
    # entry per notion; only the parts that ran
    notion_seconds: dict[str, float] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)         # MeasureSpec.to_dict() of the measurement
    spec_hash: str = ""
    version: str = ""                  # samcli's version that measured
    checkpoint: Optional[str] = None   # sha256 of the checkpoint file measured (run directories)

    def __getattr__(self, name: str) -> Any:
        # report.worst, report.average, report.adaptive ...: the result of the notion of that name
        # ("stochastic" is the per-example notion's old name); None when it was not measured
        if name.startswith("__"):
            raise AttributeError(name)
        key = {"stochastic": "per-example"}.get(name, name)
        if key in NOTIONS:
            return self.__dict__.get("results", {}).get(key)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def alignment(self) -> Optional[float]:
        """|cos(g, v_1)| from the ascent notion; None when it was not measured."""
        ascent = self.results.get("ascent")
        return ascent.alignment if ascent is not None else None

    def to_dict(self) -> dict:
        """The report as plain data: its metadata, then each measured notion's result as a dict."""
        data = {k: getattr(self, k) for k in META}
        data.update({name: result.to_dict() for name, result in self.results.items()})
        return data

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows (absent notions are left out)."""
        out: dict[str, float] = {"loss": self.loss}
        for result in self.results.values():
            out.update(result.summary())
        return out

    def figures(self) -> dict[str, Optional[Callable[[Any], None]]]:
        """File name -> draw(path) of each figure a registered notion draws beside sharpness.json; None
        where this report lacks the notion, so that an earlier measurement's figure is not left stale."""
        out: dict[str, Optional[Callable[[Any], None]]] = {}
        for name, notion in NOTIONS.items():
            if notion.figure:
                result = self.results.get(name)
                out[notion.figure] = getattr(result, "draw", None)
        return out

    def rows(self) -> list[Row]:
        """Every notion's lines for the terminal table, loss first."""
        return [("", "loss L(x)", self.loss, "")] + [row for r in self.results.values() for row in r.rows()]

    @classmethod
    def from_dict(cls, data: dict) -> SharpnessReport:
        """A report as `to_dict` wrote it; a notion that is not registered is a SpecError."""
        meta = {k: v for k, v in data.items() if k in META}
        results = {}
        for name, value in data.items():
            if name in META:
                continue
            if name not in NOTIONS:
                raise SpecError(f"the report holds notion {name!r}, which is not registered", name)
            if value is not None:
                results[name] = cast("type[_Result]", NOTIONS[name].result_type()).from_dict(value)
        ordered = {n: results[n] for n in NOTIONS if n in results}
        return cls(results=ordered, **meta)
