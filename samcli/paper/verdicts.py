"""A verdict: one prediction of the paper, the theorem it comes from and that theorem's condition, the
settings used, whether they satisfy the condition, the criterion that counts as holding, and what was
measured.

The only place that turns a verdict into text or JSON: verdicts.md, results.json, summary.md and the
CLI's table and --json all go through `Verdict`. A claim checked outside its theorem's regime says so
(in_regime False) and is reported, not judged: the theorem makes no claim there. A claim whose run cannot
judge it (not yet in Phase II, not converged) is "open: <reason>", never FAIL.

A verdict of kind "control" is a negative control: the same criterion applied to dynamics it must reject
(the SAM drift test on 1-SAM's trajectory, the alignment test on GD). Its `passed` is the criterion's
outcome there, so it shows as "control FAIL" when the criterion rejects, as it must; a control that
PASSES is a failure of the test itself and fails its study (`failed`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

OUTSIDE = "outside the theorem's regime"
CLAIM, CONTROL = "claim", "control"


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
    reason: str = ""           # why an open verdict is not judged ("not in Phase II", "not converged, ...")
    kind: str = CLAIM          # "claim", or "control": the criterion on dynamics it must reject

    @property
    def status(self) -> str:
        """PASS, FAIL, or open when the verdict is reported but not judged (for a control: the criterion's
        outcome on the dynamics it must reject)."""
        return "open" if self.passed is None else ("PASS" if self.passed else "FAIL")

    @property
    def failed(self) -> bool:
        """Whether this verdict fails its study: a claim that FAILs, or a control that PASSes (the
        criterion accepted dynamics it must reject, so it cannot tell right from wrong)."""
        return self.passed is (True if self.kind == CONTROL else False)

    @property
    def label(self) -> str:
        """The status as tables show it: "open: <reason>", "control FAIL (rejected, as it must)", ..."""
        reason = self.reason or (OUTSIDE if self.passed is None and self.in_regime is False else "")
        text = self.status + (f": {reason}" if reason and self.passed is None else "")
        if self.kind != CONTROL:
            return text
        return "control " + text + {True: " (accepted wrong dynamics: the test is broken)",
                                    False: " (rejected, as it must)", None: ""}[self.passed]

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
            return {"id": self.id, "status": self.status, "kind": self.kind, "label": self.label, "claim": self.claim,
                    "theorem": self.theorem, "in_regime": self.in_regime, "measured": self.measured}
        return {**dataclasses.asdict(self), "status": self.status, "label": self.label, "regime": self.regime_text}

    def markdown_row(self) -> str:
        """The verdict as one row of a Markdown table."""
        cells = (f"**{self.label}**", self.claim_text(), self.theorem, self.condition_text(), self.criterion,
                 self.measured_text())
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


MARKDOWN_HEADER = ("| verdict | prediction | theorem | condition, settings, regime | criterion | measured |\n"
                   "|---|---|---|---|---|---|")


def judged(in_regime: Optional[bool], passed: bool) -> Optional[bool]:
    """A verdict's `passed`: None outside the theorem's regime (reported, not judged)."""
    return None if in_regime is False else passed


def count(verdicts) -> dict[str, int]:
    """How many claims are PASS, FAIL and open, and how many controls rejected their wrong dynamics
    ("control FAIL", as they must), accepted them ("control PASS": a broken test) or stayed open."""
    claims = [v for v in verdicts if v.kind != CONTROL]
    controls = [v for v in verdicts if v.kind == CONTROL]
    out = {status: sum(v.status == status for v in claims) for status in ("PASS", "FAIL", "open")}
    out.update({f"control {status}": sum(v.status == status for v in controls) for status in ("FAIL", "PASS", "open")})
    return out


def count_text(verdicts) -> str:
    """The counts in words: "7 pass, 0 fail, 5 open; controls: 4 rejected, 0 accepted (broken), 0 open"."""
    c = count(verdicts)
    text = f"{c['PASS']} pass, {c['FAIL']} fail, {c['open']} open"
    if c["control FAIL"] + c["control PASS"] + c["control open"]:
        text += (f"; controls: {c['control FAIL']} rejected, {c['control PASS']} accepted (broken), "
                 f"{c['control open']} open")
    return text


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
