"""Study configs: dataclass defaults <- the packaged YAML (samcli/paper/configs/NAME.yaml, or a user's
--config path) <- its `quick:` section (with --quick) <- --set overrides.

The YAML ships inside the package, so a non-editable install reads the same file; a missing or
unreadable file is a ConfigError, never a silent fall-back to the defaults.
"""
from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Optional

from ..config import ConfigError, apply_override, build_dataclass, load_yaml


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
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


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
