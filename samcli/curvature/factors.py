"""Per-example factors of Linear and Conv1d/Conv2d layers: ONE table for m-SAM's rank-m corrections
(msam.py), the exact GGN trace (ggn_trace.py) and the per-example Gram matrices (ggn.py).

A layer z_p = W a_p + b at P positions per example (nn.Linear: one position per index of the input's
middle dimensions, P = 1 for 2-D inputs; a convolution: a_p the input patch output position p sees)
has, for the output gradients delta_p, the per-example gradient

    grad_W = sum_p delta_p a_p^T,        grad_b = sum_p delta_p,

so a consumer needs the layer's (a, delta), never a per-example gradient of the whole model. The
squared norm of that gradient is either materialized (P K Cout multiply-adds per gradient, K the
patch length) or taken from the patch Grams sum_{p,q} (delta_p . delta_q)(a_p . a_q + 1) (P^2 (Cout + 1)
per gradient, plus P^2 K per example for the a-Gram, which L gradients of one example share),
whichever is fewer (`gram_is_cheaper`); for P = 1 it is ||delta||^2 (||a||^2 + 1).

Layout: patches (n, P, K), K ordered as the weight's (in channels, *kernel) entries, so a materialized
gradient (n, Cout, K) is the weight's shape flattened; delta as rows (*lead, n, P, Cout), with any
leading dimensions (L gradients per example: the GGN's C pseudo-losses). An "example" may be a group
of examples with its rows stacked (m-SAM's g_j: R = m P rows).

`FACTORS` maps each module type to its entry, as BackPACK's per-module extension tables do: the entry
knows the layer type's geometry (which modules it covers, the patches of an input, outputs as rows and
back, a forward with one weight per group of examples); the rules on (a, delta) below are the same
for every entry.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from torch.nn.modules.conv import _ConvNd


class LinearFactors:
    """nn.Linear, z = x W^T + b over the last dimension: every index of the middle dimensions is a position."""

    def covers(self, module: nn.Module) -> bool:
        """Whether the rules hold for this module of the entry's type (every Linear)."""
        return True

    def patches(self, module: nn.Module, x: Tensor) -> Tensor:
        """The layer input as (n, P, K): the vectors a_p with z_p = W a_p + b."""
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def rows(self, module: nn.Module, z: Tensor, lead: int = 0) -> Tensor:
        """A layer output (or its gradient, with `lead` leading dimensions) as (*lead, n, P, Cout)."""
        return z.reshape(*z.shape[:lead + 1], -1, z.shape[-1])

    def as_output(self, module: nn.Module, rows: Tensor, like: Tensor) -> Tensor:
        """Rows (n, P, Cout) back in the layer output's shape `like`."""
        return rows.reshape(like.shape)

    def grouped_forward(self, module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor, scale: Tensor) -> Tensor:
        """scale[j] (weight[j] a + bias[j]) on group j's examples of x (G groups of consecutive examples,
        weight (G, Cout, K), bias (G, Cout)), shaped as the layer's output."""
        groups = weight.shape[0]
        patches = self.patches(module, x)
        z = patches.reshape(groups, -1, patches.shape[-1]) @ weight.transpose(1, 2) + bias.unsqueeze(1)
        return (scale.view(groups, 1, 1) * z).reshape(*x.shape[:-1], weight.shape[1])


class ConvFactors:
    """nn.Conv1d/Conv2d with zero padding given as numbers and groups = 1 (others are not covered)."""

    def covers(self, module: nn.Module) -> bool:
        """Groups = 1, zero padding given as numbers."""
        conv = cast("_ConvNd", module)
        return conv.groups == 1 and not isinstance(conv.padding, str) and conv.padding_mode == "zeros"

    def patches(self, module: nn.Module, x: Tensor) -> Tensor:
        """Windows as strided views, then one copy, positions innermost: (n, K, P) in memory, returned
        as its (n, P, K) transpose (on CPU several times faster than F.unfold's im2col, or than copying
        with the patch innermost, except on tiny maps). A matrix product reads the two layouts in
        different orders: a consumer whose float32 bits must not move (m-SAM) copies it contiguous."""
        conv = cast("_ConvNd", module)
        padding = cast(tuple[int, ...], conv.padding)      # covered: numbers, not a string
        dims = x.dim() - 2
        n = x.shape[0]
        if any(padding):
            x = F.pad(x, [p for p in reversed(padding) for _ in range(2)])
        for i, (k, s, d) in enumerate(zip(conv.kernel_size, conv.stride, conv.dilation)):
            x = x.unfold(2 + i, (k - 1) * d + 1, s)          # (n, C, *out, *windows)
        if any(d > 1 for d in conv.dilation):
            index: tuple[Any, ...] = (..., *(slice(None, None, d) for d in conv.dilation))
            x = x[index]
        x = x.permute(0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims))     # (n, C, *windows, *out)
        return x.reshape(n, -1, math.prod(x.shape[2 + dims:])).transpose(1, 2)

    def rows(self, module: nn.Module, z: Tensor, lead: int = 0) -> Tensor:
        """(*lead, n, Cout, *out) as (*lead, n, P, Cout), a view."""
        return z.flatten(lead + 2).transpose(-1, -2)

    def as_output(self, module: nn.Module, rows: Tensor, like: Tensor) -> Tensor:
        """Rows (n, P, Cout) back in the layer output's shape `like`."""
        return rows.transpose(-1, -2).reshape(like.shape)

    def grouped_forward(self, module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor, scale: Tensor) -> Tensor:
        """As LinearFactors.grouped_forward, by one convolution with groups = G over (m, G x C_in, ...)
        inputs: no patches unfolded."""
        conv = cast("_ConvNd", module)
        padding = cast(tuple[int, ...], conv.padding)      # covered: numbers, not a string
        groups, channels = weight.shape[:2]
        m = x.shape[0] // groups
        kernels = (scale.view(groups, 1, 1) * weight).reshape(groups * channels, *conv.weight.shape[1:])
        spatial = x.shape[2:]
        x = x.reshape(groups, m, -1, *spatial).transpose(0, 1).reshape(m, -1, *spatial)
        convolve = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
        z = convolve(x, kernels, None, conv.stride, padding, conv.dilation, groups)
        out = z.shape[2:]
        z = z.reshape(m, groups, channels, *out).transpose(0, 1).reshape(groups * m, channels, *out)
        shift = (scale.view(groups, 1) * bias).repeat_interleave(m, 0)
        return z + shift.view(*shift.shape, *[1] * len(out))


