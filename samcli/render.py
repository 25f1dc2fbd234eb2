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

    for notion, quantity, value, note in report.rows():     # each notion's own lines, registry order
        table.add_row(notion, quantity, "-" if value is None else f"{value:.6g}", note)
    table.caption = "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.notion_seconds.items()) + \
        f" (total {report.seconds:.1f})"
    return table
