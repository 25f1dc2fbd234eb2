"""The methods' torch-free half: per method its name, help line, the optimizer keys it reads, its
BatchNorm policy and its validation rules; per key its default and range.

Config validation, grids (which axes apply), the CLI's help and the paper read this table without
loading torch. What each method computes, its direction, lives in samcli/methods.py under the same
name: a method is one `MethodSpec` in `METHODS` here plus one direction in `methods.DIRECTIONS`
(`samcli.methods.register(spec, direction)` adds both at once, e.g. from a user's script or a test).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

from ..errors import ConfigError, unknown_choice


class OptimizerSettings(Protocol):
    """What validation reads of an optimizer section (config.OptimizerConfig is one): the method, the
    batch size and one attribute per `PARAMETERS` entry, read by name."""
    @property
    def method(self) -> str:
        """The method's name, a key of `METHODS`."""

    @property
    def batch_size(self) -> Union[int, str]:
        """The batch size: a number of examples, or "full"."""


# (settings, method name, training-set size or None) -> the one-line refusal, or None when it holds
Rule = Callable[[Any, str, Optional[int]], Optional[str]]


@dataclass(frozen=True)
class Parameter:
    """An optimizer.* key that methods read beyond the base optimizer's. With a default it is always
    set and always range-checked (grids keep it for every method); with default None it is optional:
    required by the methods that read it, refused with the others."""
    name: str
    default: Any
    help: str
    minimum: Union[int, float]
    strict: bool = False               # the minimum itself is refused
    hint: str = ""                     # how to fix a value below the range, in parentheses
    required: str = ""                 # default None: how to set it, for a method that reads it
    rule: Optional[Rule] = None        # checks beyond the range, for the methods that read it
    maximum: Optional[Union[int, float]] = None     # the range's top, excluded (a fraction below 1)
    maximum_included: bool = False

    def range_refusal(self, value: Any) -> Optional[str]:
        """The one-line refusal of a value outside this parameter's range, or None when it is in range."""
        hint = f" ({self.hint})" if self.hint else ""
        if not (value > self.minimum if self.strict else value >= self.minimum):
            return f"optimizer.{self.name}={value} must be {'>' if self.strict else '>='} {self.minimum}{hint}"
        top = self.maximum
        if top is not None and not (value <= top if self.maximum_included else value < top):
            return f"optimizer.{self.name}={value} must be {'<=' if self.maximum_included else '<'} {top}{hint}"
        return None


def _groups_divide_the_batch(o: Any, name: str, train_size: Optional[int]) -> Optional[str]:
    m, bs = o.m, o.batch_size
    if isinstance(bs, int) and bs % m:
        return f"optimizer.m={m} does not divide optimizer.batch_size={bs}; pick m that divides it"
    if bs == "full" and train_size is not None and train_size % m:
        return (f"optimizer.m={m} does not divide the {train_size} training examples (full batch); "
                "pick m that divides it")
    return None


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("rho", 0.05, "SAM perturbation radius (0: the method's null, plain SGD)", 0,
              rule=lambda o, name, n: _null_refusal(o, name, "rho")),
    Parameter("grad_eps", 1e-12, "SAM: the ascent direction is g / (||g|| + grad_eps)", 0),
    Parameter("m", None, "msam group size; must divide batch_size", 1,
              required="set it to a divisor of batch_size", rule=_groups_divide_the_batch),
    # the SAM family's own parameters (docs/methods.md): None here, each method's default in its spec
    Parameter("eta", None, "asam: T = |w| + eta on weights", 0),
    Parameter("asam_biases", None, "asam: scale every tensor, biases too (davda54/sam), not only weights", False),
    Parameter("alpha", None, "gsam: weight of the orthogonal part; looksam: of the reused part; "
              "rwp: weight of the perturbed gradient", 0),
    Parameter("k", None, "looksam: a full SAM step every k steps", 1),
    Parameter("sigma", None, "fsam: how much of the gradient average the ascent removes", 0),
    Parameter("lmbda", None, "fsam: decay of the gradient average", 0, maximum=1),
    Parameter("wsam_gamma", None, "wsam: weight of the sharpness term", 0, maximum=1),
    Parameter("wsam_decouple", None, "wsam: apply the sharpness term after the base optimizer's step", False),
    Parameter("esam_beta", None, "esam: fraction of parameters perturbed", 0, strict=True, maximum=1,
              maximum_included=True),
    Parameter("esam_gamma", None, "esam: fraction of examples in the second pass", 0, strict=True, maximum=1,
              maximum_included=True),
    Parameter("rwp_sigma", None, "rwp: noise scale per filter, relative to the filter's norm", 0),
)}


