"""The study's figures (PNG, matplotlib's Agg backend; nothing is shown on screen):
- each sharpness notion against test accuracy, and against the generalization gap (test - train loss),
  one point per run; runs left out of the correlations (missed the target) drawn hollow, never hidden;
- training curves against epochs (steps mean different things at batch size 1 and full batch):
  train loss, test accuracy, and lambda_1 / Tr where they were measured during training."""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

from ..spec.measure import columns
from .correlations import with_gaps
from .edge import threshold_points

if TYPE_CHECKING:
    from matplotlib.lines import Line2D

    from .rundir import RunRecord

ACCURACY_PLOT = "accuracy_vs_sharpness.png"
GAP_PLOT = "gap_vs_sharpness.png"
TRAINING_PLOT = "training_curves.png"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colours(labels: list[str]) -> dict[str, str]:
    plt = _pyplot()
    cycle = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cycle(i % cycle.N) for i, label in enumerate(labels)}


def _panels(count: int, width: float = 4.2, height: float = 3.4):
    plt = _pyplot()
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    return fig, list(axes.flat)[:count]


def _save(fig, path: Path, title: str, legend_rows: int) -> Path:
    plt = _pyplot()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * legend_rows, 1, 0.95))
    path = Path(path)
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".pdf"))          # vector, for a paper
    plt.close(fig)
    return path


def _log_if_spread(ax, values: pd.Series, axis: str = "x") -> None:
    values = values.dropna()
    if len(values) and (values > 0).all() and values.max() / values.min() > 20:
        getattr(ax, f"set_{axis}scale")("log")
        from matplotlib.ticker import NullFormatter
        getattr(ax, f"{axis}axis").set_minor_formatter(NullFormatter())


def sharpness_scatter(runs: pd.DataFrame, path: Path, target: str, target_name: str,
                      labels: Optional[list[str]] = None, title: str = "") -> Optional[Path]:
    """`target` against each sharpness notion, one panel per notion, one colour per configuration;
    completed runs that missed the stop target are hollow (they are out of the correlations)."""
    runs = with_gaps(runs)
    labels_of = {c.key: c.plot_label for c in columns() if c.correlate}
    notions = [n for n in labels_of if n in runs and runs[n].notna().any()]
    if not notions or target not in runs or runs[target].isna().all():
        return None
    labels = labels or list(dict.fromkeys(runs["label"]))
    colours = _colours(labels)
    ok = runs[runs["status"] == "completed"]
    missed = ok["reached"] == 0 if "reached" in ok else pd.Series(False, index=ok.index)
    fig, axes = _panels(len(notions))
    for ax, notion in zip(axes, notions):
        for label in labels:
            mine = ok["label"] == label
            ax.scatter(ok.loc[mine & ~missed, notion], ok.loc[mine & ~missed, target], color=colours[label],
                       label=label, s=28, alpha=0.85)
            if (mine & missed).any():
                ax.scatter(ok.loc[mine & missed, notion], ok.loc[mine & missed, target], facecolors="none",
                           edgecolors=colours[label], s=28)
        _log_if_spread(ax, ok[notion])
        ax.set_xlabel(labels_of[notion])
        ax.set_ylabel(target_name)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    skipped = int((runs["status"] != "completed").sum())
    note = "".join([f"; {int(missed.sum())} missed the target (hollow)" if missed.any() else "",
                    f"; {skipped} not completed, not shown" if skipped else ""])
    return _save(fig, path, (title + ": " if title else "") + f"{target_name} vs sharpness, one point per run"
                 + note, math.ceil(len(names) / 6))


def training_curves(records: Iterable[RunRecord], path: Path, labels: Optional[list[str]] = None,
                    title: str = "") -> Optional[Path]:
    """Train loss, test accuracy and (where measured during training) lambda_1 and Tr against epochs,
    one line per run, one colour per configuration."""
    records = [r for r in records if r.curve or r.history]
    panels = [("curve", k, name) for k, name in (("train_loss", "train loss"), ("test_accuracy", "test accuracy"))
              if any(k in c for r in records for c in r.curve)]
    panels += [("history", k, name) for k, name in (("sharp_lambda_1", "lambda_1 (during training)"),
                                                     ("sharp_trace", "Tr (during training)"))
               if any(k in h for r in records for h in r.history)]
    if not panels:
        return None
    labels = labels or list(dict.fromkeys(r.label for r in records))
    colours = _colours(labels)
    fig, axes = _panels(len(panels), 4.6, 3.4)
    handles: dict[str, Line2D] = {}
    for ax, (source, key, name) in zip(axes, panels):
        values: list[float] = []
        for r in records:
            points = [(p["epoch"], p[key]) for p in getattr(r, source) if isinstance(p.get(key), (int, float))
                      and isinstance(p.get("epoch"), (int, float)) and math.isfinite(p[key])]
            if not points:
                continue
            epochs, ys = zip(*points)
            values += ys
            line, = ax.plot(epochs, ys, color=colours.get(r.label, "k"), lw=1.1, alpha=0.8)
            handles.setdefault(r.label, line)
            if key == "sharp_lambda_1":       # the method's stability threshold, dashed, where one is stated
                edge = [(e, t) for e, _, t in threshold_points(r) if t is not None]
                if edge:
                    ax.plot(*zip(*edge), color=colours.get(r.label, "k"), lw=0.9, ls="--", alpha=0.7)
                    values += [t for _, t in edge]
                    ax.set_title("dashed: stability threshold", fontsize=9)
        if key != "test_accuracy":
            _log_if_spread(ax, pd.Series(values), "y")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    names = [label for label in labels if label in handles]
    if not names:           # no run logged epochs (a RunWriter loop may log steps only): nothing to draw
        _pyplot().close(fig)
        return None
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    return _save(fig, path, (title + ": " if title else "") + "training against epochs (one line per run)",
                 math.ceil(len(names) / 6))


def study_plots(runs: pd.DataFrame, records: list[RunRecord], study_dir: Path, labels: list[str],
                title: str) -> list[Path]:
    """Every figure of a study that has something to show, written into `study_dir`."""
    study_dir = Path(study_dir)
    plots = (sharpness_scatter(runs, study_dir / ACCURACY_PLOT, "test_accuracy", "test accuracy", labels, title),
             sharpness_scatter(runs, study_dir / GAP_PLOT, "loss_gap", "test - train loss", labels, title),
             training_curves(records, study_dir / TRAINING_PLOT, labels, title))
    return [f for p in plots if p is not None for f in (p, p.with_suffix(".pdf"))]
