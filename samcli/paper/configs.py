"""Study configs: dataclass defaults <- the packaged YAML (samcli/paper/configs/NAME.yaml, or a user's
--config path) <- its `quick:` section (with --quick) <- --set overrides.

The YAML ships inside the package, so a non-editable install reads the same file; a missing or
unreadable file is a ConfigError, never a silent fall-back to the defaults.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

from ..config import INT_MAX, ConfigError, apply_override, build_dataclass, load_yaml


def packaged_config(name: str) -> Path:
    """samcli/paper/configs/NAME.yaml as installed; ConfigError when the package holds no such config."""
    path = Path(str(files("samcli.paper") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no packaged study config {name!r} in {path.parent} "
                          f"(it holds {', '.join(shipped) or 'none'}); reinstall samcli or pass --config PATH")
    return path


def load_study_config(cls, name: str, path: Optional[Path] = None, quick: bool = False,
                      overrides: Sequence[str] = ()):
    """A study's config dataclass from its YAML (packaged or `path`), quick part and overrides, validated."""
    path = Path(path) if path is not None else packaged_config(name)
    raw = load_yaml(path)
    quick_part = raw.pop("quick", None) or {}
    if not isinstance(quick_part, dict):
        raise ConfigError(f"the quick: section of {path} must be a mapping of keys")
    if quick:
        raw = _merge(raw, quick_part)
    for item in overrides:
        apply_override(raw, item)
    cfg = build_dataclass(cls, raw, prefix="")
    check_rules(cfg, name)
    if hasattr(cfg, "validate"):
        cfg.validate()       # what involves several keys (lengths, orderings, pairs)
    return cfg


# ---- per-key rules: one table per config dataclass (RULES), checked by one function ---------------

@dataclass(frozen=True)
class Rule:
    """What one key's values (each entry, for a list) may be: a number in [lo, hi] (ends open where
    said; every number finite), or one of `choices`."""
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()

    def allows(self, value: Any) -> bool:
        """Whether one value (one entry, for a list) satisfies the rule."""
        if isinstance(value, str):
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return self.hi is None or not (value > self.hi or (self.hi_open and value == self.hi))

    def text(self) -> str:
        """The rule in words, for an error message (e.g. "a number in (0, 1]")."""
        parts = [f"one of {', '.join(map(repr, self.choices))}"] if self.choices else []
        if self.lo is not None and self.hi is not None:
            opening, closing = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            parts.append(f"a number in {opening}{self.lo:g}, {self.hi:g}{closing}")
        elif self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        elif not self.choices:
            parts.append("a finite number")
        return " or ".join(parts)


FINITE = Rule()                      # a coordinate: any finite number
POSITIVE = Rule(lo=0, lo_open=True)  # radii, learning rates, tolerances, flow times
NONNEGATIVE = Rule(lo=0)
COUNT = Rule(lo=1)                   # steps, points, iterations, threads (integers by their type)
SEED = Rule(lo=0, hi=INT_MAX)
UNIT = Rule(lo=0, hi=1, lo_open=True, hi_open=True)
FRACTION = Rule(lo=0, hi=1, lo_open=True)


def at_least(n: float) -> Rule:
    """A rule for numbers >= n."""
    return Rule(lo=n)


def one_of(*choices: str) -> Rule:
    """A rule for one of the given strings."""
    return Rule(choices=tuple(choices))


def rules_of(cls: type) -> dict[str, Rule]:
    """The RULES of a config dataclass and of the classes it extends (a subclass's rule wins)."""
    merged: dict[str, Rule] = {}
    for base in reversed(cls.__mro__):
        merged.update(vars(base).get("RULES", {}))
    return merged


def unruled_keys(cls: type, prefix: str = "") -> list[str]:
    """The keys of a config dataclass (nested ones dotted) that have no rule: none may (tests)."""
    rules, missing = rules_of(cls), []
    for f in dataclasses.fields(cls):
        nested = _nested_class(cls, f.name)
        if nested is not None:
            missing += unruled_keys(nested, f"{prefix}{f.name}.")
        elif f.name not in rules:
            missing.append(prefix + f.name)
    return missing


def _nested_class(cls: type, name: str) -> Optional[type]:
    """The config dataclass a field holds (directly or as list entries), if any."""
    import typing
    hint = typing.get_type_hints(cls)[name]
    while typing.get_origin(hint) is list:
        (hint,) = typing.get_args(hint)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def check_rules(cfg: Any, study: str, prefix: str = "") -> None:
    """Every key of a study config against its rule, nested configs and list entries included: the first
    value that breaks one is a ConfigError naming the key, the value and what is allowed."""
    rules = rules_of(type(cfg))
    for f in dataclasses.fields(cfg):
        for key, value in _leaves(getattr(cfg, f.name), prefix + f.name):
            if dataclasses.is_dataclass(value):
                check_rules(value, study, key + ".")
            elif value is not None and f.name in rules and not rules[f.name].allows(value):
                what = rules[f.name].text()
                if isinstance(value, float) and not math.isfinite(value):
                    what = f"a finite number, {what}"
                raise ConfigError(f"{key}={value!r} is not allowed in the {study} study config; it must be "
                                  f"{what} (fix it in the YAML or with --set)")


def _leaves(value: Any, key: str):
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{key}[{i}]")
    else:
        yield key, value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def require(ok: bool, message: str) -> None:
    """A study config's validate(): one ConfigError line when a condition fails."""
    if not ok:
        raise ConfigError(message)