@dataclass(frozen=True)
class MethodSpec:
    """A method's torch-free half: name, CLI help, the parameters it reads, BatchNorm policy and own rules."""
    name: str
    help: str                                  # one line, for the CLI
    parameters: frozenset[str] = frozenset()   # PARAMETERS keys the update reads
    # BatchNorm: True means the first (unperturbed) pass updates the running statistics and every other
    # pass runs on throwaway copies; False refuses models with BatchNorm statistics, saying why
    batchnorm: bool = True
    batchnorm_reason: str = ""
    rules: tuple[Rule, ...] = ()               # the method's own checks beyond its parameters'
    # the parameter at whose 0 the method is plain SGD: its steps are then sgd's, bit for bit (rho = 0
    # is a value of the rho axis of a grid, not a special case); "" where no setting makes it SGD
    null: str = "rho"
    defaults: tuple[tuple[str, Any], ...] = ()  # this method's own defaults of parameters, e.g. (("rho", 0.5),)
    # gradient evaluations per step, in full-batch gradients (a Hessian-vector product counts 2): the cost
    # column of a study; None: 2 (a clean and a perturbed gradient)
    gradients: Optional[Callable[[Any], float]] = None


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("sgd", "gradient descent on the batch loss (batch_size: full gives GD)", null="",
               gradients=lambda o: 1.0),
    MethodSpec("sam", "gradient at the ascent point x + rho g/||g|| of the same batch",
               frozenset({"rho", "grad_eps"})),
    MethodSpec("usam", "gradient at the unnormalized ascent point x + rho g", frozenset({"rho"})),
    MethodSpec("msam", "mean over groups of m examples of each group's SAM gradient (m-sharpness)",
               frozenset({"rho", "m", "grad_eps"}), batchnorm=False, batchnorm_reason="its groups run under vmap"),
    MethodSpec("ascent-gd", "exact gradient of the ascent-direction loss L(x + rho g/||g||), Jacobian kept",
               frozenset({"rho", "grad_eps"}), gradients=lambda o: 4.0),
    # -- the SAM family (docs/methods.md; samcli/family.py), each with its paper's defaults
    MethodSpec("asam", "adaptive SAM: e = rho T^2 g/||T g||, T = |w| + eta on weights (Kwon et al. 2021)",
               frozenset({"rho", "eta", "asam_biases", "grad_eps"}),
               defaults=(("rho", 0.5), ("eta", 0.01), ("asam_biases", False))),
    MethodSpec("gsam", "surrogate-gap SAM: g_p - alpha (part of g orthogonal to g_p) (Zhuang et al. 2022)",
               frozenset({"rho", "alpha", "grad_eps"}), defaults=(("alpha", 0.4),)),
    MethodSpec("looksam", "SAM every k steps; in between g plus the reused orthogonal part (Liu et al. 2022)",
               frozenset({"rho", "k", "alpha", "grad_eps"}), defaults=(("k", 5), ("alpha", 0.7)),
               gradients=lambda o: 1 + 1 / o.k),
    MethodSpec("fsam", "FriendlySAM: ascent along g - sigma (average of earlier gradients) (Li et al. 2024)",
               frozenset({"rho", "sigma", "lmbda", "grad_eps"}), defaults=(("sigma", 1.0), ("lmbda", 0.9))),
    MethodSpec("wsam", "weighted SAM: g + gamma/(1 - gamma) (g_p - g), decoupled by default (Yue et al. 2023)",
               frozenset({"rho", "wsam_gamma", "wsam_decouple", "grad_eps"}),
               defaults=(("wsam_gamma", 0.9), ("wsam_decouple", True))),
    MethodSpec("momentum-sam", "gradient at x - rho v/||v||, v the momentum buffer: one gradient (Becker et al. 2024)",
               frozenset({"rho", "grad_eps"}), defaults=(("rho", 0.3),), batchnorm=False, gradients=lambda o: 1.0,
               batchnorm_reason="its only pass is at the perturbed point",
               rules=(lambda o, name, n: None if o.momentum > 0 else
                      f"optimizer.method={name} perturbs along the momentum buffer; set optimizer.momentum > 0",)),
    MethodSpec("esam", "efficient SAM: a random fraction of tensors perturbed, the second pass on the examples "
               "whose loss rose most (Du et al. 2022)",
               frozenset({"rho", "esam_beta", "esam_gamma", "grad_eps"}),
               defaults=(("esam_beta", 0.6), ("esam_gamma", 0.5)),
               gradients=lambda o: 1 + o.esam_gamma),        # its selection forward is not counted
    MethodSpec("rwp", "random weight perturbation: (1 - alpha) g + alpha grad at a per-filter Gaussian point "
               "(Li et al. 2024)", frozenset({"rwp_sigma", "alpha"}), null="rwp_sigma",
               defaults=(("rwp_sigma", 0.01), ("alpha", 0.5)),
               rules=(lambda o, name, n: None if o.alpha <= 1 else f"optimizer.alpha={o.alpha} must be <= 1 for "
                      f"method {name} (the weight of the perturbed gradient)",)),
)}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method's spec (samcli.methods.register adds its direction with it)."""
    if spec.name in METHODS:
        raise ConfigError(f"method {spec.name!r} is registered already; pick another name or unregister it first")
    unknown = sorted((spec.parameters | {k for k, _ in spec.defaults}) - PARAMETERS.keys())
    if unknown:
        raise ConfigError(f"method {spec.name!r} reads optimizer.{unknown[0]}, which is no parameter; "
                          f"use {', '.join(PARAMETERS)} or add it to samcli.spec.methods.PARAMETERS")
    METHODS[spec.name] = spec
    return spec


