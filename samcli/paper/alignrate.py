"""The alignment-rate test of Thm 4.5 (in Phase II the angle between full-batch SAM's gradient and v_1 is
O(rho)), shared by the figure1 and network studies.

Built so that its runs can judge the claim (issue #21, item 2): every radius starts from ONE point and runs
to the SAME flow time tau = eta rho^2 t at ONE learning rate, at least three radii; the angle is averaged
over the last measurements (SAM's 2-cycle is measured at even steps); the claim is judged by the slope of
log(angle) against log(rho), which is 1 for angle = c rho (criterion: slope >= slope_min). A radius whose
angle still changed by `settle` (10%) or more over the last half of its run is not in Phase II yet, and
then the verdict is "open: not in Phase II", never FAIL.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .regimes import Regime
from .verdicts import Verdict

SETTLE = 0.1          # Phase II: the angle changed by less than this (relative) over the last half


@dataclass(frozen=True)
class AngleSeries:
    """One radius's run: the steps where |cos(g, v_1)| was measured and the values there."""
    rho: float
    steps: Sequence[int]
    cosines: Sequence[float]

    @property
    def angles(self) -> list[float]:
        """The angles (radians) between g and v_1, from |cos| (clamped to [0, 1]); NaN where none was
        measured (e.g. a zero gradient)."""
        return [math.acos(min(1.0, abs(c))) if c is not None and math.isfinite(c) else math.nan
                for c in self.cosines]

    def final_angle(self, last: int = 2) -> float:
        """The angle averaged over the last `last` measurements."""
        tail = self.angles[-last:]
        return sum(tail) / len(tail)

    def change_over_last_half(self, last: int = 2) -> float:
        """|final angle - angle at the run's middle| / final angle: < SETTLE means Phase II reached."""
        half = self.steps[-1] / 2
        middle = min(range(len(self.steps)), key=lambda i: abs(self.steps[i] - half))
        final = self.final_angle(last)
        return abs(final - self.angles[middle]) / final if final > 0 else math.inf


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of log y against log x (NaN with fewer than two points or y <= 0)."""
    if len(xs) < 2 or any(y <= 0 for y in ys) or any(x <= 0 for x in xs):
        return math.nan
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den > 0 else math.nan


def rate_reading(series: Sequence[AngleSeries], settle: float = SETTLE, last: int = 2) -> dict:
    """The numbers the verdict shows: radii, final angles, angle / rho, the change over the last half,
    the log-log slope, and which radii (if any) are not yet in Phase II."""
    ordered = sorted(series, key=lambda s: -s.rho)
    angles = [s.final_angle(last) for s in ordered]
    changes = [s.change_over_last_half(last) for s in ordered]
    return {"rho": [s.rho for s in ordered], "steps": [s.steps[-1] for s in ordered], "angle": angles,
            "angle / rho": [a / s.rho for a, s in zip(angles, ordered)], "change over last half": changes,
            "slope": loglog_slope([s.rho for s in ordered], angles),
            "not settled": [s.rho for s, c in zip(ordered, changes) if not c < settle]}


def rate_criterion(slope_min: float, tau: float, settle: float = SETTLE) -> str:
    """The criterion in words."""
    return (f"from one start to equal tau = {tau:g} at one eta, >= 3 radii: slope of log(angle) vs log(rho) "
            f">= {slope_min:g} (angle = c rho has slope 1); open unless every radius's angle changed < "
            f"{settle:.0%} over its last half (Phase II)")


def rate_verdict(regime: Regime, vid: str, series: Sequence[AngleSeries], slope_min: float, tau: float,
                 extra: dict, control: bool = False, claim: str = "", settle: float = SETTLE) -> Verdict:
    """The alignment-rate verdict (or its negative control, on dynamics it must reject) from the runs."""
    reading = rate_reading(series, settle)
    reason = ""
    if len(series) < 3:
        reason = f"fewer than 3 radii ({len(series)})"
    elif reading["not settled"]:
        reason = f"not in Phase II (the angle still changed >= {settle:.0%} over the last half at rho " \
                 f"{', '.join(f'{r:g}' for r in reading['not settled'])})"
    ok = math.isfinite(reading["slope"]) and reading["slope"] >= slope_min
    claim = claim or "in Phase II the angle between full-batch SAM's gradient and v_1 is O(rho)"
    make = regime.control if control else regime.verdict
    return make(vid, claim, rate_criterion(slope_min, tau, settle), {**reading, **extra}, ok, reason=reason,
                tau=tau)


__all__ = ["AngleSeries", "SETTLE", "loglog_slope", "rate_reading", "rate_verdict"]
