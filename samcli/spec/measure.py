"""The one description of a sharpness measurement, and the registry of the notions it can ask for.

`MeasureSpec` holds every knob that changes a measured number: the radius, which examples, the seed,
the notions, and each estimator's precision. The Python API, `samcli sharpness` (options and
`--set`), a study's `sharpness:` section and `measure:` during training all build it with
`MeasureSpec.build`, so a knob is checked once, in one place, and a stored report carries the spec
(and its hash) it was measured with: reuse compares hashes, never a hand-picked subset of fields.

`NOTIONS` is the one list of sharpness notions. An entry names its compute function and result type
by "module:attribute" strings, so this floor stays free of torch while config validation, the report,
the renderer, the study table and the correlations all read the same list; a notion registered from
a user's code may pass the objects themselves.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

from ..errors import ConfigError, short_repr

INT_MAX = 2 ** 63 - 1      # torch.manual_seed and every counter here are 64-bit
_Check = Callable[[Any], Optional[str]]


class SpecError(ConfigError):
    """A measurement knob with a wrong name, type or range. `key` is the knob; on the command line
    the error names the option (`--rho=0 must be > 0`) or `--set key=...`, in Python the keyword or
    the config key it came through (`sharpness.rho=0 must be > 0`)."""

    def __init__(self, message: str, key: str = "", cli: str = ""):
        super().__init__(message)
        self.key, self.cli = key, cli          # cli: the message with "{}" where the knob's name goes

    def __reduce__(self):          # a run in another process raises it; pickle rebuilds it from its parts
        return type(self), (str(self), self.key, self.cli)

    def cli_message(self, options: Optional[Mapping[str, str]] = None) -> str:
        """The error for the command line: the knob named by its option in `options`, else as `--set key`."""
        if not self.cli:
            return str(self)
        return self.cli.format((options or {}).get(self.key) or f"--set {self.key}")


# ---- the notion registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One number a notion contributes to a report's summary and a study's table."""
    key: str                         # the summary key (a column of the study's runs frame)
    header: str                      # the table header
    label: str = ""                  # plot label (matplotlib mathtext); the header when empty
    shown: bool = True               # printed in the study table (else only in table.csv / study.json)
    correlate: bool = False          # a sharpness measure: rank-correlated with accuracy and the gap

    @property
    def plot_label(self) -> str:
        """The label a plot shows: the mathtext label, else the header."""
        return self.label or self.header


@dataclass(frozen=True)
class Notion:
    """A sharpness notion: `compute(context) -> result`, result a frozen dataclass with `summary()`,
    `rows()` (the renderer's lines) and `from_dict`."""
    name: str
    help: str
    compute: Union[str, Callable]    # "module:function" or the function
    result: Union[str, type]         # "module:Class" or the class
    columns: tuple[Column, ...] = ()
    default: bool = False            # measured unless the notions are named
    needs_lanczos: bool = False      # the shared top-eigenpair run (computed once, timed apart)
    # when the notion runs: by default when it is named in spec.notions; the per-example and exact
    # notions are switched by their own knobs (stochastic_examples, exact), as they always were
    enabled: Optional[Callable[[MeasureSpec], bool]] = None
    # the spec knobs only this notion reads: left out of the spec's hash when it does not run, so adding a
    # notion with knobs of its own keeps every stored report's hash (and its reuse) as it was
    knobs: tuple[str, ...] = ()
    figure: str = ""                 # a file the result draws beside sharpness.json (result.draw(path))

    def is_enabled(self, spec: MeasureSpec) -> bool:
        """Whether a measurement by this spec runs the notion (its own switch, else being named in spec.notions)."""
        return self.enabled(spec) if self.enabled is not None else self.name in spec.notions

    def compute_function(self) -> Callable:
        """The function that computes the notion (imported on first use when named by a string)."""
        return _resolve(self.compute)

    def result_type(self) -> type:
        """The notion's frozen result class (imported on first use when named by a string)."""
        return _resolve(self.result)


