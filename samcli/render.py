"""Rich renderings of samcli's result values for the terminal (the CLI prints them; nothing here computes)."""
from __future__ import annotations

from rich.table import Table


def sharpness_table(report) -> Table:
    """A SharpnessReport as one rich table: each number beside its diagnostics, seconds per part below."""
    table = Table(title=f"sharpness at rho={report.rho} on {report.examples} examples, D={report.parameters} "
                        f"(model in {report.mode} mode)")
    table.add_column("notion")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("diagnostics")

    def row(notion, name, value, note=""):
        table.add_row(notion, name, "-" if value is None else f"{value:.6g}", note)
    w, a, v, s, e = report.worst, report.ascent, report.average, report.stochastic, report.exact
    row("", "loss L(x)", report.loss)
    if w:
        row("worst", "lambda_1 (Lanczos)", w.eigenvalues[0],
            f"residual {w.residuals[0]:.2g} (error <~ {w.error_bound:.1g}), "
            f"{'converged' if w.converged else 'NOT converged'} in {w.lanczos_iterations} its")
        row("worst", "limit rho^2 lambda_1 / 2", w.limit)
        row("worst", "R^Max_rho", w.finite, f"ascent on the sphere, {w.finite_restarts} restarts, "
            f"{w.finite_iterations} gradients" + _restarts(w.restart_values))
    if a:
        row("ascent", "R^Asc_rho", a.value, f"||g|| = {a.grad_norm:.3g}")
        row("ascent", "Rayleigh n^T H n", a.rayleigh, "n = g/||g||")
    if v:
        row("average", "Tr(H)", v.trace, f"+- {v.trace_stderr:.2g} ({v.trace_method}, {v.trace_matvecs} HVPs)")
        row("average", "limit rho^2 Tr / (2D)", v.limit)
        if v.finite is not None:
            row("average", "R^Avg_rho", v.finite, f"+- {v.finite_stderr:.2g} ({v.directions} directions)")
    if report.alignment is not None:
        row("", "|cos(g, v_1)|", report.alignment, "gradient / top-eigenvector alignment")
    if s:
        row("per-example", "E_k lambda_1(H_k)", s.mean_lambda_1, f"+- {s.stderr_lambda_1:.2g} over {s.examples} examples")
        row("per-example", "E_k R^Asc_k", s.mean_ascent, f"+- {s.stderr_ascent:.2g}")
    if e:
        row("exact", "lambda_1 / lambda_M / Tr", e.lambda_1, f"lambda_M {e.lambda_m:.6g}, Tr {e.trace:.6g}, rank {e.rank}")
    ad = report.adaptive
    if ad:
        row("adaptive", "lambda_1(T H T), T = |w|", ad.lambda_1, f"residual {ad.lambda_1_residual:.2g}")
        row("adaptive", f"R^Max at rho={ad.rho:g}", ad.worst, f"{ad.worst_restarts} restarts, {ad.worst_gradients} gradients")
        row("adaptive", "Tr(T H T)", ad.trace, f"+- {ad.trace_stderr:.2g} ({ad.trace_method})")
        row("adaptive", f"R^Avg at rho={ad.rho:g}", ad.average,
            f"+- {ad.average_stderr:.2g} ({ad.directions} directions)" if ad.average_stderr is not None else "")
    table.caption = "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.notion_seconds.items()) + \
        f" (total {report.seconds:.1f})"
    return table


def _restarts(values) -> str:
    """Each restart's value, the one from rho v_1 first: equal ones climbed to the same point."""
    if len(values) < 2:
        return ""
    return f" (from v_1 {values[0]:.4g}; from random starts {', '.join(f'{v:.4g}' for v in values[1:])})"
