"""Each theorem's condition (its regime), checked against the settings a study used.

The theorems state their conditions as "sufficiently small" without constants; a study has to read
them as numbers to say whether its settings qualify. Those readings live here, once, and every
verdict prints them beside the settings (docs/theorems.md, "Verdicts and regimes"):

- Thm 4.5 (full-batch SAM): rho/eta and eta ln(1/rho) small; stable for eta lambda_1 < 1. Read as
  rho/eta <= 0.3 (the alignment argument's condition: outside it alignment, and with it the
  lambda_1 drift, is not claimed) and eta ln(1/rho) <= 0.5.
- Thm 5.4 (1-SAM): (eta + rho) ln(1/(eta rho)) small, no rho/eta condition. Read as <= 1, with every
  example's own SAM stable: eta max_k lambda_1(H_k) < 1 (Thm 4.8's condition, per example).
- Thm 4.8 (quadratics): A positive definite with a unique top eigenvalue, eta lambda_1 < 1.
- Thm 4.2 / Table 1 / Thm E.4 (explicit biases) and Thm 5.3: limits as rho -> 0; no threshold, so
  in_regime is None and the verdict watches the trend as rho shrinks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .verdicts import CONTROL, Verdict, judged

RHO_OVER_ETA_MAX = 0.3
SAM_ETA_LOG_MAX = 0.5
ONE_SAM_LOG_MAX = 1.0


@dataclass(frozen=True)
class Regime:
    """A theorem, its condition in words, the settings used and whether they satisfy the condition."""
    theorem: str
    condition: str
    settings: dict = field(default_factory=dict)
    in_regime: Optional[bool] = None

    def verdict(self, id: str, claim: str, criterion: str, measured: dict, passed: Optional[bool], note: str = "",
                reason: str = "", **more_settings) -> Verdict:
        """A verdict under this theorem; outside its regime it is reported, not judged. A `reason` makes it
        "open: <reason>" whatever `passed` says: the run cannot judge the claim (not in Phase II, not
        converged), which is never a FAIL."""
        outcome = None if reason or passed is None else judged(self.in_regime, passed)
        return Verdict(id, claim, self.theorem, self.condition, {**self.settings, **more_settings}, self.in_regime,
                       criterion, measured, outcome, note, reason)

    def control(self, id: str, claim: str, criterion: str, measured: dict, passed: Optional[bool], note: str = "",
                reason: str = "", **more_settings) -> Verdict:
        """A negative control: `criterion` applied to dynamics it must reject (this regime describes the run
        it was applied to). `passed` is the criterion's raw outcome there, never set aside by the regime: a
        control that passes means the criterion cannot tell the dynamics apart."""
        return Verdict(f"control:{id}", claim, self.theorem, self.condition, {**self.settings, **more_settings},
                       self.in_regime, criterion, measured, None if reason else passed, note, reason, CONTROL)


def full_batch_sam(eta: float, rho: float, lambda_1: float, theorem: str = "Thm 4.5") -> Regime:
    """Thm 4.5's regime: rho/eta <= 0.3, eta ln(1/rho) <= 0.5 and eta lambda_1 < 1."""
    settings = {"eta": eta, "rho": rho, "rho/eta": rho / eta, "eta ln(1/rho)": eta * math.log(1 / rho),
                "eta lambda_1": eta * lambda_1}
    ok = (rho / eta <= RHO_OVER_ETA_MAX and eta * math.log(1 / rho) <= SAM_ETA_LOG_MAX and eta * lambda_1 < 1)
    return Regime(theorem, f"rho/eta and eta ln(1/rho) small (read: rho/eta <= {RHO_OVER_ETA_MAX}, "
                           f"eta ln(1/rho) <= {SAM_ETA_LOG_MAX}); eta lambda_1 < 1", settings, ok)


def one_sam(eta: float, rho: float, max_example_lambda: float, theorem: str = "Thm 5.4") -> Regime:
    """Thm 5.4's regime: (eta + rho) ln(1/(eta rho)) <= 1 and eta max_k lambda_1(H_k) < 1."""
    size = (eta + rho) * math.log(1 / (eta * rho))
    settings = {"eta": eta, "rho": rho, "(eta+rho) ln(1/(eta rho))": size,
                "eta max_k lambda_1(H_k)": eta * max_example_lambda}
    return Regime(theorem, f"Setting 5.1; (eta + rho) ln(1/(eta rho)) small (read: <= {ONE_SAM_LOG_MAX}); "
                           "eta max_k lambda_1(H_k) < 1", settings,
                  size <= ONE_SAM_LOG_MAX and eta * max_example_lambda < 1)


def quadratic(eta: float, rho: float, eigenvalues) -> Regime:
    """Thm 4.8's regime: A positive definite with a unique top eigenvalue and eta lambda_1 < 1."""
    values = sorted(eigenvalues, reverse=True)
    ok = values[-1] > 0 and (len(values) == 1 or values[0] > values[1]) and eta * values[0] < 1
    return Regime("Thm 4.8", "A positive definite with a unique top eigenvalue; eta lambda_1 < 1",
                  {"eta": eta, "rho": rho, "eta lambda_1": eta * values[0]}, ok)


def limit(theorem: str, condition: str, **settings) -> Regime:
    """A statement about a limit (rho -> 0): no threshold to check."""
    return Regime(theorem, condition, settings, None)


def precondition(theorem: str, **settings) -> Regime:
    """What a study must reach before the theorem applies (e.g. an interpolating point)."""
    return Regime(f"{theorem} (precondition)", "", settings, None)


def observation(**settings) -> Regime:
    """Not a claim of the paper: reported beside the verdicts."""
    return Regime("- (no claim of the paper)", "", settings, None)


__all__ = ["Regime", "full_batch_sam", "one_sam", "quadratic", "limit", "precondition", "observation",
           "RHO_OVER_ETA_MAX"]
