"""A verdict: one prediction of the paper, the theorem it comes from and that theorem's condition, the
settings used, whether they satisfy the condition, the criterion that counts as holding, and what was
measured.

The only place that turns a verdict into text or JSON: verdicts.md, results.json, summary.md and the
CLI's table and --json all go through `Verdict`. A claim checked outside its theorem's regime says so
(in_regime False) and is reported, not judged: the theorem makes no claim there.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

OUTSIDE = "outside the theorem's regime"


@dataclass(frozen=True)
class Verdict:
    """One checked prediction: claim, theorem, condition, settings, criterion, measurement, status."""
    id: str
    claim: str                 # the prediction, in words
    theorem: str               # where it comes from in the paper (theorem, corollary, figure); "-": none
    condition: str             # the theorem's condition (its regime), in words
    settings: dict = field(hash=False)   # the settings used, to set beside the condition
    in_regime: Optional[bool]  # do the settings satisfy the condition? None: no condition applies
    criterion: str             # the condition that counts as holding, with its tolerance
    measured: dict = field(hash=False)   # the numbers behind the verdict
    passed: Optional[bool]     # None: reported, not judged (an observation, open, or outside the regime)
    note: str = ""

    @property
    def status(self) -> str:
        """PASS, FAIL, or open when the verdict is reported but not judged."""
        return "open" if self.passed is None else ("PASS" if self.passed else "FAIL")

    @property
    def regime_text(self) -> str:
        """Whether the settings satisfy the theorem's condition, in words ('' when none applies)."""
        return {True: "in the theorem's regime", False: OUTSIDE, None: ""}[self.in_regime]

    def measured_text(self) -> str:
        """The measured numbers as 'key = value; ...'."""
        return "; ".join(f"{k} = {fmt(x)}" for k, x in self.measured.items())

    def settings_text(self) -> str:
        """The settings as 'key value, ...'."""
        return ", ".join(f"{k} {fmt(x)}" for k, x in self.settings.items())

    def claim_text(self) -> str:
        """The claim with its note in parentheses."""
        return self.claim + (f" ({self.note})" if self.note else "")

    def condition_text(self) -> str:
        """The condition, the settings beside it, and whether they satisfy it."""
        parts = [self.condition]
        if self.settings:
            parts.append(f"settings: {self.settings_text()}")
        if self.regime_text:
            parts.append(f"**{self.regime_text}**" if self.in_regime is False else self.regime_text)
        return "; ".join(p for p in parts if p)

    def to_dict(self, brief: bool = False) -> dict:
        """Every field, the status and the regime in words; brief: the index and --json."""
        if brief:
            return {"id": self.id, "status": self.status, "claim": self.claim, "theorem": self.theorem,
                    "in_regime": self.in_regime, "measured": self.measured}
        return {**dataclasses.asdict(self), "status": self.status, "regime": self.regime_text}

    def markdown_row(self) -> str:
        """The verdict as one row of a Markdown table."""
        cells = (f"**{self.status}**", self.claim_text(), self.theorem, self.condition_text(), self.criterion,
                 self.measured_text())
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


MARKDOWN_HEADER = ("| verdict | prediction | theorem | condition, settings, regime | criterion | measured |\n"
                   "|---|---|---|---|---|---|")


def judged(in_regime: Optional[bool], passed: bool) -> Optional[bool]:
    """A verdict's `passed`: None outside the theorem's regime (reported, not judged)."""
    return None if in_regime is False else passed


def count(verdicts) -> dict[str, int]:
    """How many verdicts are PASS, FAIL and open."""
    return {status: sum(v.status == status for v in verdicts) for status in ("PASS", "FAIL", "open")}


def fmt(value: Any, digits: int = 4) -> str:
    """A number as a table shows it: `digits` significant digits, scientific when very small or large."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt(v, digits) for v in value) + ")"
    return str(value)
