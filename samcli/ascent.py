"""SAM's ascent step, the one perturbation every SAM-family rule and the ascent-direction notion use."""
from __future__ import annotations

from typing import Mapping, Optional, Union

import torch
from torch import Tensor

Gradient = Union[Tensor, Mapping[str, Tensor]]


def ascent_step(g: Gradient, rho: float, eps: float, normalized: bool = True,
                norm: Optional[Tensor] = None) -> Gradient:
    """rho g/(||g|| + eps) (eps guards g = 0, where the normalized step is undefined) or rho g.
    `norm`: ||g|| of a flat g when the caller has it already (SAM reports it: one reduction, not two).

    g is a flat vector or one vector split into named tensors (||g|| over all of them); each keeps
    the operation order its callers have always used, so trajectories stay bit for bit the same.
    """
    if isinstance(g, Tensor):
        return rho * g / ((g.norm() if norm is None else norm) + eps) if normalized else rho * g
    scale = rho / (torch.sqrt(sum(v.pow(2).sum() for v in g.values())) + eps) if normalized else rho
    return {name: scale * v for name, v in g.items()}
