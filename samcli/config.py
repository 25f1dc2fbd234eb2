"""Typed run configuration: dataclasses, YAML/dict in and out, validation with one-line errors.

Every knob a run has lives here, once. `TrainConfig.from_dict` refuses unknown keys, wrong
types and impossible values with a `ConfigError` naming the key, the value and what is allowed;
the CLI turns that into one line on stderr and exit code 2. What each optimizer.method reads and
requires is declared by its spec (samcli/spec/methods.py), which validation asks. Torch-free: nothing
here, nor below it, imports torch, so a config is validated without loading the engine.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import ConfigError, SamcliError, near_miss, short_repr, unknown_choice  # noqa: F401  (re-exports)
from .spec.losses import LOSS_NAMES, resolve_loss
from .spec.measure import MeasureSpec, _int_rule, default_notions, notion_names
from .spec.methods import get_method, validate_optimizer, with_method_defaults
from .spec.optimizer import OptimizerConfig  # noqa: F401  (re-exported: a section of TrainConfig)
from .spec.targets import named_by_target, resolve_section

INT_MIN, INT_MAX = -2 ** 63, 2 ** 63 - 1
DATASETS = ("mnist1d", "digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")
MODELS = ("mlp", "cnn", "resnet", "linear", "diag-linear")


@dataclass
class DataConfig:
    """`data:` of a train config: which data set, how much of it, and the synthetic task's shape."""
    name: str = "mnist1d"
    root: Optional[str] = None          # where torchvision data sets live on disk
    download: bool = False              # torchvision sets only; never implicit
    train_size: Optional[int] = None    # seeded subset of the training set
    test_size: Optional[int] = None
    test_with_unused: bool = False      # the examples train_size leaves out join the test set (then test_size)
    augment: bool = False               # random crop + flip for 32x32 image sets
    # synthetic teacher-student task
    task: Literal["classification", "regression"] = "classification"
    n_train: int = 1000
    n_test: int = 1000
    dim: int = 20
    classes: int = 10
    label_noise: float = 0.0
    # the user's own loader, `module:attr` or `file.py:attr` (name is then 'target'), called with args
    target: Optional[str] = None
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:    # built in Python with a target: named 'target', its path absolute
        self.name, self.target = named_by_target(self.name, self.target, 'mnist1d', "data")


@dataclass
class ModelConfig:
    """`model:` of a train config: the architecture and its sizes."""
    name: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [256, 256])   # mlp hidden widths
    activation: Literal["relu", "tanh", "gelu", "softplus"] = "relu"
    channels: Optional[list[int]] = None   # cnn conv channels; null: [16, 32] on images, [32, 32, 32] on 1-D signals
    depth: int = 18                                                  # resnet: 18 or 20
    norm: Literal["batch", "group", "none"] = "batch"                # cnn / resnet normalization
    # the user's own factory, `module:attr` or `file.py:attr` (name is then 'target'), called with args
    target: Optional[str] = None
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:    # built in Python with a target: named 'target', its path absolute
        self.name, self.target = named_by_target(self.name, self.target, 'mlp', "model")


# the sharpness notions, from their registry (samcli/spec/measure.py): the paper's three by default
DEFAULT_NOTIONS = default_notions()
SHARPNESS_NOTIONS = notion_names()


@dataclass(frozen=True)
class MeasureConfig(MeasureSpec):
    """`measure:` of a train config: a MeasureSpec plus how often. During training only the cheap
    parts run unless asked (the rho -> 0 limits, alignment and R^Asc: no finite-rho ascent, no
    per-example notions), with a shorter Lanczos, so a measurement costs a few gradients."""
    every: int = 0                      # measure sharpness every K steps during training (0: never)
    lanczos_iters: int = 30
    finite: bool = False
    stochastic_examples: int = 0
    RULES = {**MeasureSpec.RULES, "every": _int_rule(0)}

    def spec(self) -> MeasureSpec:
        """The measurement itself, without the schedule."""
        data = self.to_dict()
        del data["every"]
        return MeasureSpec.build(data)


@dataclass
class StopConfig:
    """Train to a target: checked at every evaluation (full training set); `steps` stays the cap."""
    train_loss: Optional[float] = None       # stop once the training loss is <= this
    train_accuracy: Optional[float] = None   # stop once the training accuracy is >= this

    @property
    def active(self) -> bool:
        """Whether any target is set."""
        return self.train_loss is not None or self.train_accuracy is not None

    def reached(self, record: dict) -> bool:
        """Every target that is set holds in this evaluation record."""
        if not self.active:
            return False
        loss_ok = self.train_loss is None or record.get("train_loss", math.inf) <= self.train_loss
        acc_ok = self.train_accuracy is None or record.get("train_accuracy", -math.inf) >= self.train_accuracy
        return loss_ok and acc_ok