def _resolve(target):
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


_SHARP = "samcli.sharpness."
NOTIONS: dict[str, Notion] = {}


def register_notion(notion: Notion, *, replace: bool = False) -> Notion:
    """Add a notion to the registry (a user's or a test's own): every layer reads it from here."""
    if notion.name in NOTIONS and not replace:
        raise ConfigError(f"a sharpness notion named {notion.name!r} is registered already; pass replace=True")
    keys = {c.key for n in NOTIONS.values() if n.name != notion.name for c in n.columns}
    clash = [c.key for c in notion.columns if c.key in keys]
    if clash:
        raise ConfigError(f"notion {notion.name!r}: summary key {clash[0]!r} belongs to another notion already")
    NOTIONS[notion.name] = notion
    return notion


def unregister_notion(name: str) -> None:
    """Remove a registered notion (tests that register a toy one clean up with this)."""
    NOTIONS.pop(name, None)


def notion_names(requestable: bool = True) -> tuple[str, ...]:
    """The registered notions in registry order (requestable: those named in `notions`)."""
    return tuple(n.name for n in NOTIONS.values() if not requestable or n.enabled is None)


def default_notions() -> tuple[str, ...]:
    """The notions measured unless the notions are named: the registry's defaults, in registry order."""
    return tuple(n.name for n in NOTIONS.values() if n.default)


def columns() -> tuple[Column, ...]:
    """Every notion's summary columns, in registry order."""
    return tuple(c for n in NOTIONS.values() for c in n.columns)


