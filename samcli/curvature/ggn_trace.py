"""Exact Tr(G) for convolutional and residual networks, and when Tr(H) = Tr(G) exactly.

Tr(G) = (1/n) sum_k ||A_k^T J_k||_F^2 (ggn.py): the squared per-example gradient norms of the C
pseudo-losses a_kc . f_k, summed over every parameter. Each parameterized layer contributes its
own squared norms, computed from what forward hooks capture (the layer's input) and the batched
(over c) backward to the layer's output (delta), never a per-example gradient of a big layer:
- weights used as z_p = W a_p (+ b) at P positions (Linear, Conv1d/Conv2d): the per-example
  gradient sum_p delta_p a_p^T, its squared norm materialized or from patch Grams, whichever is
  fewer multiply-adds for the C gradients of an example: curvature/factors.py's table.
- BatchNorm with running statistics: per channel, sum_p delta_p xhat_p (weight) and sum_p delta_p.
Every other parameterized layer (LayerNorm, Embedding, a custom module, a layer called twice)
gets its block from vmapped per-example Jacobians (torch.func) of the same pseudo-losses: still
exact, only slower. A BatchNorm on batch statistics couples the examples, so no per-example
identity exists; `ggn_trace` then returns None and the caller must estimate.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from ..objective import Batch, Objective
from .factors import FACTORS, Entry, gram_is_cheaper, rule_for, squared_norms
from .ggn import output_hessian_sqrt, supports_ggn

PATCHED = tuple(FACTORS)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Leaves whose output is piecewise linear in their input and linear in each of their own parameters
# (BatchNorm and Dropout in eval mode: an affine map, the identity).
PIECEWISE_LINEAR_LEAVES = PATCHED + NORMS + (
    nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)
# A container's forward is arbitrary Python (samcli's residual block calls its children and adds), so
# the structure check cannot see it: only containers whose forward has been read count. nn.Sequential
# chains its children; ModuleList/Dict have no forward (their parent's decides); a module class whose
# author read its forward and found it chains or sums its children sets `piecewise_linear_forward =
# True` (samcli.models' residual block: relu(bn(conv(relu(bn(conv x)))) + shortcut x)). Any other
# container (a user's model class) is assumed smooth: Tr(G) is still exact, Tr(H) - Tr(G) estimated.
TRUSTED_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# elements of the deltas (C x examples x hooked activations) alive at once; bounds the sub-chunk
DELTA_BUDGET = 2 ** 25


def piecewise_linear_reason(objective: Objective) -> Optional[str]:
    """None when f is linear in every single parameter (so Tr(H) = Tr(G)); else why not, in words."""
    if objective.module is None:
        return "no module behind the objective"
    for name, module in objective.module.named_modules():
        label = f"{type(module).__name__} '{name or 'root'}'"
        if module.training and isinstance(module, NORMS + (nn.Dropout,)):
            return f"{label} is in training mode"
        if list(module.children()):
            if not (isinstance(module, TRUSTED_CONTAINERS) or getattr(module, "piecewise_linear_forward", False)):
                return f"the forward of {label} cannot be inspected"
        elif not isinstance(module, PIECEWISE_LINEAR_LEAVES + TRUSTED_CONTAINERS):   # empty Sequential: identity
            return f"{label} is not piecewise-linear"
    return None


def _couples_examples(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None)


@dataclass(frozen=True)
class GGNTrace:
    """The exact Tr(G) and how each parameterized layer was measured."""

    value: float
    factored: tuple[tuple[str, str], ...]   # (layer type, how) per factored layer, e.g. ("Conv2d", "patch Gram")
    vmapped: tuple[str, ...]        # layers measured by vmapped per-example Jacobians, e.g. "LayerNorm '1'"

    def describe(self) -> str:
        """The strategy in words, per layer kind."""
        counts = Counter(self.factored)
        layers = ", ".join(f"{kind} x{count}" + (f" by {how}" if how else "") for (kind, how), count in counts.items())
        parts = [f"per-layer factorization ({layers})"] if counts else []
        if self.vmapped:
            parts.append(f"vmapped per-example gradients for {', '.join(self.vmapped)}")
        return "; ".join(parts)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    gram: bool = False               # patch Gram (else materialized) for PATCHED layers with P > 1
    inputs: Optional[Tensor] = None  # captured per chunk: patches (n, P, K) or xhat (n, ch, P)
    output: Optional[Tensor] = None

    @property
    def label(self) -> tuple[str, str]:
        how = ("patch Gram" if self.gram else "materialized") if isinstance(self.module, (nn.Conv1d, nn.Conv2d)) else ""
        return type(self.module).__name__, how


def _factorable(module: nn.Module) -> bool:
    # what the table does not cover (grouped convolutions, string paddings, ...) is left to the fallback
    return rule_for(module) is not None or (isinstance(module, NORMS) and not _couples_examples(module))


def _capture(layer: _Layer):
    def hook(module, args, output):
        x = args[0].detach()
        if isinstance(module, NORMS):
            # under functional_call the module's attributes are the objective's buffers
            shape = (1, -1) + (1,) * (x.dim() - 2)
            xhat = (x - module.running_mean.view(shape)) / (module.running_var.view(shape) + module.eps).sqrt()
            layer.inputs = xhat.reshape(x.shape[0], x.shape[1], -1)
        else:
            layer.inputs = cast(Entry, rule_for(module)).patches(module, x)     # a factorable layer
        if layer.output is not None:
            raise _CalledTwice(layer.name)
        layer.output = output
    return hook


class _CalledTwice(Exception):
    pass


def _plan(objective: Objective, theta: Tensor, example: Tensor) -> tuple[list[_Layer], list[str], int, int]:
    """Which layers are factored (and how), which go to the fallback, the number of outputs C and
    the hooked activations per example, from one example's forward pass."""
    modules = dict(cast(nn.Module, objective.module).named_modules())     # ggn_trace checked: a module's
    owners = list(dict.fromkeys(name.rsplit(".", 1)[0] if "." in name else "" for name in objective.names))
    layers = [_Layer(o, modules[o]) for o in owners if _factorable(modules[o])]
    fallback = [o for o in owners if not _factorable(modules[o])]
    while True:
        try:
            classes = _forward(objective, theta, example, layers).shape[-1]
            break
        except _CalledTwice as twice:    # shared weights: the per-example gradient sums the uses
            layers = [layer for layer in layers if layer.name != str(twice)]
            fallback.append(str(twice))
    elements = 0
    for layer in layers:
        # the forward's hooks set each layer's inputs and output
        inputs, output = cast(Tensor, layer.inputs), cast(Tensor, layer.output)
        if isinstance(layer.module, PATCHED):
            p, k = inputs.shape[1:]
            cout = cast(Entry, rule_for(layer.module)).rows(layer.module, output).shape[-1]
            layer.gram = _prefer_gram(classes, cout, k, p)
        elements += output.numel()
        layer.inputs = layer.output = None
    return layers, fallback, classes, elements


