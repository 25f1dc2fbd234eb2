"""The per-example losses of samcli's objective, and the torch loss modules it knows as one of them.

Each loss maps (outputs, targets) to one value per example; `samcli.objective` averages them. The
names (`cross-entropy`, `mse`) are spec/losses.py's; the exact curvature paths (curvature/ggn.py) are
keyed by these functions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SamcliError


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-example cross-entropy of logits `outputs` against class labels `targets`."""
    return F.cross_entropy(outputs, targets, reduction="none")


def squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """0.5 ||f(x) - y||^2 per example; class labels become one-hot targets (Setting 5.1's loss)."""
    if not targets.is_floating_point():
        # one-hot by comparison: F.one_hot reads values and cannot run under vmap
        targets = (targets.unsqueeze(-1) == torch.arange(outputs.shape[-1], device=targets.device)).to(outputs.dtype)
    return 0.5 * (outputs - targets.reshape(outputs.shape)).pow(2).flatten(1).sum(1)


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """||f(x) - y||^2 / C per example: torch's nn.MSELoss() (the mean over examples and outputs) as a
    mean over examples, so that loss module keeps its own scale (2/C times samcli's mse)."""
    return 2.0 * squared_error(outputs, targets) / outputs[0].numel()


LOSSES = {"cross-entropy": cross_entropy, "mse": squared_error}     # keyed by spec.losses.LOSS_NAMES


def known_loss(loss):
    """A torch loss module samcli knows as the per-example loss it is: nn.CrossEntropyLoss() (no class
    weights, no label smoothing; reduction mean or none) is "cross-entropy", nn.MSELoss() (mean or none)
    is `mean_squared_error`, so they take the exact curvature paths of samcli's own losses. Any other
    torch loss module must give per-example losses (reduction='none'); names and functions pass as given."""
    if not isinstance(loss, nn.modules.loss._Loss):
        return loss
    reduction = getattr(loss, "reduction", "mean")
    if isinstance(loss, nn.CrossEntropyLoss) and loss.weight is None and loss.label_smoothing == 0 \
            and reduction in ("mean", "none"):
        return "cross-entropy"     # ignore_index never matters: labels are checked to be classes
    if type(loss) is nn.MSELoss and reduction in ("mean", "none"):
        return mean_squared_error
    if reduction != "none":
        raise SamcliError(f"loss={loss!r} reduces over the batch (reduction={reduction!r}), but samcli needs "
                          f"per-example losses: pass {type(loss).__name__}(..., reduction='none')")
    if type(loss) is nn.MSELoss:
        return mean_squared_error
    return lambda outputs, targets: loss(outputs, targets).reshape(len(outputs), -1).mean(1)


def loss_label(loss) -> str:
    """The loss in words, for a report: its name, or what a function or module is."""
    if isinstance(loss, str):
        return loss
    if loss is mean_squared_error:
        return "nn.MSELoss() (||f - y||^2 / C per example)"
    if isinstance(loss, nn.Module):     # torch's repr of a loss module leaves out its settings
        settings = {k: getattr(loss, k) for k in ("label_smoothing", "reduction") if hasattr(loss, k)}
        return f"nn.{type(loss).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"
    return getattr(loss, "__qualname__", None) or repr(loss)
