"""A verdict: one prediction of the paper, the condition that counts as holding, and what was measured.

The only place that turns a verdict into text or JSON: verdicts.md, results.json, summary.md and the
CLI's table and --json all go through `Verdict`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Verdict:
    id: str
    claim: str                 # the prediction, in words
    source: str                # where it comes from in the paper (theorem, section, figure)
    criterion: str             # the condition that counts as holding, with its tolerance
    measured: dict = field(hash=False)   # the numbers behind the verdict
    passed: Optional[bool]     # None: an open question, reported but not judged
    note: str = ""

    @property
    def status(self) -> str:
        return "open" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def measured_text(self) -> str:
        return "; ".join(f"{k} = {fmt(x)}" for k, x in self.measured.items())

    def claim_text(self) -> str:
        return self.claim + (f" ({self.note})" if self.note else "")

    def to_dict(self, brief: bool = False) -> dict:
        """Every field and the status; brief: id, status, claim and measured (the index and --json)."""
        if brief:
            return {"id": self.id, "status": self.status, "claim": self.claim, "measured": self.measured}
        return {**dataclasses.asdict(self), "status": self.status}

    def markdown_row(self) -> str:
        cells = (f"**{self.status}**", self.claim_text(), self.source, self.criterion, self.measured_text())
        return "| " + " | ".join(cells) + " |"


def count(verdicts) -> dict[str, int]:
    return {status: sum(v.status == status for v in verdicts) for status in ("PASS", "FAIL", "open")}


def fmt(value: Any, digits: int = 4) -> str:
    """A number as a table shows it: `digits` significant digits, scientific when very small or large."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt(v, digits) for v in value) + ")"
    return str(value)
