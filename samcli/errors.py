"""The errors a user sees: one line saying what is wrong and how to fix it.

Floor 0: every layer raises these, so this module imports nothing from samcli.

The same error reaches a user through two doors, in two vocabularies: the Python API (keyword
arguments, `rho=0`) and the command line (`--rho=0`, `--set ascent_restarts=0`). An error that knows
which setting it is about is a `SettingError(key, problem, value)`:

    >>> err = SettingError("ascent_restart", "is unknown (did you mean ascent_restarts?)", 1)
    >>> str(err)                                   # the Python words
    'ascent_restart=1 is unknown (did you mean ascent_restarts?)'
    >>> err.cli_message()                          # the command line's words: --set is the default door
    '--set ascent_restart=1 is unknown (did you mean ascent_restarts?)'
    >>> err.cli_message({"ascent_restart": "--restarts"})   # a key the command has its own option for
    '--restarts=1 is unknown (did you mean ascent_restarts?)'

The CLI prints `err.cli_message(options)` for every SamcliError (plain ones return `str(err)`), with
`options` mapping the keys that command exposes as options of their own (rho -> --rho) to them.
"""
from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Mapping
from typing import Optional

ECHO_LIMIT = 80          # characters of a user's value echoed back in a message


class SamcliError(Exception):
    """A user-facing error: its message is one line saying what is wrong and how to fix it."""

    def cli_message(self, options: Optional[Mapping[str, str]] = None) -> str:
        """The message in command-line words (the same words, unless the error names a setting)."""
        return str(self)


class ConfigError(SamcliError, ValueError):
    """Bad configuration: an unknown key or name, a value of the wrong type or range, an unreadable config file."""


class _NoValue:
    """`SettingError(key, problem)` without a value; one object, also after pickling."""

    def __reduce__(self):
        return "_NO_VALUE"


_NO_VALUE = _NoValue()


class SettingError(ConfigError):
    """A bad setting, named by its key: `key=value problem` from Python, `--set key=value problem` (or
    `--option=value problem`) on the command line. `value` may be left out (`key problem`)."""

    def __init__(self, key: str, problem: str, value: object = _NO_VALUE):
        self.key, self.problem, self.value = key, problem, value
        super().__init__(self._render(key))

    def __reduce__(self):          # a run in another process raises it; pickle rebuilds it from its parts
        return type(self), (self.key, self.problem, self.value)

    def _render(self, name: str) -> str:
        shown = "" if self.value is _NO_VALUE else f"={short_repr(self.value)}"
        return f"{name}{shown} {self.problem}"

    def cli_message(self, options: Optional[Mapping[str, str]] = None) -> str:
        """The message with the setting named by its option in `options`, else as `--set key`."""
        option = (options or {}).get(self.key)
        return self._render(option) if option else self._render(f"--set {self.key}")


# lists, dicts and strings cut while the repr is made: a YAML alias bomb of 250 bytes expands to a
# value whose full repr is megabytes, which must not be built just to be cut
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, ECHO_LIMIT, ECHO_LIMIT, ECHO_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 12


def short_repr(value: object, limit: int = ECHO_LIMIT) -> str:
    """repr(value) for a message, cut to `limit` characters with '...'."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def near_miss(value: object, choices: Iterable[str]) -> Optional[str]:
    """The choice `value` was probably meant to be, ignoring case ('SAM' -> 'sam'), or None."""
    if not isinstance(value, str):
        return None
    by_lower = {str(c).lower(): str(c) for c in choices}
    near = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)
    return by_lower[near[0]] if near else None


def unknown_choice(key: str, value: object, choices: Iterable[str]) -> ConfigError:
    """`key=value is unknown (did you mean X?); choose one of ...`, the hint only for a near miss."""
    choices = [str(c) for c in choices]
    near = near_miss(value, choices)
    hint = f" (did you mean {near}?)" if near else ""
    return ConfigError(f"{key}={short_repr(value)} is unknown{hint}; choose one of {', '.join(choices)}")


class SamcliWarning(UserWarning):
    """Something the user must know that did not stop the work (a cache regenerated): one line, which the
    CLI prints as its own `warning:` line."""


def integer_or_word(text: str, flag: str, word: str = "full") -> int:
    """An option's integer value; a SamcliError naming the option when it is neither an integer nor `word`
    (the caller handles `word` itself)."""
    try:
        return int(text)
    except ValueError:
        raise SamcliError(f"{flag}={short_repr(text)} must be an integer or {word!r}") from None
