"""The stability threshold that lambda_1 is read against during training (the edge of stability).

On a quadratic with top curvature lambda, a step's multiplier along the top eigenvector leaves the
unit disc once lambda passes a threshold; training near it is the "edge of stability" (Cohen et al.
2021). Per method, with learning rate eta (as scheduled at that step):

  sgd, no momentum      2 / eta                                            (Cohen et al. 2021)
  sgd, heavy ball mu    2 (1 + mu) / eta                                   (Cohen et al. 2021, Sec. 5)
  usam                  (sqrt(1 + 8 rho / eta) - 1) / (2 rho)              (Agarwala & Dauphin 2023)
  sam (normalized)      (G / (2 rho)) (sqrt(1 + 8 rho / (eta G)) - 1)      (Long & Bartlett 2023)

where G = ||grad L|| at that point: SAM's step along v_1 is eta lambda (1 + rho lambda / G), whose
multiplier 1 - eta lambda - eta rho lambda^2 / G is -1 there (USAM: G is replaced by 1). For the other
methods (momentum with SAM, Nesterov, the variants) no threshold is stated, and none is drawn.
"""
from __future__ import annotations

import math
from typing import Optional


def stability_threshold(method: str, lr: float, rho: float = 0.0, momentum: float = 0.0,
                        nesterov: bool = False, grad_norm: Optional[float] = None) -> Optional[float]:
    """The lambda_1 above which the method's step is unstable on a quadratic (see the module's table);
    None where no threshold is stated (or SAM's gradient norm is unknown)."""
    if lr <= 0 or nesterov:
        return None
    if method == "sgd" or rho == 0 and method in ("sam", "usam"):
        return 2 * (1 + momentum) / lr
    if momentum:
        return None
    if method == "usam":
        return (math.sqrt(1 + 8 * rho / lr) - 1) / (2 * rho)
    if method == "sam" and grad_norm is not None and grad_norm > 0:
        return grad_norm / (2 * rho) * (math.sqrt(1 + 8 * rho / (lr * grad_norm)) - 1)
    return None


def threshold_source(method: str, momentum: float = 0.0, nesterov: bool = False) -> str:
    """Which formula `stability_threshold` uses for these settings, in words (for captions)."""
    if nesterov:
        return "no threshold stated for Nesterov momentum"
    if method == "sgd":
        return "2(1 + mu)/eta (Cohen et al. 2021)" if momentum else "2/eta (Cohen et al. 2021)"
    if momentum:
        return f"no threshold stated for {method} with momentum"
    if method == "usam":
        return "(sqrt(1 + 8 rho/eta) - 1)/(2 rho) (Agarwala & Dauphin 2023)"
    if method == "sam":
        return "(G/(2 rho))(sqrt(1 + 8 rho/(eta G)) - 1), G = ||grad L|| (Long & Bartlett 2023)"
    return f"no threshold stated for {method}"