def _null_refusal(o: Any, name: str, key: str) -> Optional[str]:
    if getattr(o, key) == 0 and METHODS[name].null != key:
        return (f"optimizer.{key}={getattr(o, key)} does not make method {name} plain SGD; "
                f"use method sgd, or a {key} > 0")
    return None


def null_method(spec: MethodSpec, o: Any) -> Optional[str]:
    """"sgd" when the settings put the method at its null (e.g. SAM at rho = 0), else None."""
    return "sgd" if spec.null and spec.null in spec.parameters and getattr(o, spec.null) == 0 else None


def gradients_per_step(o: Any) -> float:
    """Gradient evaluations per step of the settings' method, in full-batch gradients (1 at its null)."""
    spec = get_method(o.method)
    if null_method(spec, o):
        return 1.0
    return float(spec.gradients(o)) if spec.gradients is not None else 2.0


def with_method_defaults(optimizer: Any) -> Any:
    """A raw `optimizer:` mapping with the method's own defaults filled in where the user set nothing
    (ASAM's rho is 0.5 where SAM's is 0.05); anything else comes back as it is."""
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("method"), str) \
            or optimizer["method"] not in METHODS:
        return optimizer
    # unset or None (a config written out by to_dict, then given another method, carries None)
    missing = {k: v for k, v in METHODS[optimizer["method"]].defaults if optimizer.get(k) is None}
    return {**optimizer, **missing} if missing else optimizer


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registry order."""
    return tuple(METHODS)


def get_method(name: str) -> MethodSpec:
    """The spec of the named method; a ConfigError naming the choices when there is none."""
    if name not in METHODS:
        raise unknown_choice("optimizer.method", name, METHODS)
    return METHODS[name]


def applicable_parameters(name: str) -> set[str]:
    """The optimizer.* keys the method reads among those some method declares (grid axes)."""
    return set(get_method(name).parameters)


def unused_parameters(name: str) -> set[str]:
    """Keys other methods declare that this one ignores: a grid drops these axes for it."""
    return {p for spec in METHODS.values() for p in spec.parameters} - get_method(name).parameters


def validate_optimizer(o: OptimizerSettings, train_size: Optional[int] = None,
                       has_batchnorm: Optional[bool] = None) -> MethodSpec:
    """The method's rules for an optimizer section: its parameters' ranges and rules, its own rules;
    the training-set size and whether the model has BatchNorm statistics, where known, add the checks
    that need them."""
    spec = get_method(o.method)
    bs = o.batch_size
    if train_size is not None and isinstance(bs, int) and bs > train_size:
        raise ConfigError(f"optimizer.batch_size={bs} exceeds the {train_size} training examples; "
                          "lower it or use 'full'")
    for parameter in PARAMETERS.values():
        _check_parameter(parameter, o, spec.name in _readers(parameter.name), spec.name, train_size)
    for rule in spec.rules:
        _refuse(rule(o, spec.name, train_size))
    if has_batchnorm and not spec.batchnorm:
        raise ConfigError(batchnorm_refusal(spec))
    return spec


def _readers(key: str) -> list[str]:
    return sorted(name for name, spec in METHODS.items() if key in spec.parameters)


def _check_parameter(p: Parameter, o: Any, read: bool, method: str, train_size: Optional[int]) -> None:
    value = getattr(o, p.name)
    if value is None:
        _refuse(f"optimizer.{p.name} is required for method {method}; {p.required or 'set it'}" if read else None)
    elif p.default is None and not read:
        users = _readers(p.name)
        _refuse(f"optimizer.{p.name}={value} only applies to method {' or '.join(users)}; "
                f"remove it or set method: {users[0]}" if users else
                f"optimizer.{p.name}={value} is read by no registered method; remove it")
    else:
        _refuse(p.range_refusal(value))
        if read and p.rule is not None:
            _refuse(p.rule(o, method, train_size))


def _refuse(message: Optional[str]) -> None:
    if message is not None:
        raise ConfigError(message)


def batchnorm_refusal(spec: MethodSpec) -> str:
    """Why a method that cannot update BatchNorm statistics refuses a model with them, and what to use instead."""
    others = ", ".join(name for name, other in METHODS.items() if other.batchnorm)
    because = f" ({spec.batchnorm_reason})" if spec.batchnorm_reason else ""
    return (f"optimizer.method={spec.name} cannot update BatchNorm statistics{because}; "
            f"use model.norm: group or none, or one of {others}")