def _prefer_gram(classes: int, cout: int, k: int, p: int) -> bool:
    """Patch Grams for C = `classes` gradients per example, P positions, patch length K?"""
    return gram_is_cheaper(p, k, cout, classes)


def _forward(objective: Objective, theta: Tensor, inputs: Tensor, layers: list[_Layer]) -> Tensor:
    handles = [layer.module.register_forward_hook(_capture(layer)) for layer in layers]
    try:
        for layer in layers:
            layer.inputs = layer.output = None
        with torch.enable_grad():
            return objective.outputs(theta.detach().requires_grad_(True), inputs)
    finally:
        for h in handles:
            h.remove()


def _squared_norms(layer: _Layer, delta: Tensor) -> Tensor:
    """sum over pseudo-losses and examples of the layer's squared per-example gradient norm."""
    module, a = layer.module, cast(Tensor, layer.inputs)      # set by the forward's hook
    bias = float(module.bias is not None)
    if isinstance(module, NORMS):            # per channel: sum_p delta_p xhat_p and sum_p delta_p
        delta = delta.reshape(*delta.shape[:3], -1)                        # (C, n, ch, P)
        return (delta * a).sum(3).pow(2).sum() + delta.sum(3).pow(2).sum() * bias
    rows = cast(Entry, rule_for(module)).rows(module, delta, lead=1)        # (C, n, P, Cout)
    return squared_norms(a, rows, bias, layer.gram).sum()


