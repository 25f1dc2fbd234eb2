"""The errors a user sees: one line saying what is wrong and how to fix it.

Floor 0: every layer raises these, so this module imports nothing from samcli.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class SamcliError(Exception):
    """A user-facing error: its message is one line saying what is wrong and how to fix it."""


class ConfigError(SamcliError, ValueError):
    pass


def unknown_choice(key: str, value: object, choices: Iterable[str]) -> ConfigError:
    """`key=value is unknown (did you mean X?); choose one of ...`, the hint only for a near miss."""
    choices = [str(c) for c in choices]
    near = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return ConfigError(f"{key}={value!r} is unknown{hint}; choose one of {', '.join(choices)}")


def short_repr(value: object, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters: an echoed value must not swamp the one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
