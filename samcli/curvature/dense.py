"""The exact Hessian, densely, in float64: ground truth for tests and `--exact` on small models."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import hessian

from ..errors import SamcliError
from ..objective import Batch, Objective

MAX_DENSE_PARAMETERS = 5000


def dense_hessian(objective: Objective, theta: Tensor, data: Batch, chunk_size: int = 4096,
                  limit: int = MAX_DENSE_PARAMETERS) -> Tensor:
    """(D, D) Hessian of the mean loss over `data`, computed in float64 chunk by chunk."""
    if objective.dim > limit:
        raise SamcliError(f"the model has {objective.dim} parameters; the exact (dense) Hessian is limited to "
                          f"{limit}; drop --exact or measure a smaller model")
    theta64 = theta.detach().to(torch.float64)
    data64 = data.to(dtype=torch.float64)
    buffers = {k: v.to(torch.float64) if v.is_floating_point() else v.clone() for k, v in objective.buffers.items()}
    # functional_call swaps in every parameter and buffer, so float64 inputs give float64 arithmetic.
    total = torch.zeros(objective.dim, objective.dim, dtype=torch.float64, device=theta.device)
    for chunk in data64.chunks(chunk_size):
        total += hessian(lambda t, chunk=chunk: objective.loss(t, chunk, buffers))(theta64) * (len(chunk) / len(data))
    return total


@dataclass(frozen=True)
class Spectrum:
    """The eigendecomposition of a dense Hessian and the spectral quantities the notions need."""
    eigenvalues: Tensor      # ascending, float64
    eigenvectors: Tensor     # columns
    zero_tol: float          # eigenvalues <= zero_tol * lambda_1 count as zero

    @property
    def lambda_1(self) -> float:
        """The largest eigenvalue."""
        return self.eigenvalues[-1].item()

    @property
    def lambda_min_nonzero(self) -> float:
        """lambda_M: the smallest eigenvalue above zero_tol * lambda_1 (the paper's codimension M)."""
        positive = self.eigenvalues[self.eigenvalues > self.zero_tol * max(self.lambda_1, 0.0)]
        return positive[0].item() if len(positive) else float("nan")

    @property
    def rank(self) -> int:
        """The number of eigenvalues above zero_tol * lambda_1."""
        return int((self.eigenvalues > self.zero_tol * max(self.lambda_1, 0.0)).sum())

    @property
    def trace(self) -> float:
        """The sum of all eigenvalues."""
        return self.eigenvalues.sum().item()


def spectrum(matrix: Tensor, zero_tol: float = 1e-6) -> Spectrum:
    """The float64 eigendecomposition (ascending) of a symmetric matrix, with its zero tolerance."""
    values, vectors = torch.linalg.eigh(matrix.to(torch.float64))
    return Spectrum(values, vectors, zero_tol)
