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

from .errors import ConfigError, SamcliError, unknown_choice  # noqa: F401  (SamcliError: re-exported)
from .spec.losses import LOSS_NAMES, resolve_loss
from .spec.methods import PARAMETERS, get_method, validate_optimizer

DATASETS = ("mnist1d", "digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")
MODELS = ("mlp", "cnn", "resnet", "linear", "diag-linear")


@dataclass
class DataConfig:
    name: str = "mnist1d"
    root: Optional[str] = None          # where torchvision data sets live on disk
    download: bool = False              # torchvision sets only; never implicit
    train_size: Optional[int] = None    # seeded subset of the training set
    test_size: Optional[int] = None
    augment: bool = False               # random crop + flip for 32x32 image sets
    # synthetic teacher-student task
    task: Literal["classification", "regression"] = "classification"
    n_train: int = 1000
    n_test: int = 1000
    dim: int = 20
    classes: int = 10
    label_noise: float = 0.0


@dataclass
class ModelConfig:
    name: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [256, 256])   # mlp hidden widths
    activation: Literal["relu", "tanh", "gelu", "softplus"] = "relu"
    channels: Optional[list[int]] = None   # cnn conv channels; null: [16, 32] on images, [32, 32, 32] on 1-D signals
    depth: int = 18                                                  # resnet: 18 or 20
    norm: Literal["batch", "group", "none"] = "batch"                # cnn / resnet normalization


@dataclass
class OptimizerConfig:
    method: str = "sgd"                 # a name in samcli.spec.methods.METHODS
    lr: float = 0.1
    batch_size: Union[int, Literal["full"]] = 128
    # the method parameters: their defaults, ranges and rules are in samcli.spec.methods.PARAMETERS
    rho: float = PARAMETERS["rho"].default           # SAM perturbation radius
    m: Optional[int] = PARAMETERS["m"].default       # msam group size; must divide batch_size
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "step"] = "constant"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of steps
    gamma: float = 0.1                  # step: lr multiplier at each milestone
    grad_eps: float = PARAMETERS["grad_eps"].default   # SAM: ascent direction is g / (||g|| + grad_eps)
    # epochs: each epoch visits every example once (reshuffled); iid: every batch a uniform random set
    # of b examples, independent across steps (the paper's 1-SAM, Eq. 17, samples k_t i.i.d.)
    sampling: Literal["epochs", "iid"] = "epochs"


# the sharpness notions (samcli/sharpness): the paper's three by default, adaptive on request
DEFAULT_NOTIONS = ("worst", "ascent", "average")
SHARPNESS_NOTIONS = DEFAULT_NOTIONS + ("adaptive",)


@dataclass
class MeasureConfig:
    every: int = 0                      # measure sharpness every K steps during training (0: never)
    rho: float = 0.05
    samples: Optional[int] = None       # examples to measure on (None: the whole training set)
    notions: list[str] = field(default_factory=lambda: list(DEFAULT_NOTIONS))
    lanczos_iters: int = 30
    trace_probes: int = 4               # Rademacher probes for the trace (see sharpness.notions.Settings)
    seed: int = 0


@dataclass
class StopConfig:
    """Train to a target: checked at every evaluation (full training set); `steps` stays the cap."""
    train_loss: Optional[float] = None       # stop once the training loss is <= this
    train_accuracy: Optional[float] = None   # stop once the training accuracy is >= this

    @property
    def active(self) -> bool:
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
    def from_dict(cls, raw: dict | None) -> "TrainConfig":
        if isinstance(raw, dict) and isinstance(raw.get("loss"), str) and raw["loss"] not in LOSS_NAMES:
            raw = {**raw, "loss": resolve_loss(raw["loss"])}     # cross_entropy, CrossEntropyLoss ...
        cfg = build_dataclass(cls, raw or {}, prefix="")
        validate(cfg)
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "TrainConfig":
        raw = load_yaml(path)
        for item in overrides or []:
            apply_override(raw, item)
        return cls.from_dict(raw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> "TrainConfig":
        """Copy with dotted-key changes, e.g. cfg.replace(**{"optimizer.rho": 0.1})."""
        raw = self.to_dict()
        for key, value in dotted.items():
            set_dotted(raw, key, value)
        return TrainConfig.from_dict(raw)


# ---- YAML and overrides ---------------------------------------------------------------------

class YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-5 and 5e-4 (no dot) as strings; read them as floats, as YAML 1.2 does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(path: str | Path) -> dict:
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
    except yaml.YAMLError:
        value = text
    set_dotted(raw, key.strip(), value)


def set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
    node[leaf] = value


# ---- typed construction from plain data -----------------------------------------------------

def build_dataclass(cls, raw: Any, prefix: str):
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; allowed keys here: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(hint, value, key: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value if value is not None else {}, key + ".")
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}={value!r} is not allowed; expected {_describe(hint)}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list of {inner.__name__}")
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
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
    o, d, m, s = cfg.optimizer, cfg.data, cfg.model, cfg.measure
    bad_number = _non_finite(cfg)
    if bad_number:
        raise ConfigError(f"{bad_number} must be a finite number, got {_get_dotted(cfg, bad_number)!r}")
    get_method(o.method)
    if d.name not in DATASETS:
        raise unknown_choice("data.name", d.name, DATASETS)
    if m.name not in MODELS:
        raise unknown_choice("model.name", m.name, MODELS)
    _require(o.lr > 0, f"optimizer.lr={o.lr} must be > 0")
    _require(s.rho > 0, f"measure.rho={s.rho} must be > 0")
    _require(0 <= o.momentum < 1, f"optimizer.momentum={o.momentum} must be in [0, 1)")
    _require(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be >= 0")
    _require(not o.nesterov or o.momentum > 0, "optimizer.nesterov=true needs optimizer.momentum > 0")
    _require(cfg.steps >= 1, f"steps={cfg.steps} must be >= 1")
    _require(cfg.eval_every >= 1, f"eval_every={cfg.eval_every} must be >= 1")
    _require(cfg.chunk_size >= 1, f"chunk_size={cfg.chunk_size} must be >= 1")
    _require(s.every >= 0, f"measure.every={s.every} must be >= 0 (0 turns it off)")
    _require(s.samples is None or s.samples >= 1, f"measure.samples={s.samples} must be >= 1 or null (all)")
    _require(s.lanczos_iters >= 1, f"measure.lanczos_iters={s.lanczos_iters} must be >= 1")
    _require(s.trace_probes >= 1, f"measure.trace_probes={s.trace_probes} must be >= 1")
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
    bad = [n for n in s.notions if n not in SHARPNESS_NOTIONS]
    if bad:
        raise unknown_choice("measure.notions", bad[0], SHARPNESS_NOTIONS)
    if isinstance(o.batch_size, int):
        _require(o.batch_size >= 1, f"optimizer.batch_size={o.batch_size} must be >= 1 or 'full'")
    validate_optimizer(o)    # the method's parameters (rho, grad_eps, m) and rules (samcli.spec.methods)
    for name in ("train_size", "test_size"):
        value = getattr(d, name)
        _require(value is None or value >= 1, f"data.{name}={value} must be >= 1 or null")
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