for _notion in (
    Notion("worst", "worst direction: lambda_1 (Lanczos), R^Max_rho by ascent on the sphere, limit rho^2 lambda_1/2",
           _SHARP + "worst:worst_direction", _SHARP + "report:WorstDirection",
           (Column("lambda_1", "lambda_1", r"$\lambda_1$", correlate=True),
            Column("limit_max", "rho^2 lambda_1/2", shown=False),
            Column("r_max", "R^Max_rho", r"$R^{\mathrm{Max}}_\rho$", correlate=True)),
           default=True, needs_lanczos=True),
    Notion("ascent", "ascent direction: R^Asc_rho = L(x + rho g/||g||) - L(x), n^T H n, |cos(g, v_1)|",
           _SHARP + "ascent_direction:ascent_direction", _SHARP + "report:AscentDirection",
           (Column("r_asc", "R^Asc_rho", r"$R^{\mathrm{Asc}}_\rho$", correlate=True),
            Column("rayleigh", "n^T H n", shown=False), Column("grad_norm", "||g||", shown=False),
            Column("alignment", "alignment", r"$|\cos(g, v_1)|$")),
           default=True, needs_lanczos=True),
    Notion("average", "average direction: Tr(H) (exact where it can be), R^Avg_rho by antithetic Monte Carlo",
           _SHARP + "average:average_direction", _SHARP + "report:AverageDirection",
           (Column("trace", "Tr", r"$\mathrm{Tr}(H)$", correlate=True),
            Column("trace_stderr", "Tr stderr", shown=False), Column("limit_avg", "rho^2 Tr/(2D)", shown=False),
            Column("r_avg", "R^Avg_rho", r"$R^{\mathrm{Avg}}_\rho$", correlate=True)),
           default=True),
    Notion("per-example", "per-example notions E_k lambda_1(H_k), E_k R^Asc_k on a seeded sample "
           "(stochastic_examples; 0 turns them off)",
           _SHARP + "per_example:per_example_notions", _SHARP + "report:StochasticNotions",
           (Column("stoch_lambda_1", "E_k lambda_1(H_k)", r"$\mathbb{E}_k\,\lambda_1(H_k)$", shown=False,
                   correlate=True),
            Column("stoch_r_asc", "E_k R^Asc_k", shown=False)),
           enabled=lambda spec: spec.stochastic_examples > 0),
    Notion("exact", "the dense float64 Hessian's spectrum (exact=true; small models)",
           _SHARP + "exact:exact_spectrum", _SHARP + "report:ExactSpectrum",
           (Column("exact_lambda_1", "exact lambda_1", shown=False),
            Column("exact_lambda_m", "exact lambda_M", shown=False),
            Column("exact_trace", "exact Tr", shown=False)),
           enabled=lambda spec: spec.exact),
    Notion("adaptive", "adaptive sharpness: lambda_1 and Tr of T H T, R^Max and R^Avg at adaptive_rho, T = |w|",
           _SHARP + "adaptive:adaptive_notion", _SHARP + "report:AdaptiveSharpness",
           (Column("ada_lambda_1", "adaptive lambda_1", r"adaptive $\lambda_1$", correlate=True),
            Column("ada_limit_max", "adaptive limit max", shown=False),
            Column("ada_trace", "adaptive Tr", r"adaptive $\mathrm{Tr}$", correlate=True),
            Column("ada_limit_avg", "adaptive limit avg", shown=False),
            Column("ada_r_max", "adaptive R^Max_rho", r"adaptive $R^{\mathrm{Max}}_\rho$", correlate=True),
            Column("ada_r_avg", "adaptive R^Avg_rho", r"adaptive $R^{\mathrm{Avg}}_\rho$", correlate=True))),
    Notion("density", "Hessian eigenvalue density by stochastic Lanczos quadrature (density_probes x density_steps "
           "HVPs), its moments Tr(H)/D and Tr(H^2)/D with standard errors, density.png",
           _SHARP + "density:density_notion", _SHARP + "report:DensitySpectrum",
           (Column("density_lambda_1", "density lambda_1", r"density $\lambda_1$", shown=False),
            Column("density_trace_per_dim", "Tr/D (SLQ)", r"$\mathrm{Tr}(H)/D$ (SLQ)", shown=False),
            Column("density_trace_per_dim_stderr", "Tr/D stderr (SLQ)", shown=False),
            Column("density_trace2_per_dim", "Tr(H^2)/D (SLQ)", r"$\mathrm{Tr}(H^2)/D$ (SLQ)", shown=False),
            Column("density_trace2_per_dim_stderr", "Tr(H^2)/D stderr (SLQ)", shown=False)),
           knobs=("density_probes", "density_steps", "density_sigma"), figure="density.png"),
):
    register_notion(_notion)


# ---- the measurement spec --------------------------------------------------------------------------

def _int_rule(low: int) -> Callable[[Any], Optional[str]]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value != int(value):
            return "must be a finite integer"
        if not low <= value <= INT_MAX:
            return f"must be >= {low}" if value < low else "is out of range (at most 2**63 - 1)"
        return None
    return check


def _float_rule(zero_allowed: bool) -> Callable[[Any], Optional[str]]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "must be a finite number"
        if not (value >= 0 if zero_allowed else value > 0):
            return "must be >= 0" if zero_allowed else "must be > 0"
        return None
    return check


def _bool_rule(value) -> Optional[str]:
    # a YAML "no" or a Python "False" string is not a boolean: truthiness would read it as True
    return None if isinstance(value, bool) else "must be True or False"


def _dtype_rule(value) -> Optional[str]:
    return None if value in DTYPES else f"is unknown; choose one of {', '.join(DTYPES)}"


DTYPES = ("model", "float32", "float64")   # model: the parameters' own dtype


