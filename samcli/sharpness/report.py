"""What a sharpness measurement returns: frozen values with their diagnostics, never bare numbers."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class WorstDirection:
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


@dataclass(frozen=True)
class AscentDirection:
    """L(x + rho g/||g||) - L(x) with g the gradient over the measured set."""
    value: float
    rayleigh: float                    # n^T H n, n = g/||g||
    limit: float                       # rho^2 n^T H n / 2
    grad_norm: float


@dataclass(frozen=True)
class AverageDirection:
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


@dataclass(frozen=True)
class StochasticNotions:
    """Per-example (stochastic) notions on a sample of examples: E_k lambda_1(grad^2 L_k), E_k R^Asc_k."""
    examples: int
    mean_lambda_1: float
    stderr_lambda_1: float
    max_residual: float                # worst per-example Lanczos residual
    mean_ascent: float
    stderr_ascent: float


@dataclass(frozen=True)
class ExactSpectrum:
    """From the dense float64 Hessian: the ground truth for small models."""
    lambda_1: float
    lambda_m: float                    # smallest eigenvalue above zero_tol * lambda_1
    trace: float
    rank: int
    zero_tol: float
    limit_worst: float                 # rho^2 lambda_1 / 2
    limit_ascent: float                # rho^2 lambda_M / 2 (the infimum of the ascent notion's limit)
    limit_average: float               # rho^2 Tr / (2D)


@dataclass(frozen=True)
class AdaptiveSharpness:
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AdaptiveSharpness":
        return cls(**data)

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows, prefixed ada_ beside the other notions' keys."""
        out = {"ada_lambda_1": self.lambda_1, "ada_limit_max": self.limit_worst, "ada_trace": self.trace,
               "ada_limit_avg": self.limit_average}
        if self.worst is not None:
            out["ada_r_max"] = self.worst
        if self.average is not None:
            out["ada_r_avg"] = self.average
        return out


@dataclass(frozen=True)
class SharpnessReport:
    rho: float
    examples: int                      # examples the loss was measured on
    parameters: int
    loss: float
    mode: str                          # "eval": BatchNorm uses running statistics; dropout off
    seed: int
    worst: Optional[WorstDirection] = None
    ascent: Optional[AscentDirection] = None
    average: Optional[AverageDirection] = None
    alignment: Optional[float] = None  # |cos(g, v_1)|
    stochastic: Optional[StochasticNotions] = None
    exact: Optional[ExactSpectrum] = None
    seconds: float = 0.0               # wall time of the whole measurement
    # wall seconds per part: gradient, lanczos (lambda_1 for worst and the alignment), worst, ascent,
    # average, stochastic, exact; only the parts that ran
    notion_seconds: dict[str, float] = field(default_factory=dict)
    adaptive: Optional[AdaptiveSharpness] = None      # opt-in: notions including "adaptive"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> dict[str, float]:
        """The flat numbers a table shows (absent notions are left out)."""
        out: dict[str, float] = {"loss": self.loss}
        if self.worst:
            out.update(lambda_1=self.worst.eigenvalues[0], limit_max=self.worst.limit)
            if self.worst.finite is not None:
                out["r_max"] = self.worst.finite
        if self.ascent:
            out.update(r_asc=self.ascent.value, rayleigh=self.ascent.rayleigh, grad_norm=self.ascent.grad_norm)
        if self.average:
            out.update(trace=self.average.trace, trace_stderr=self.average.trace_stderr, limit_avg=self.average.limit)
            if self.average.finite is not None:
                out["r_avg"] = self.average.finite
        if self.alignment is not None:
            out["alignment"] = self.alignment
        if self.stochastic:
            out.update(stoch_lambda_1=self.stochastic.mean_lambda_1, stoch_r_asc=self.stochastic.mean_ascent)
        if self.adaptive:
            out.update(self.adaptive.summary())
        if self.exact:
            out.update(exact_lambda_1=self.exact.lambda_1, exact_lambda_m=self.exact.lambda_m,
                       exact_trace=self.exact.trace)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SharpnessReport":
        parts = {"worst": WorstDirection, "ascent": AscentDirection, "average": AverageDirection,
                 "stochastic": StochasticNotions, "exact": ExactSpectrum, "adaptive": AdaptiveSharpness}
        kwargs = dict(data)
        for key, part in parts.items():
            if kwargs.get(key) is not None:
                value = dict(kwargs[key])
                for name in ("eigenvalues", "residuals", "restart_values"):
                    if name in value:
                        value[name] = tuple(value[name])
                kwargs[key] = part(**value)
        return cls(**kwargs)
