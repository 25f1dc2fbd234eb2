"""What the corollaries study's negative controls measure: the full-batch worst-direction sharpness on the
network, R^Max_rho(x) = max_{||v|| <= rho} L(x + v) - L(x), beside the stochastic one of Thm 5.3. At a
point of Gamma it tends to rho^2 lambda_1 / 2, not rho^2 Tr / 2, so Thm 5.3's criterion must reject it."""
from __future__ import annotations

import torch
from torch import Tensor

from ...task import Task


def full_batch_worst(task: Task, x: Tensor, J: Tensor, rho: float, iterations: int = 100) -> float:
    """R^Max_rho(x) by the fixed-point ascent v <- rho grad L(x + v) / ||grad L(x + v)||, started along the top
    right singular vector of the output Jacobian J (the top Gauss-Newton eigenvector on Gamma)."""
    v = rho * torch.linalg.svd(J, full_matrices=False).Vh[0]
    base = float(task.objective.loss(x, task.train))
    for _ in range(iterations):
        with torch.enable_grad():
            point = (x + v).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(task.objective.loss(point, task.train), point)
        new = rho * g / g.norm()
        moved, v = float((new - v).abs().max()), new.detach()
        if moved <= 1e-12 * rho:
            break
    return float(task.objective.loss(x + v, task.train)) - base
