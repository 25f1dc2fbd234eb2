"""Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019): the spectral density
of a symmetric operator from a few Lanczos runs.

For a unit probe v with E[v v^T] = I / D (a Rademacher or a Gaussian vector, normalized), m Lanczos
steps from v give a tridiagonal T_m = U diag(theta) U^T, and the Gauss quadrature
    v^T f(H) v  ~=  sum_k tau_k f(theta_k),   tau_k = U[0, k]^2,
is exact for polynomials of degree <= 2m - 1. Its expectation over v is Tr f(H) / D = the integral of
f against the eigenvalue distribution (1/D) sum_i delta(t - lambda_i), so the nodes theta and the
weights tau / (number of probes) are a discrete estimate of that distribution; moments come out of
the same quadrature (f(t) = t gives v^T H v, f(t) = t^2 gives ||H v||^2 once m >= 2).

Operators apart from algorithms: this knows a matrix-vector product, a dimension and a generator,
nothing about models. The probes run batched (one row each, as in lanczos.py) with full
re-orthogonalization in float64, so no ghost copies of converged eigenvalues appear; a probe whose
Krylov space is exhausted (fewer distinct eigenvalues than steps) stops there, its quadrature then
exact for every f.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

PROBES = ("rademacher", "gaussian")


@dataclass(frozen=True)
class Quadrature:
    """Per probe, the Gauss quadrature nodes (Ritz values, ascending) and weights (summing to 1)."""
    nodes: tuple[tuple[float, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    steps: tuple[int, ...]            # Lanczos steps each probe ran (fewer than asked at an exhausted Krylov space)
    matvecs: int                      # operator applications, all probes together
    probe: str                        # rademacher or gaussian


def slq(matvec: Callable[[Tensor], Tensor], dim: int, *, probes: int = 4, steps: int = 30,
        generator: torch.Generator | None = None, probe: str = "rademacher", device=None) -> Quadrature:
    """Stochastic Lanczos quadrature of the operator `matvec` ((S, D) rows -> (S, D)) of size `dim`:
    `probes` independent unit probes, `steps` Lanczos steps each (at most `dim`)."""
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r} is unknown; choose one of {', '.join(PROBES)}")
    if probes < 1 or steps < 1 or dim < 1:
        raise ValueError(f"slq needs probes >= 1, steps >= 1 and dim >= 1 (got {probes}, {steps}, {dim})")
    steps = min(steps, dim)
    q = torch.randn(probes, dim, generator=generator, dtype=torch.float64)
    if probe == "rademacher":
        q = q.sign()                  # a fair sign per entry (randn is never exactly 0 in practice)
        q[q == 0] = 1.0
    q = (q / q.norm(dim=1, keepdim=True)).to(device)
    basis = torch.zeros(probes, steps, dim, dtype=torch.float64, device=q.device)
    alphas = torch.zeros(probes, steps, dtype=torch.float64, device=q.device)
    betas = torch.zeros(probes, steps, dtype=torch.float64, device=q.device)
    length = torch.full((probes,), steps, dtype=torch.long)     # steps each probe keeps
    alive = torch.ones(probes, dtype=torch.bool, device=q.device)
    matvecs = 0
    for j in range(steps):
        basis[:, j] = q
        if bool(alive.all()):
            w = matvec(q).to(torch.float64, copy=True)
        else:                         # only the live probes cost products; a finished one's row stays zero
            w = torch.zeros_like(q)
            w[alive] = matvec(q[alive]).to(torch.float64)
        matvecs += int(alive.sum())
        alphas[:, j] = (w * q).sum(1)
        for _ in range(2):            # full re-orthogonalization, twice ("twice is enough")
            coeffs = torch.bmm(basis[:, :j + 1], w.unsqueeze(2))
            w.unsqueeze(1).baddbmm_(coeffs.transpose(1, 2), basis[:, :j + 1], alpha=-1)
        beta = w.norm(dim=1)
        betas[:, j] = beta
        # exhausted: the residual is rounding next to the operator's scale (a Krylov space of a spectrum
        # with fewer than `steps` distinct eigenvalues in the probe's support)
        scale = alphas[:, :j + 1].abs().amax(1).clamp_min(1e-300)
        ended = alive & (beta <= 1e-10 * scale)
        length[ended.cpu()] = j + 1
        alive &= ~ended
        if not bool(alive.any()) or j == steps - 1:
            break
        # a finished probe carries a zero vector on (its rows are cut below)
        q = torch.where(alive.unsqueeze(1), w / beta.clamp_min(1e-300).unsqueeze(1), torch.zeros_like(w))
    nodes, weights = [], []
    for s in range(probes):
        m = int(length[s])
        T = torch.diag(alphas[s, :m]) + torch.diag(betas[s, :m - 1], 1) + torch.diag(betas[s, :m - 1], -1)
        theta, U = torch.linalg.eigh(T.cpu())
        tau = U[0] ** 2
        tau = tau / tau.sum()          # 1 up to rounding; exactly 1 so the measure is a probability
        nodes.append(tuple(theta.tolist()))
        weights.append(tuple(tau.tolist()))
    return Quadrature(tuple(nodes), tuple(weights), tuple(int(m) for m in length), matvecs, probe)