def _factored_sum(objective: Objective, theta: Tensor, inputs: Tensor, layers: list[_Layer]) -> float:
    outputs = _forward(objective, theta, inputs, layers)
    roots = output_hessian_sqrt(objective, outputs.detach())                 # (n, C, C)
    # d(a_c . f)/dz for every c at once: grad_outputs batched over the C columns of A
    # a layer whose output does not reach f (a dead branch) has zero gradients: allow_unused
    hooked = [cast(Tensor, layer.output) for layer in layers]        # set by the forward's hooks
    deltas = torch.autograd.grad(outputs, hooked, grad_outputs=roots.permute(2, 0, 1),
                                 is_grads_batched=True, allow_unused=True)
    total = sum(_squared_norms(layer, delta).item() for layer, delta in zip(layers, deltas) if delta is not None)
    for layer in layers:
        layer.inputs = layer.output = None
    return total


def _vmapped_sum(objective: Objective, theta: Tensor, inputs: Tensor, names: list[str]) -> float:
    """sum_k ||A_k^T J_k||^2 over the parameters `names`, from per-example Jacobians (torch.func)."""
    params = {k: v.detach() for k, v in objective.unflatten(theta).items()}
    chosen = {k: params[k] for k in names}
    with torch.no_grad():
        roots = output_hessian_sqrt(objective, objective.outputs(theta, inputs))

    def example_outputs(sub, x):
        return functional_call(objective.module, ({**params, **sub}, objective.buffers), (x.unsqueeze(0),))[0]

    jacobians = vmap(jacrev(example_outputs), in_dims=(None, 0))(chosen, inputs)    # (n, C, *shape) each
    return sum(torch.einsum("nec,ne...->nc...", roots, j).pow(2).sum().item() for j in jacobians.values())


def ggn_trace(objective: Objective, theta: Tensor, data: Batch, chunk_size: int = 4096) -> Optional[GGNTrace]:
    """Exact Tr(G) of the mean loss over `data`; None when no per-example identity exists (loss
    outside cross-entropy/MSE, or a BatchNorm on batch statistics)."""
    if objective.module is None or not supports_ggn(objective) or any(
            _couples_examples(m) for m in objective.module.modules()):
        return None
    theta = theta.detach()
    layers, fallback, classes, elements = _plan(objective, theta, data.inputs[:1])
    sub = max(1, min(chunk_size, DELTA_BUDGET // max(1, classes * elements)))
    fallback_names = [n for n in objective.names if (n.rsplit(".", 1)[0] if "." in n else "") in fallback]
    fallback_size = sum(s for n, s in zip(objective.names, objective.sizes) if n in fallback_names)
    fallback_sub = max(1, min(chunk_size, DELTA_BUDGET // max(1, classes * fallback_size)))
    total = 0.0
    for chunk in data.chunks(sub):
        if layers:
            total += _factored_sum(objective, theta, chunk.inputs, layers)
    if fallback_names:
        for chunk in data.chunks(fallback_sub):
            total += _vmapped_sum(objective, theta, chunk.inputs, fallback_names)
    modules = dict(objective.module.named_modules())
    vmapped = tuple(f"{type(modules[o]).__name__} '{o or 'root'}'" for o in fallback)
    return GGNTrace(total / len(data), tuple(layer.label for layer in layers), vmapped)
