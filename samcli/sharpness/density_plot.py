"""density.png: the Hessian's eigenvalue density on a log scale, with its error band, lambda_1 and the bulk.

Its own module, importing nothing of samcli's, so the report's `draw` can reach it without an
import cycle (density.py builds the result from report.py)."""
from __future__ import annotations

from typing import Any

import torch


def plot_density(result: Any, path) -> None:
    """Draw a DensitySpectrum (not imported: report.py imports this module) as the log-density over
    eigenvalue (band: +- 2 standard errors over the probes) with lambda_1 and the bulk marked, a PNG at
    `path` (any file name: the format is given, not read from its suffix)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, nothing shown on screen
    grid = torch.tensor(result.grid, dtype=torch.float64)
    values = torch.tensor(result.values, dtype=torch.float64)
    stderr = torch.tensor(result.values_stderr, dtype=torch.float64)
    floor = max(values.max().item() * 1e-8, 1e-300)        # log scale: the far tails are cut there
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.fill_between(grid.numpy(), (values - 2 * stderr).clamp_min(floor).numpy(),
                    (values + 2 * stderr).clamp_min(floor).numpy(), color="C0", alpha=0.25, linewidth=0,
                    label=rf"$\pm 2$ s.e. over {result.probes} probes")
    ax.plot(grid.numpy(), values.clamp_min(floor).numpy(), color="C0", label="density (SLQ)")
    ax.axvspan(result.bulk_low, result.bulk_high, color="C2", alpha=0.12,
               label=f"bulk ({result.bulk_mass:.0%} of the mass)")
    ax.axvline(result.lambda_1, color="C3", linestyle="--", label=rf"$\lambda_1 = {result.lambda_1:.4g}$")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"Hessian eigenvalue density: {result.probes} probes x {max(result.steps)} Lanczos steps, "
                 rf"Gaussian $\sigma = {result.sigma:.2g}$", fontsize=9)
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