Entry = LinearFactors | ConvFactors
FACTORS: dict[type, Entry] = {nn.Linear: LinearFactors(), nn.Conv1d: ConvFactors(), nn.Conv2d: ConvFactors()}


def lookup(module: nn.Module) -> Optional[Entry]:
    """The entry for the module's type (or a base class of it), None for a type not in the table."""
    return next((FACTORS[cls] for cls in type(module).__mro__ if cls in FACTORS), None)


def rule_for(module: nn.Module) -> Optional[Entry]:
    """The entry that factorizes this module, None when its type is not in the table or the entry
    does not cover it (a grouped, string-padded or non-zero-padded convolution)."""
    entry = lookup(module)
    return entry if entry is not None and entry.covers(module) else None


# ---- the rules on (a, delta), the same for every entry -------------------------------------------

def multiply_adds(rows: int, features: int, channels: int, gradients: int = 1, bias: int = 1) -> tuple[int, int]:
    """(patch Grams, materialized gradients): multiply-adds per example, (features + gradients (channels
    + bias)) rows^2 against gradients x rows x features x channels; `bias` 0 leaves the bias's term of
    the Gram rule uncounted."""
    return (features + gradients * (channels + bias)) * rows * rows, gradients * rows * features * channels


def gram_is_cheaper(rows: int, features: int, channels: int, gradients: int = 1) -> bool:
    """Patch Grams rather than materialized gradients (`multiply_adds`; a tie is materialized)?"""
    gram, materialized = multiply_adds(rows, features, channels, gradients)
    return gram < materialized


def gradients(a: Tensor, delta: Tensor, bias: float) -> tuple[Tensor, Tensor]:
    """Materialized per-example gradients: weight (*lead, n, Cout, K) and bias (*lead, n, Cout), the
    bias's zero when `bias` is 0 (a layer without one)."""
    return delta.transpose(-1, -2) @ a, delta.sum(-2) * bias


def norms(weight: Tensor, bias: Tensor) -> Tensor:
    """Squared norms (*lead, n) of materialized per-example gradients."""
    return weight.pow(2).sum((-2, -1)) + bias.pow(2).sum(-1)


def squared_norms(a: Tensor, delta: Tensor, bias: float, gram: bool) -> Tensor:
    """(*lead, n): ||grad_W||^2 + ||grad_b||^2 per example (and leading index), by patch Grams or
    materialized; one row per example needs neither."""
    if a.shape[-2] == 1:
        return delta.pow(2).sum((-2, -1)) * (a.pow(2).sum((-2, -1)) + bias)
    if gram:
        return ((delta @ delta.transpose(-1, -2)) * (a @ a.transpose(-1, -2) + bias)).sum((-2, -1))
    return norms(*gradients(a, delta, bias))


def gram_matrix(a: Tensor, delta: Tensor, bias: float) -> Tensor:
    """(n, L, L): the inner products of each example's L gradients, delta (L, n, P, Cout)."""
    if a.shape[-2] == 1:
        d = delta.squeeze(-2)
        return torch.einsum("lno,mno->nlm", d, d) * (a.pow(2).sum((-2, -1)) + bias)[:, None, None]
    return torch.einsum("lnpo,mnqo,npq->nlm", delta, delta, a @ a.transpose(-1, -2) + bias)


def factored_forward(a: Tensor, delta: Tensor, bias: float, patches: Tensor) -> Tensor:
    """grad_W a' + grad_b for each example's (or group's) gradient, from its factors without forming it:
    sum_r delta_r (a_r . a'_p + bias) for the new patches a' (n, P', K); (n, P', Cout)."""
    if a.shape[-2] == 1:       # elementwise: batched 1 x 1 matrix products are slow
        return ((patches * a).sum(-1, keepdim=True) + bias) * delta
    return (patches @ a.transpose(-1, -2) + bias) @ delta