@dataclass(frozen=True)
class MeasureSpec:
    """Every knob of a sharpness measurement (see docs/measurement.md for what each estimator does)."""
    rho: float = 0.05
    samples: Optional[int] = None     # examples measured on: a seeded subset, or None for all
    seed: int = 0
    notions: tuple[str, ...] = field(default_factory=default_notions)
    k: int = 1                        # top-k eigenvalues
    lanczos_iters: int = 100
    # on ||Hv - lambda v|| / |lambda|; the eigenvalue error is about residual^2 / gap, far smaller
    # (reported as error_bound): 1e-3 gave lambda_1 to 1e-6 on the benchmark MLP
    lanczos_tol: float = 1e-3
    # Rademacher probes for the stochastic part of Tr(H): the GGN control variate spends one H and one
    # G product per probe and layer; Hutch++ (models without the exact GGN trace) spends 3 per probe
    trace_probes: int = 4
    finite: bool = True               # also the finite-rho values (ascent on the sphere, Monte Carlo)
    ascent_iters: int = 20            # per restart of the worst-direction ascent
    ascent_restarts: int = 3
    # a restart ends when a step raises its estimate L(x + v) - L(x) by less than this fraction of it:
    # relative to the sharpness, not to the loss, whose float32 rounding on a full-data mean (~1e-6
    # of the sharpness on ResNet-18/digits) would otherwise read as gains and never stop the ascent
    ascent_tol: float = 1e-4
    directions: int = 64              # Monte Carlo directions for R^Avg (antithetic pairs)
    stochastic_examples: int = 32     # 0 turns the per-example notions off
    exact: bool = False
    zero_tol: float = 1e-6
    # adaptive sharpness perturbs by |w| * u with ||u|| <= adaptive_rho: |w| is ~0.1 in small nets, so
    # the paper's rho = 0.05 would move the loss below float32 resolution; 0.5 is in the range of
    # Andriushchenko et al. 2023's adaptive radii
    adaptive_rho: float = 0.5
    dtype: str = "model"
    # the density notion: Rademacher probes x Lanczos steps (one HVP each), and the Gaussian broadening
    # of the smoothed curve as a fraction of the quadrature nodes' range (Ghorbani et al. smooth likewise).
    # 4 x 12 = 48 HVPs: about the default report's own budget on a 100k-parameter CNN (its Lanczos stops
    # after ~7 products, the ascent, trace and per-example parts cost the rest; 64 HVPs took 1.15x its time,
    # results/benchmarks/density.md); 4 probes are the fewest whose spread is a usable error bar. A figure
    # for a paper wants more steps (Ghorbani et al. use 90)
    density_probes: int = 4
    density_steps: int = 12
    density_sigma: float = 0.01

    RULES: ClassVar[dict[str, _Check]] = {}   # filled below: knob -> check(value) -> problem or None

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def build(cls, raw: Optional[Mapping[str, Any]] = None, *, name: Callable[[str], str] = str,
              base: Optional[MeasureSpec] = None, kind: str = "measurement setting") -> MeasureSpec:
        """The spec from plain values, every knob checked (name, type, range); `name(key)` is how the
        interface that was used spells a knob in its messages (sharpness.rho, measure.rho, --rho)."""
        raw = dict(raw or {})
        knobs = [f.name for f in dataclasses.fields(cls)]
        # keywords and `samcli sharpness --set` spell knobs bare: only their errors get command-line words
        # (an error from a study file or a config's measure: section names the key as the file has it)
        cli = name("rho") == "rho"
        for key in raw:
            if key not in knobs:
                close = _close(str(key), knobs)
                hint = " (did you mean {}?)" if close else ""
                allowed = f"; allowed keys here: {', '.join(knobs)}"
                cli_text = "unknown measurement setting {}" + hint.format(f"--set {close}") + allowed
                raise SpecError(f"unknown {kind} {name(str(key))}" + hint.format(name(close or "")) + allowed,
                                str(key), cli_text if cli else "")
        if raw.get("samples") == "all":
            raw["samples"] = None
        if "notions" in raw:
            raw["notions"] = _notions(raw["notions"], name)
        for key, value in raw.items():
            if key == "notions" or (key == "samples" and value is None):
                continue
            problem = cls.RULES[key](value)
            if problem:
                shown = short_repr(value).replace("{", "{{").replace("}", "}}")
                raise SpecError(f"{name(key)}={short_repr(value)} {problem}", key,
                                "{}=" + f"{shown} {problem}" if cli else "")
        return cls(**{**(dataclasses.asdict(base) if base is not None else {}), **raw})

    def __post_init__(self) -> None:
        """A spec made directly (`MeasureSpec(directions=8)`) is checked like one made by `build`, and its
        numbers made canonical (3.0 -> 3 for a count), so equal specs hash equal."""
        object.__setattr__(self, "notions", _notions(self.notions, str))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "notions" or (f.name == "samples" and value is None):
                continue
            problem = self.RULES[f.name](value)
            if problem:
                raise SpecError(f"{f.name}={short_repr(value)} {problem}", f.name,
                                "{}=" + short_repr(value).replace("{", "{{").replace("}", "}}") + f" {problem}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kind = int if f.type in ("int", "Optional[int]") else float
                object.__setattr__(self, f.name, kind(value))

    def replace(self, **changes) -> MeasureSpec:
        """A copy with some knobs changed, checked like `build`."""
        return MeasureSpec.build(changes, base=self)

    # ---- identity --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The spec as plain data (notions as a list), as a stored report carries it."""
        data = dataclasses.asdict(self)
        data["notions"] = list(self.notions)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeasureSpec:
        """The spec a stored `to_dict` describes, checked like `build`."""
        return cls.build(data)

    def hash(self) -> str:
        """Stable hash of every knob (notions in the order asked; each is measured independently of it,
        so they are sorted)."""
        data = self.to_dict()
        data["notions"] = sorted(data["notions"])
        for notion in NOTIONS.values():
            if not notion.is_enabled(self):
                for knob in notion.knobs:
                    data.pop(knob, None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def notions_to_run(self) -> list[Notion]:
        """The registry entries this spec enables, in registry order."""
        return [n for n in NOTIONS.values() if n.is_enabled(self)]


MeasureSpec.RULES.update({
    "rho": _float_rule(False), "samples": _int_rule(1), "seed": _int_rule(0), "k": _int_rule(1),
    "lanczos_iters": _int_rule(1), "lanczos_tol": _float_rule(False), "trace_probes": _int_rule(1),
    "finite": _bool_rule, "ascent_iters": _int_rule(1), "ascent_restarts": _int_rule(1),
    "ascent_tol": _float_rule(True), "directions": _int_rule(1), "stochastic_examples": _int_rule(0),
    "exact": _bool_rule, "zero_tol": _float_rule(True), "adaptive_rho": _float_rule(False), "dtype": _dtype_rule,
    # two probes at least: the error bars are the probes' spread; two steps at least: Tr(H^2) needs degree 2
    "density_probes": _int_rule(2), "density_steps": _int_rule(2), "density_sigma": _float_rule(False),
})


def _close(key: str, choices) -> Optional[str]:
    import difflib
    near = difflib.get_close_matches(key, list(choices), n=1) or \
        difflib.get_close_matches(key.lower(), [c.lower() for c in choices], n=1)
    return near[0] if near else None


def _notions(value, name) -> tuple[str, ...]:
    notions = (value,) if isinstance(value, str) else value
    known = notion_names()
    # an empty list is allowed: only the notions switched by their own knobs (exact, per-example) run
    if not isinstance(notions, (list, tuple)):
        raise SpecError(f"{name('notions')}={short_repr(value)} must be a list of {', '.join(known)}", "notions")
    for notion in notions:
        if notion not in known:
            close = _close(str(notion), known)
            where = "" if name("notions") == "notions" else f"{name('notions')}: "
            raise SpecError(f"{where}unknown sharpness notion {short_repr(notion)}"
                            + (f" (did you mean {close}?)" if close else "") + f"; choose from {', '.join(known)}",
                            "notions")
    return tuple(dict.fromkeys(notions))
