"""lambda_1 measured during training (`measure.every`) against the method's stability threshold
(samcli/sharpness/stability.py): the points for the training-curves plot and the fraction of the
measured points above it, per configuration."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

from ..sharpness.stability import stability_threshold, threshold_source

if TYPE_CHECKING:
    from .rundir import RunRecord


def threshold_points(record: RunRecord) -> list[tuple[float, float, Optional[float]]]:
    """(epoch, lambda_1, threshold or None) at each point where lambda_1 was measured during training;
    the threshold at the learning rate scheduled for that step and, for SAM, the gradient norm measured there."""
    from ..train import lr_factor
    o, steps = record.config.get("optimizer", {}), record.config.get("steps", 0)
    points = []
    for h in record.history:
        lam, epoch, step = h.get("sharp_lambda_1"), h.get("epoch"), h.get("step")
        if not all(isinstance(v, (int, float)) for v in (lam, epoch, step)):
            continue
        lr = o.get("lr", 0.0) * lr_factor(o.get("schedule", "constant"), max(step - 1, 0), steps,
                                          o.get("milestones", []), o.get("gamma", 0.1))
        threshold = stability_threshold(o.get("method", ""), lr, o.get("rho", 0.0), o.get("momentum", 0.0),
                                        o.get("nesterov", False), h.get("sharp_grad_norm"))
        points.append((float(epoch), float(lam), threshold))
    return points


def above_threshold_notes(records: Iterable[RunRecord]) -> list[str]:
    """Per configuration with lambda_1 measured during training: how many measured points lay above the
    stability threshold, and which formula it is (or that none is stated)."""
    by_label: dict[str, list] = {}
    sources: dict[str, str] = {}
    for r in records:
        points = threshold_points(r)
        if points:
            by_label.setdefault(r.label, []).extend(points)
            o = r.config.get("optimizer", {})
            sources[r.label] = threshold_source(o.get("method", ""), o.get("momentum", 0.0), o.get("nesterov", False))
    notes = []
    for label, points in by_label.items():
        judged = [(lam, t) for _, lam, t in points if t is not None]
        if not judged:
            notes.append(f"{label}: lambda_1 measured during training; {sources[label]}")
            continue
        above = sum(lam > t for lam, t in judged)
        notes.append(f"{label}: lambda_1 above its stability threshold {sources[label]} at {above} of "
                     f"{len(judged)} points measured during training ({above / len(judged):.2f})")
    return notes
