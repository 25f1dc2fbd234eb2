"""What every notion of one measurement shares: the point, the data, the spec, one seeded generator,
L(x) and its gradient, the Hessian operator, and the top eigenpair run (computed once, before the
notions that need it, so its seconds are its own)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from ..curvature.hvp import HessianOperator
from ..objective import Batch, Objective
from ..spec.measure import MeasureSpec


@dataclass
class MeasureContext:
    """The state one measurement's notions read; `results` holds the notions computed so far."""
    objective: Objective
    theta: Tensor
    data: Batch
    spec: MeasureSpec
    chunk_size: int
    generator: torch.Generator
    hessian: HessianOperator
    loss: float = 0.0
    gradient: Optional[Tensor] = None
    top: Any = None                   # LanczosResult of H (k = spec.k), when a notion needs it
    results: dict = field(default_factory=dict)
