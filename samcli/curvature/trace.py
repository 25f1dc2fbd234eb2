"""Trace estimators: Hutch++ for any operator, and an exact-GGN control variate for networks.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021) pays off when the spectrum decays fast; a network
Hessian's does not, so for models where Tr(G) is exact and cheap (see ggn.py) we estimate
    Tr(H) = Tr(G) + Tr(H - G),
with the small remainder by Hutchinson restricted to diagonal blocks (one block per layer):
Tr(H - G) = sum_l E[z_l^T (H - G)_ll z_l]. Within a layer f is linear in (W, b), so for
piecewise-linear activations (ReLU) (H - G)_ll = 0 and the remainder is exactly zero with zero
variance; smooth activations leave only within-layer off-diagonal terms in the variance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate, its standard error, the path that produced it and the products it cost."""
    value: float
    stderr: float           # standard error of the stochastic part (0 for an exact value)
    method: str             # "ggn+block-hutchinson", "hutch++" or "exact"
    matvecs: int            # Hessian-vector products spent (GGN products counted separately)
    probes: int
    ggn_trace: float | None = None
    ggn_matvecs: int = 0


def rademacher(count: int, dim: int, generator: torch.Generator, dtype, device) -> Tensor:
    """`count` random sign vectors of length `dim` (entries +-1) drawn from `generator`."""
    return (torch.randint(0, 2, (count, dim), generator=generator) * 2 - 1).to(dtype=dtype, device=device)


def hutchpp(matmat, dim: int, matvecs: int, generator: torch.Generator, dtype=torch.float32,
            device=None) -> TraceEstimate:
    """Hutch++ with Rademacher probes and a budget of `matvecs` products (split in thirds)."""
    sketch_count = max(1, matvecs // 3)
    probe_count = max(1, matvecs - 2 * sketch_count)
    sketch = rademacher(sketch_count, dim, generator, dtype, device)
    probes = rademacher(probe_count, dim, generator, dtype, device)
    basis, _ = torch.linalg.qr(matmat(sketch).T.to(torch.float64))             # (D, s)
    low_rank = (basis.T * matmat(basis.T.to(dtype)).to(torch.float64)).sum().item()   # Tr(Q^T H Q)
    deflated = probes.to(torch.float64) - (probes.to(torch.float64) @ basis) @ basis.T
    samples = (deflated * matmat(deflated.to(dtype)).to(torch.float64)).sum(1)
    stderr = samples.std().item() / math.sqrt(probe_count) if probe_count > 1 else float("nan")
    return TraceEstimate(low_rank + samples.mean().item(), stderr, "hutch++",
                         2 * sketch_count + probe_count, probe_count)


def ggn_control_variate(hessian_matmat, ggn_matmat, ggn_trace: float, blocks: list[Tensor], dim: int,
                        samples: int, generator: torch.Generator, dtype=torch.float32, device=None) -> TraceEstimate:
    """Tr(G) exact plus block-diagonal Hutchinson on H - G; `blocks` are boolean masks over theta."""
    z = rademacher(samples, dim, generator, dtype, device)
    masked = torch.cat([z * mask for mask in blocks])                          # (L * samples, D)
    quad = (masked * (hessian_matmat(masked) - ggn_matmat(masked))).sum(1).to(torch.float64)
    per_sample = quad.view(len(blocks), samples).sum(0)
    stderr = per_sample.std().item() / math.sqrt(samples) if samples > 1 else float("nan")
    return TraceEstimate(ggn_trace + per_sample.mean().item(), stderr, "ggn+block-hutchinson",
                         masked.shape[0], samples, ggn_trace, masked.shape[0])
