"""The syntax of a target, `module:attribute` or `path/to/file.py:attribute`, and of its `args`.

Torch-free and import-free: config validation checks a target's spelling and makes a file path absolute
(so a worker in another working directory finds the same file) without running any of the user's code;
samcli/targets.py imports and calls it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, short_repr

MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
EXAMPLE = "pkg.module:factory or path/to/file.py:factory"
DEFAULT_NAMES = {"model": "mlp", "data": "mnist1d"}      # config.py's defaults, which a target replaces


def split_target(target: str) -> tuple[str, str]:
    """(module or file path, attribute) of a target; the attribute follows the last ':'."""
    where, _, attribute = target.rpartition(":")
    return where, attribute


def is_file_target(target: str) -> bool:
    """Whether the target names a Python file (path/to/file.py:attr) rather than an importable module."""
    return split_target(target)[0].endswith(".py")


def normalize_target(value: Any, key: str) -> str:
    """The target `value` checked for its form, a relative file path made absolute against the current
    working directory; a ConfigError naming `key` otherwise."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}={short_repr(value)} must be a string of the form {EXAMPLE}")
    where, attribute = split_target(value.strip())
    if not ATTRIBUTE.match(attribute):
        raise ConfigError(f"{key}={short_repr(value)}: {attribute!r} after the ':' is not a Python name; "
                          f"write {EXAMPLE}")
    if where.endswith(".py"):
        return f"{Path(where).expanduser().resolve()}:{attribute}"
    if not MODULE.match(where):
        raise ConfigError(f"{key}={short_repr(value)}: {where!r} is neither a module name (pkg.module) nor a "
                          f"file ending in .py; write {EXAMPLE}")
    return f"{where}:{attribute}"


def short_name(target: str) -> str:
    """The attribute's last name, for labels and run-directory names (nets.py:build -> build)."""
    return split_target(target)[1].rsplit(".", 1)[-1]


def check_args(value: Any, key: str) -> dict:
    """A target's `args`: a mapping of names to plain YAML values (they are recorded and hashed)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}={short_repr(value)} must be a mapping of keyword arguments, e.g. {{width: 64}}")
    for name, item in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{key} has the key {short_repr(name)}; keyword arguments are Python names")
        _plain(item, f"{key}.{name}")
    return dict(value)


def _plain(value: Any, key: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _plain(item, f"{key}[{i}]")
        return
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(f"{key} has the key {short_repr(name)}; mapping keys in args are strings")
            _plain(item, f"{key}.{name}")
        return
    raise ConfigError(f"{key}={short_repr(value)} is a {type(value).__name__}; args hold plain values "
                      "(numbers, strings, booleans, lists, mappings) so that a run records and hashes them")


def resolve_section(raw: Any, section: str) -> Any:
    """The `model:` or `data:` mapping with its target normalized and `name` set to 'target' when a
    target is given: a model (or data set) is a built-in one or a target, never both (a name left at
    its default, as in a resolved config, gives way to the target)."""
    if not isinstance(raw, dict) or raw.get("target") is None:
        if isinstance(raw, dict) and raw.get("name") == "target":
            raise ConfigError(f"{section}.name=target needs {section}.target ({EXAMPLE})")
        if isinstance(raw, dict) and raw.get("args") not in (None, {}):
            raise ConfigError(f"{section}.args={short_repr(raw['args'])} is set but {section}.target is not; "
                              f"args are the keyword arguments of a target ({EXAMPLE})")
        return raw
    name = raw.get("name", "target")
    if name not in ("target", DEFAULT_NAMES[section]):    # the default: a resolved config switched to a target
        raise ConfigError(f"{section}.name={short_repr(name)} and {section}.target={short_repr(raw['target'])} are "
                          f"both set; a {section} is a built-in one or a target: drop {section}.name (or set "
                          f"{section}.target: null for the built-in)")
    return {**raw, "name": "target", "target": normalize_target(raw["target"], f"{section}.target"),
            "args": check_args(raw.get("args"), f"{section}.args")}


def named_by_target(name: str, target: str | None, default: str, section: str) -> tuple[str, str | None]:
    """(name, target) of a section built in Python: with a target, a name left at its default becomes
    'target' and the target is normalized; another built-in name beside a target is refused."""
    if target is None:
        return name, None
    if name not in ("target", default):
        raise ConfigError(f"{section}.name={name} and {section}.target={target} are both set; drop {section}.name "
                          f"(a {section} is a built-in one or a target)")
    return "target", normalize_target(target, f"{section}.target")