@dataclass
class TrainConfig:
    """One run, fully resolved: seed, device, steps and its sections (data, model, optimizer, measure, stop)."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    loss: Literal["cross-entropy", "mse"] = "cross-entropy"
    steps: int = 2000
    eval_every: int = 100
    chunk_size: int = 4096              # examples per chunk for full-data passes (bounds memory)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    stop: StopConfig = field(default_factory=StopConfig)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict | None) -> TrainConfig:
        """A validated config from a plain mapping (None: every default); a ConfigError on any bad key or value."""
        if isinstance(raw, dict) and isinstance(raw.get("loss"), str) and raw["loss"] not in LOSS_NAMES:
            raw = {**raw, "loss": resolve_loss(raw["loss"])}     # cross_entropy, CrossEntropyLoss ...
        if isinstance(raw, dict) and "optimizer" in raw:
            raw = {**raw, "optimizer": with_method_defaults(raw["optimizer"])}
        if isinstance(raw, dict):       # a target: its path made absolute, name 'target' (spec/targets.py)
            raw = {**raw, **{k: resolve_section(raw[k], k) for k in ("model", "data") if k in raw}}
        cfg = build_dataclass(cls, raw or {}, prefix="")
        validate(cfg)
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """The validated config of a YAML file, with `--set key.sub=value` overrides applied first."""
        raw = load_yaml(path)
        for item in overrides or []:
            apply_override(raw, item)
        return cls.from_dict(raw)

    def to_dict(self) -> dict:
        """The config as a plain dict (lists, not tuples), fit for YAML and JSON."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **dotted: Any) -> TrainConfig:
        """Copy with dotted-key changes, e.g. cfg.replace(**{"optimizer.rho": 0.1})."""
        raw = self.to_dict()
        for key, value in dotted.items():
            set_dotted(raw, key, value)
        return TrainConfig.from_dict(raw)


def _plain(value: Any) -> Any:
    """Tuples as lists, so a config dict is plain YAML and JSON (the measure spec keeps notions in a tuple)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- YAML and overrides ---------------------------------------------------------------------
class YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-5 and 5e-4 (no dot) as strings; read them as floats, as YAML 1.2 does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(path: str | Path) -> dict:
    """The mapping a YAML config file holds; a ConfigError if it is missing, unreadable, not YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror}); check its permissions") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    except ValueError as err:      # an integer of more than 4300 digits: Python refuses to convert it
        raise ConfigError(f"config file {path} holds a value YAML cannot read ({str(err)[:80]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(raw).__name__}")
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Apply one `--set key.sub=value` (value parsed as YAML, so 0.1, true, [1, 2] all work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} needs the form key.sub=value, e.g. optimizer.rho=0.1")
    key, text = item.split("=", 1)
    try:
        value = yaml.load(text, Loader=YamlLoader)
    except (yaml.YAMLError, ValueError):      # ValueError: an integer beyond Python's 4300-digit limit
        value = text
    set_dotted(raw, key.strip(), value)


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set raw[a][b]... = value for the dotted key "a.b...", creating the sections on the way."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
    node[leaf] = value


# ---- typed construction from plain data -----------------------------------------------------
def build_dataclass(cls, raw: Any, prefix: str):
    """An instance of the dataclass `cls` from a mapping, each value coerced to its field's type."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {short_repr(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; allowed keys here: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(hint, value, key: str):
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, MeasureSpec):
        if isinstance(value, hint):
            return value
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        # the one measurement validator, spelling knobs as this config does
        return hint.build(value or {}, name=lambda knob: f"{key}.{knob}", kind="config key")
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value if value is not None else {}, key + ".")
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        if int in options and isinstance(value, int) and not isinstance(value, bool):
            _in_int_range(value, key)     # say "out of range", not "expected int or null"
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}={short_repr(value)} is not allowed; expected {_describe(hint)}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            near = near_miss(value, map(str, allowed))
            did_you_mean = f" (did you mean {near}?)" if near else ""
            raise ConfigError(f"{key}={short_repr(value)} is not allowed{did_you_mean}; "
                              f"choose one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={short_repr(value)} must be a list of {inner.__name__}")
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={short_repr(value)} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={short_repr(value)} must be an integer")
        return _in_int_range(value, key)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={short_repr(value)} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={short_repr(value)} must be a string")
        return value
    return value


def _in_int_range(value: int, key: str) -> int:
    if not INT_MIN <= value <= INT_MAX:     # torch keeps every count, size and seed in 64 bits
        raise ConfigError(f"{key}={value} is out of range; an integer setting lies in [-2**63, 2**63 - 1]")
    return value


def _describe(hint) -> str:
    parts = []
    for option in typing.get_args(hint):
        if option is type(None):
            parts.append("null")
        elif typing.get_origin(option) is Literal:
            parts.extend(repr(a) for a in typing.get_args(option))
        else:
            parts.append(getattr(option, "__name__", str(option)))
    return " or ".join(parts)


# ---- semantic validation --------------------------------------------------------------------
def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _non_finite(node, prefix: str = "") -> Optional[str]:
    """The dotted key of the first float setting that is NaN or infinite, if any."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            found = _non_finite(value, key + ".")
            if found:
                return found
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return key
    return None


