"""The study's figures (PNG, matplotlib's Agg backend; nothing is shown on screen)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import pandas as pd

from .table import NOTIONS

if TYPE_CHECKING:
    from .rundir import RunRecord

ACCURACY_PLOT = "accuracy_vs_sharpness.png"
TRAINING_PLOT = "sharpness_during_training.png"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colours(labels: list[str]) -> dict[str, str]:
    plt = _pyplot()
    cycle = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cycle(i % cycle.N) for i, label in enumerate(labels)}


def accuracy_vs_sharpness(runs: pd.DataFrame, path: Path, labels: Optional[list[str]] = None,
                          title: str = "") -> Optional[Path]:
    """Test accuracy against each sharpness notion, one panel per notion, one colour per configuration."""
    notions = [n for n in NOTIONS if n in runs and runs[n].notna().any()]
    if not notions or "test_accuracy" not in runs or runs["test_accuracy"].isna().all():
        return None
    plt = _pyplot()
    labels = labels or list(dict.fromkeys(runs["label"]))
    colours = _colours(labels)
    cols = min(3, len(notions))
    rows = math.ceil(len(notions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    ok = runs[runs["status"] == "completed"]
    skipped = int((runs["status"] != "completed").sum())
    for ax, notion in zip(axes.flat, notions):
        for label in labels:
            part = ok[ok["label"] == label]
            ax.scatter(part[notion], part["test_accuracy"], color=colours[label], label=label, s=28, alpha=0.85)
        values = ok[notion].dropna()
        if len(values) and (values > 0).all() and values.max() / values.min() > 20:
            ax.set_xscale("log")
            from matplotlib.ticker import NullFormatter
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(NOTIONS[notion])
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(notions):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    note = f" ({skipped} runs not completed, not shown)" if skipped else ""
    fig.suptitle((title + ": " if title else "") + "test accuracy vs sharpness, one point per run" + note)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(len(names) / 6), 1, 0.95))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sharpness_during_training(records: Iterable[RunRecord], path: Path, labels: Optional[list[str]] = None,
                              title: str = "") -> Optional[Path]:
    """lambda_1 and Tr over training per configuration (thin line per seed), where measured during training."""
    records = [r for r in records if r.history]
    keys = [k for k in ("sharp_lambda_1", "sharp_trace") if any(k in h for r in records for h in r.history)]
    if not keys:
        return None
    plt = _pyplot()
    labels = labels or list(dict.fromkeys(r.label for r in records))
    colours = _colours(labels)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
    names = {"sharp_lambda_1": "lambda_1", "sharp_trace": "Tr"}
    for ax, key in zip(axes.flat, keys):
        shown, positive = set(), True
        for r in records:
            points = [(h["step"], h[key]) for h in r.history if isinstance(h.get(key), (int, float))
                      and math.isfinite(h[key])]
            if not points:
                continue
            steps, values = zip(*points)
            positive = positive and min(values) > 0
            ax.plot(steps, values, color=colours.get(r.label, "k"), lw=1.2, alpha=0.8,
                    label=None if r.label in shown else r.label)
            shown.add(r.label)
        ax.set_xlabel("step")
        ax.set_ylabel(names[key])
        if positive and shown:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle((title + ": " if title else "") + "sharpness during training (one line per run)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
