"""The loss names a config may give, and the other spellings users bring from torch and elsewhere.

Torch-free, so that config validation resolves `loss: CrossEntropyLoss` without loading torch;
samcli/objective.py holds the loss functions under exactly these names.
"""
from __future__ import annotations

from ..errors import ConfigError, unknown_choice

LOSS_NAMES = ("cross-entropy", "mse")
# compared without case, '-', '_', spaces or a "loss" suffix
LOSS_ALIASES = {"crossentropy": "cross-entropy", "ce": "cross-entropy", "mse": "mse", "squarederror": "mse",
                "meansquarederror": "mse", "l2": "mse"}


def resolve_loss(name: str) -> str:
    """The loss name a spelling means (cross_entropy, CrossEntropyLoss -> cross-entropy); a name that
    means none of them raises ConfigError with the near miss."""
    if not isinstance(name, str):
        raise ConfigError(f"loss={name!r} must be a loss name: {', '.join(LOSS_NAMES)}")
    key = "".join(c for c in name.lower() if c not in "-_ ")
    key = key[:-4] if key.endswith("loss") and len(key) > 4 else key
    if key in LOSS_ALIASES:
        return LOSS_ALIASES[key]
    raise unknown_choice("loss", name, LOSS_NAMES)