def validate(cfg: TrainConfig) -> None:
    """Check a typed config's values against their ranges and each other; a ConfigError names the first that fails."""
    o, d, m = cfg.optimizer, cfg.data, cfg.model
    bad_number = _non_finite(cfg)
    if bad_number:
        raise ConfigError(f"{bad_number} must be a finite number, got {_get_dotted(cfg, bad_number)!r}")
    get_method(o.method)
    if d.name not in DATASETS and d.target is None:
        raise unknown_choice("data.name", d.name, DATASETS)
    if m.name not in MODELS and m.target is None:
        raise unknown_choice("model.name", m.name, MODELS)
    # measure.seed is the measurement spec's, checked by its validator
    _require(0 <= cfg.seed <= INT_MAX, f"seed={cfg.seed} must be in [0, 2**63 - 1]")
    _require(o.lr > 0, f"optimizer.lr={o.lr} must be > 0")
    _require(0 <= o.momentum < 1, f"optimizer.momentum={o.momentum} must be in [0, 1)")
    _require(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be >= 0")
    _require(not o.nesterov or o.momentum > 0, "optimizer.nesterov=true needs optimizer.momentum > 0")
    _require(cfg.steps >= 1, f"steps={cfg.steps} must be >= 1")
    _require(cfg.eval_every >= 1, f"eval_every={cfg.eval_every} must be >= 1")
    _require(cfg.chunk_size >= 1, f"chunk_size={cfg.chunk_size} must be >= 1")
    _require(o.gamma > 0, f"optimizer.gamma={o.gamma} must be > 0 (the lr multiplier at each milestone)")
    _require(d.n_train >= 1 and d.n_test >= 0, f"data.n_train={d.n_train} must be >= 1 and data.n_test={d.n_test} >= 0")
    _require(d.dim >= 1, f"data.dim={d.dim} must be >= 1")
    _require(d.classes >= 2, f"data.classes={d.classes} must be >= 2")
    _require(all(c >= 1 for c in m.channels or []), f"model.channels={m.channels} must be positive integers")
    st = cfg.stop
    _require(st.train_loss is None or st.train_loss > 0,
             f"stop.train_loss={st.train_loss} must be > 0 (a loss target that can be reached), or null")
    _require(st.train_accuracy is None or 0 < st.train_accuracy <= 1,
             f"stop.train_accuracy={st.train_accuracy} must be in (0, 1], or null")
    if isinstance(o.batch_size, int):
        _require(o.batch_size >= 1, f"optimizer.batch_size={o.batch_size} must be >= 1 or 'full'")
    validate_optimizer(o)    # the method's parameters (rho, grad_eps, m) and rules (samcli.spec.methods)
    for name in ("train_size", "test_size"):
        value = getattr(d, name)
        _require(value is None or value >= 1, f"data.{name}={value} must be >= 1 or null")
    _require(not d.test_with_unused or d.train_size is not None, "data.test_with_unused=true adds the examples "
             "data.train_size leaves out to the test set; set data.train_size, or drop test_with_unused")
    _require(all(w >= 1 for w in m.widths), f"model.widths={m.widths} must be positive integers")
    _require(m.depth in (18, 20), f"model.depth={m.depth} is not available; resnet depth is 18 or 20")
    _require(0 <= d.label_noise <= 1, f"data.label_noise={d.label_noise} must be in [0, 1]")
    _require(sorted(o.milestones) == o.milestones and all(0 < x < 1 for x in o.milestones),
             f"optimizer.milestones={o.milestones} must be increasing fractions of steps in (0, 1)")


def _get_dotted(node, key: str):
    for part in key.split("."):
        node = getattr(node, part)
    return node


def config_hash(cfg: TrainConfig) -> str:
    """Stable hash of every field of a resolved config (keys sorted, floats by repr)."""
    import hashlib
    import json
    text = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
