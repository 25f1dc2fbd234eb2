"""How long an end-point or drift run must be for its claim, read off the limiting flow (issue #21, item 1).

A verdict "the method ends within `tol` of its target" can only be judged by a run that lasted long enough
for its limiting flow to get there. `flow_horizon` integrates the flow dX/dtau = -(1/2) P grad S from the
run's start (projected onto Gamma) until it comes within `margin * tol` of the target (the rest of the
tolerance is left to the run's own error), converts that tau into steps with tau = eta rho^2 t, adds the
Phase I steps, and caps the count at `max_steps` (stated in the config). `endpoint_outcome` then judges:
within `tol`: PASS; not within `tol` after a run as long as the flow needs: FAIL; not within `tol` after a
run the cap cut short: "open: not converged, distance left X", never FAIL.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from .flows import ManifoldFlow


@dataclass(frozen=True)
class Horizon:
    """The flow time a claim needs and the steps that gives, at (eta, rho)."""
    tau_needed: float        # inf: the flow did not come within reach by look_ahead x the cap's tau
    flow_distance: float     # the flow's distance to the target at min(tau_needed, the cap's tau)
    steps_needed: float      # Phase I steps + tau_needed / (eta rho^2) (inf with tau_needed)
    steps: int               # what the run gets: min(steps_needed, max_steps)
    max_steps: int

    @property
    def capped(self) -> bool:
        """Whether the cap cut the run short of what the flow needs."""
        return self.steps_needed > self.steps

    def info(self) -> dict:
        """The numbers a verdict shows beside its measurement."""
        return {"tau needed (flow)": self.tau_needed, "steps needed": self.steps_needed, "steps run": self.steps,
                "step cap": self.max_steps}


def flow_horizon(flow: ManifoldFlow, start: torch.Tensor, target: Sequence[float], tol: float, eta: float,
                 rho: float, max_steps: int, *, margin: float = 0.5, dt: float = 0.03, phase1_steps: int = 0,
                 coords: slice = slice(0, 2), look_ahead: float = 10.0) -> Horizon:
    """Integrate `flow` from `start` until its `coords` come within margin * tol of `target`, and the steps
    (<= max_steps) that tau needs at (eta, rho). Past the cap's tau the flow is followed up to `look_ahead`
    times further, so that a capped verdict can say how many steps it would need (inf beyond that)."""
    per_step = eta * rho ** 2
    tau_cap = max(0.0, (max_steps - phase1_steps) * per_step)
    goal = torch.tensor(list(target), dtype=torch.float64)
    x = flow.integrate(start, [0.0], dt=dt).points[0]
    tau, distance = 0.0, float((x[coords] - goal).norm())
    at_cap = distance
    while distance > margin * tol and tau < look_ahead * tau_cap:
        h = min(dt, (tau_cap if tau < tau_cap else look_ahead * tau_cap) - tau)
        x = flow.integrate(x, [h], dt=dt).points[0]
        tau += h
        distance = float((x[coords] - goal).norm())
        if tau <= tau_cap + 1e-15:
            at_cap = distance
    needed = tau if distance <= margin * tol else math.inf
    distance = distance if needed <= tau_cap else at_cap
    steps_needed = phase1_steps + needed / per_step if math.isfinite(needed) else math.inf
    steps = int(min(max_steps, math.ceil(steps_needed))) if math.isfinite(steps_needed) else max_steps
    return Horizon(needed, distance, steps_needed, max(steps, 2), max_steps)


def phase1_steps(distance: float, eta: float, rho: float, slowest_curvature: float) -> int:
    """Steps for the slowest normal mode (curvature lambda_M) to shrink from `distance` to eta rho:
    ln(distance / (eta rho)) / (eta lambda_M), at least 0."""
    if slowest_curvature <= 0 or distance <= eta * rho:
        return 0
    return math.ceil(math.log(distance / (eta * rho)) / (eta * slowest_curvature))


def endpoint_outcome(distance: float, tol: float, horizon: Optional[Horizon]) -> tuple[bool, str]:
    """(passed, reason) of an end-point verdict: reason is "" when it is judged, or "not converged, ..."
    when the run ended (at the cap) before its flow could bring it within `tol`."""
    if distance <= tol or horizon is None or not horizon.capped:
        return distance <= tol, ""
    needs = (f"needs {horizon.steps_needed:.0f}" if math.isfinite(horizon.steps_needed)
             else f"the flow is still {horizon.flow_distance:.3g} away at the cap")
    return False, (f"not converged, distance left {distance:.3g} (tolerance {tol:g}; {horizon.steps} steps run, "
                   f"capped at {horizon.max_steps}, {needs})")


__all__ = ["Horizon", "endpoint_outcome", "flow_horizon", "phase1_steps"]
