"""SAM's ascent step, the one perturbation every SAM-family rule and the ascent-direction notion use."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Union, cast

import torch
from torch import Tensor

Gradient = Union[Tensor, Mapping[str, Tensor]]


def ascent_step(g: Gradient, rho: float, eps: float, normalized: bool = True,
                norm: Optional[Tensor] = None, scale: Optional[Gradient] = None) -> Gradient:
    """rho g/(||g|| + eps) (eps guards g = 0, where the normalized step is undefined) or rho g.
    `norm`: the denominator's norm (||g||, or ||T g|| with a scale) of a flat g when the caller has it
    already (SAM reports ||g||: one reduction, not two).

    `scale`: an elementwise T = diag(scale), shaped as g (adaptive sharpness, Kwon et al. 2021): the
    step maximizes g.e over ||T^-1 e|| <= rho, e = rho T^2 g/(||T g|| + eps), or rho T^2 g unnormalized.

    g is a flat vector or one vector split into named tensors (||g|| over all of them); each keeps
    the operation order its callers have always used, so trajectories stay bit for bit the same.
    """
    if scale is not None:
        return _scaled_step(g, rho, eps, normalized, norm, scale)
    if isinstance(g, Tensor):
        return rho * g / ((g.norm() if norm is None else norm) + eps) if normalized else rho * g
    squares = cast(Tensor, sum(v.pow(2).sum() for v in g.values()))     # a tensor: g has at least one entry
    factor = rho / (torch.sqrt(squares) + eps) if normalized else rho
    return {name: factor * v for name, v in g.items()}


def _scaled_step(g: Gradient, rho: float, eps: float, normalized: bool, norm: Optional[Tensor],
                 scale: Gradient) -> Gradient:
    if isinstance(g, Tensor):
        if not isinstance(scale, Tensor):
            raise TypeError("ascent_step: a flat gradient takes a flat scale (a tensor shaped as g)")
        tg = scale * g
        factor = rho / ((tg.norm() if norm is None else norm) + eps) if normalized else rho
        return factor * (scale * tg)
    if isinstance(scale, Tensor) or scale.keys() != g.keys():
        raise TypeError("ascent_step: named gradients take a scale with the same names")
    scaled = {name: scale[name] * v for name, v in g.items()}
    if norm is None:     # ||T g|| over all names: the norm of the per-name norms
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in scaled.values()]))
    factor = rho / (norm + eps) if normalized else rho
    return {name: factor * (scale[name] * v) for name, v in scaled.items()}
