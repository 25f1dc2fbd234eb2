"""PNG plots of the paper studies (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .trajectory import COLORS, LABELS  # noqa: E402


def _save(fig, path: Path) -> list[str]:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path.name]


# ---- figure1 ------------------------------------------------------------------------------------------

def figure1_trajectories(path: Path, toy, runs, flows, minimizers, cfg) -> list[str]:
    """Each run's (x1, x2) path over contours of F1, F2 and F1 + F2, flows dashed; the file names."""
    xs = [float(t[0]) for run in runs.values() for t in run.thetas] + [p[0] for p in minimizers.values()]
    ys = [float(t[1]) for run in runs.values() for t in run.thetas] + [p[1] for p in minimizers.values()]
    pad_x, pad_y = 0.2 * (max(xs) - min(xs) + 0.2), 0.2 * (max(ys) - min(ys) + 0.2)
    gx = torch.linspace(min(xs) - pad_x, max(xs) + pad_x, 160, dtype=torch.float64)
    gy = torch.linspace(min(ys) - pad_y, max(ys) + pad_y, 160, dtype=torch.float64)
    X, Y = torch.meshgrid(gx, gy, indexing="xy")
    with torch.no_grad():
        f1, f2 = toy.values(X, Y)
    fields = {"F1 (lambda_1 / 2)": f1, "F2 (lambda_M / 2)": f2, "F1 + F2 (Tr / 2)": f1 + f2}
    marks = {"argmin F1": ("*", "tab:blue"), "argmin F2": ("P", "tab:green"), "argmin F1+F2": ("X", "tab:red")}
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    for ax, (title, values) in zip(axes, fields.items()):
        cs = ax.contour(X.numpy(), Y.numpy(), values.numpy(), levels=18, cmap="viridis", linewidths=0.7)
        ax.clabel(cs, fontsize=6)
        for method, run in runs.items():
            pts = np.array([[float(t[0]), float(t[1])] for t in run.thetas])
            ax.plot(pts[:, 0], pts[:, 1], color=COLORS[method], lw=1.6, label=LABELS[method])
            ax.plot(pts[-1, 0], pts[-1, 1], "o", color=COLORS[method], ms=5)
        for method, points in flows.items():
            p = points.numpy()
            name = {"sam-full": "flow -1/2 P grad lambda_1", "sam-1": "flow -1/2 P grad Tr"}[method]
            ax.plot(p[:, 0], p[:, 1], "--", color="black", lw=1.1, alpha=0.8,
                    label=name if ax is axes[0] else None)
        for name, (marker, color) in marks.items():
            x, y = minimizers[name]
            ax.plot(x, y, marker, color=color, ms=13, mec="black", label=name if ax is axes[0] else None)
        ax.plot(cfg.start[0], cfg.start[1], "s", color="black", ms=6, label="start" if ax is axes[0] else None)
        ax.set_title(f"contours of {title}")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_aspect("equal", adjustable="box")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(f"Figure 1 toy ({toy.name}): lr {cfg.lr}, rho {cfg.rho}, {cfg.steps} steps; "
                 "dashed: the paper's limiting flows from Phi(x0)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path.name]


def figure1_sharpness(path: Path, runs, tau_per_step: float) -> list[str]:
    """lambda_1, lambda_M, Tr and the alignment of each run against tau; the file names."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    keys = [("lambda_1", "lambda_1 (sharpness tool, exact)"), ("lambda_m", "lambda_M"), ("trace", "Tr(H)"),
            ("alignment", "|cos(g, v_1)|")]
    for ax, (key, title) in zip(axes, keys):
        for method, run in runs.items():
            pts = [(s, r[key]) for s, r in zip(run.steps, run.records) if key in r and r[key] is not None]
            if pts:
                s, v = zip(*pts)
                ax.plot(np.array(s) * tau_per_step, v, "o-", ms=3, color=COLORS[method], label=LABELS[method])
            if key != "alignment":
                g = [(s, r[f"{key}_gamma"]) for s, r in zip(run.steps, run.records)]
                s, v = zip(*g)
                ax.plot(np.array(s) * tau_per_step, v, "-", lw=0.7, alpha=0.5, color=COLORS[method])
        ax.set_title(title)
        ax.set_xlabel("tau = eta rho^2 t")
    axes[0].legend(fontsize=7)
    fig.suptitle("along the way. dots: the sharpness tool (exact Hessian at the projection of the iterate onto Gamma; "
                 "alignment at the iterate); thin lines: closed forms 2 F1, 2 F2, 2 (F1 + F2) there")
    return _save(fig, path)


def figure1_gap(path: Path, rows, pairs) -> list[str]:
    """Each method's gap |Phi(x_t) - X(tau)| to its flow for every (lr, rho) pair; the file names."""
    methods = sorted({r["method"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for lr, rho in pairs:
            pts = [(r["tau"], r["gap"]) for r in rows if r["method"] == method and r["lr"] == lr and r["rho"] == rho]
            t, g = zip(*pts)
            ax.plot(t, g, "o-", label=f"lr {lr:.3g}, rho {rho:.3g}")
        ax.set_title(f"{method}: |Phi(x_t) - X(tau)|")
        ax.set_xlabel("tau = eta rho^2 t")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    return _save(fig, path)


# ---- quadratic ------------------------------------------------------------------------------------------

def quadratic_convergence(path: Path, cases) -> list[str]:
    """The radius error and 1 - |cos(x_t, v_1)| against the step for each case; the file names."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for case in cases:
        steps = np.array(case["steps"])
        label = f"lr {case['lr']}, rho {case['rho']} (eta lambda_1 = {case['eta_lambda_1']:.2g})"
        err = np.abs(np.array(case["norms"]) - case["predicted"]) / case["predicted"]
        axes[0].semilogy(steps, np.maximum(err, 1e-17), label=label)
        axes[1].semilogy(steps, np.maximum(1 - np.array(case["cosines"]), 1e-17), label=label)
    axes[0].set_title("| ||x_t|| - eta rho lambda_1/(2 - eta lambda_1) | / prediction")
    axes[1].set_title("1 - |cos(x_t, v_1)|")
    for ax in axes:
        ax.set_xlabel("step t")
        ax.legend(fontsize=8)
    return _save(fig, path)


# ---- timescale -----------------------------------------------------------------------------------------

def timescale_drift(path: Path, curves, target: float) -> list[str]:
    """Drift along Gamma against steps and tau for each method and rho; the file names."""
    methods = sorted({c["method"] for c in curves}, reverse=True)
    fig, axes = plt.subplots(len(methods), 2, figsize=(12, 4 * len(methods)), squeeze=False)
    for row, method in zip(axes, methods):
        for c in (c for c in curves if c["method"] == method):
            steps = np.array(c["steps"])
            row[0].plot(steps, c["drift"], label=f"rho {c['rho']}")
            row[1].plot(steps * c["lr"] * c["rho"] ** 2, c["drift"], label=f"rho {c['rho']}")
        for ax, xlabel in zip(row, ("step t", "tau = eta rho^2 t")):
            ax.axhline(target, color="black", ls=":", lw=0.8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("drift along Gamma")
            ax.set_title(f"{method}")
            ax.legend(fontsize=8)
        row[0].set_xscale("log")
    return _save(fig, path)


# ---- network / batch size ------------------------------------------------------------------------------

def network_curves(path: Path, runs: dict, keys, title: str, labels=None, colors=None) -> list[str]:
    """The recorded `keys` of each run against the step, one panel per key; the file names."""
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    axes = axes.flatten()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, (key, name) in zip(axes, keys):
        for method, run in runs.items():
            pts = [(s, r[key]) for s, r in zip(run.steps, run.records) if r.get(key) is not None]
            if not pts:
                continue
            s, v = zip(*pts)
            label = (labels or LABELS).get(method, method)
            ax.plot(s, v, "o-", ms=3, label=label, color=(colors or COLORS).get(method))
        ax.set_title(name)
        ax.set_xlabel("step (after the interpolating point)")
        if key in ("train_loss",):
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def batchsize_summary(path: Path, rows) -> list[str]:
    """Tr, lambda_1 and both alignments against the batch size; the file names."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.0))
    xs = [r["n_batch"] for r in rows]
    for ax, (key, name) in zip(axes, [("lambda_1", "lambda_1"), ("trace", "Tr(H)"),
                                       ("alignment", "|cos(g, v_1)| full data"),
                                       ("batch_alignment", "E_B |cos(g_B, v_1(H_B))|")]):
        ax.plot(xs, [r[key] for r in rows], "o-", label="end")
        if key in ("lambda_1", "trace"):
            ax.axhline(rows[0][f"{key}_start"], color="black", ls=":", label="interpolating start")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return _save(fig, path)


def network_study(path: Path, runs: dict, drift_rows, tau_per_step: float, title: str) -> list[str]:
    """lambda_1, Tr, alignment and train loss against tau; the drift cosines with both flows per interval."""
    keys = [("lambda_1", "lambda_1 (Lanczos)"), ("trace_ggn", "Tr (Gauss-Newton, exact)"),
            ("alignment", "|cos(g, v_1)|"), ("train_loss", "train loss")]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.4))
    axes = axes.flatten()
    for ax, (key, name) in zip(axes, keys):
        for method in ("sam-full", "sam-1"):
            pts = [(s * tau_per_step, r[key]) for s, r in zip(runs[method].steps, runs[method].records)
                   if r.get(key) is not None]
            if pts:
                t, v = zip(*pts)
                ax.plot(t, v, "o-", ms=3, color=COLORS[method], label=LABELS[method])
        ax.set_title(name)
        ax.set_xlabel("tau = eta rho^2 t")
        if key == "train_loss":
            ax.set_yscale("log")
    for ax, key, name in ((axes[4], "cos_lambda_1", "cos(drift, -P grad lambda_1)"),
                          (axes[5], "cos_trace", "cos(drift, -P grad Tr)")):
        for method in ("sam-full", "sam-1"):
            pts = [((r["tau from"] + r["tau to"]) / 2, r[key]) for r in drift_rows if r["method"] == LABELS[method]]
            if pts:
                t, v = zip(*pts)
                ax.plot(t, v, "o-", ms=4, color=COLORS[method], label=LABELS[method])
        ax.axhline(1.0, color="black", lw=0.6, ls=":")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(name + " per interval")
        ax.set_xlabel("tau (interval midpoint)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def alignment_ladder(path: Path, rungs, boundary: float) -> list[str]:
    """SAM's |cos(g, v_1)| along each rung of the rho/eta ladder; the file names."""
    fig, ax = plt.subplots(1, 1, figsize=(7.5, 4.6))
    for rung in rungs:
        inside = rung["rho/eta"] <= boundary
        s, a = zip(*[(s, v) for s, v in rung["curve"] if v is not None]) if rung["curve"] else ((), ())
        ax.plot(s, a, "o-" if inside else "s--", ms=4,
                label=f"rho/eta = {rung['rho/eta']:.3g} (lr {rung['lr']}, rho {rung['rho']})"
                      f"{'' if inside else ': outside the regime'}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("SAM step (from the interpolating point)")
    ax.set_ylabel("|cos(g, v_1)|")
    ax.set_title(f"full-batch SAM alignment on a ladder of rho/eta (Thm 4.5 claims it for rho/eta small; "
                 f"judged at <= {boundary})", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


# ---- bias --------------------------------------------------------------------------------------------

def bias_endpoints(path: Path, toy, rows, minimizers, start) -> list[str]:
    """Left: the minimizers of each L_rho over contours of F1 + F2, with the three targets. Right: distance to
    the target and |gap| against rho."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    xs = [r["x1"] for r in rows] + [p[0] for p in minimizers.values()] + [start[0]]
    ys = [r["x2"] for r in rows] + [p[1] for p in minimizers.values()] + [start[1]]
    gx = torch.linspace(min(xs) - 0.3, max(xs) + 0.3, 120, dtype=torch.float64)
    gy = torch.linspace(min(ys) - 0.3, max(ys) + 0.3, 120, dtype=torch.float64)
    X, Y = torch.meshgrid(gx, gy, indexing="xy")
    with torch.no_grad():
        f1, f2 = toy.values(X, Y)
    axes[0].contour(X.numpy(), Y.numpy(), (f1 + f2).numpy(), levels=15, cmap="viridis", linewidths=0.6)
    colors = {"max": "tab:blue", "asc": "tab:green", "avg": "tab:red"}
    for notion, color in colors.items():
        pts = [(r["x1"], r["x2"]) for r in rows if r["notion"] == notion]
        if pts:
            axes[0].plot(*zip(*pts), "o", color=color, ms=6, alpha=0.7, label=f"argmin L^{notion.capitalize()}_rho")
    for name, marker in (("argmin F1", "*"), ("argmin F2", "P"), ("argmin F1+F2", "X")):
        axes[0].plot(*minimizers[name], marker, color="black", ms=12, mfc="none", label=name)
    axes[0].plot(start[0], start[1], "s", color="gray", ms=6, label="start")
    axes[0].set_title("minimizers of L_rho (all rho) over contours of F1 + F2")
    axes[0].set_aspect("equal", adjustable="box")
    axes[0].legend(fontsize=7)
    for notion, color in colors.items():
        mine = [r for r in rows if r["notion"] == notion]
        if mine:
            rho = [r["rho"] for r in mine]
            axes[1].loglog(rho, [max(r["distance"], 1e-17) for r in mine], "o-", color=color,
                           label=f"{notion}: distance to {mine[0]['target']}")
            axes[1].loglog(rho, [max(abs(r["gap"]), 1e-17) for r in mine], "s--", color=color,
                           label=f"{notion}: |L_rho/rho^2 - infimum|")
    axes[1].set_xlabel("rho")
    axes[1].set_title("as rho shrinks")
    axes[1].legend(fontsize=7)
    return _save(fig, path)


# ---- corollaries -------------------------------------------------------------------------------------

def corollary_bands(path: Path, bands, limits) -> list[str]:
    """Left: each band's deviation divided by its rate, against rho (bounded: the O(.) holds). Right: Thm 5.3's
    ratios to the trace against rho."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for kind in dict.fromkeys(r["band"] for r in bands):
        mine = [r for r in bands if r["band"] == kind]
        axes[0].loglog([r["rho"] for r in mine], [r["deviation / rate"] for r in mine], "o-", label=kind)
    axes[0].set_xlabel("rho (eta shrinks with it)")
    axes[0].set_title("max |sharpness - limit| / the corollary's rate")
    axes[0].legend(fontsize=7)
    for key in ("worst / (rho^2/2 Tr)", "ascent / (rho^2/2 Tr)", "average 2D / (rho^2 Tr)"):
        axes[1].semilogx([r["rho"] for r in limits], [r[key] for r in limits], "o-", label=key)
    axes[1].axhline(1.0, color="black", lw=0.6, ls=":")
    axes[1].set_xlabel("rho")
    axes[1].set_title("Thm 5.3 on the network, at a point of Gamma")
    axes[1].legend(fontsize=7)
    return _save(fig, path)
