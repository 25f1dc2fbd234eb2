"""What samcli prints: rich renderings of the result values (nothing here computes) and the one-line
messages, with the streams they go to.

Results (tables, --json) go to stdout, so `samcli ... > file` keeps them; everything about the run
(progress, notes, warnings, errors, the files written) goes to stderr.
"""
from __future__ import annotations

import json
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import near_miss, short_repr

stderr = Console(stderr=True)
LINE_LIMIT = 400          # characters: the cap on any one line samcli prints about bad input


def stdout() -> Console:
    """A console on stdout; wide when stdout is a file or a pipe, so tables are not wrapped there."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 240))


def one_line(message: str) -> str:
    """The message on one line, cut to LINE_LIMIT characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= LINE_LIMIT else text[:LINE_LIMIT - 3] + "..."


def error(message: str) -> None:
    """Print the message as one red `error:` line on stderr, cut to LINE_LIMIT characters."""
    stderr.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def warn(line: Optional[str]) -> None:
    """A line the user must see even with --quiet or --json (stderr, so --json stays parseable)."""
    if line:
        stderr.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def info(line: str) -> None:
    """Print a progress or status line on stderr (stdout stays for results)."""
    stderr.print(escape(line), highlight=False, soft_wrap=True)


def print_json(value) -> None:
    """Print a value as indented JSON on stdout (anything JSON lacks as its str)."""
    print(json.dumps(value, indent=2, default=str))


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


# ---- what each command prints ------------------------------------------------------------------

def train_result(result, quiet: bool, as_json: bool) -> None:
    """`samcli train`: the summary as JSON (stdout), or one status line naming the run directory (stderr)."""
    if as_json:
        print_json({"run_dir": str(result.run_dir), **result.summary})
    elif not quiet and result.status == "completed":
        final = result.summary["final"]
        acc = final.get("test_accuracy")
        info(f"{result.status}: train loss {final.get('train_loss', float('nan')):.4g}"
             + (f", test accuracy {acc:.4f}" if acc is not None else "")
             + f" in {result.summary['seconds']:.1f}s -> {result.run_dir}")


def sharpness_result(report, written, as_json: bool) -> None:
    """`samcli sharpness`: the report (stdout: a table or JSON), then where it was written (stderr)."""
    if as_json:
        print_json(report.to_dict())
    else:
        stdout().print(sharpness_table(report), soft_wrap=True)
    if written is not None:
        info(f"written to {written}")


def compare_result(result, baseline) -> None:
    """`samcli compare`: the study table, the correlations and the baseline diff (stdout); notes and
    the files written (stderr)."""
    from .study.baseline import display_diff
    from .study.sections import sections
    from .study.table import display as display_table
    out = stdout()
    out.print(frame_table(display_table(result.table), f"study {result.name}"))
    out.print(result.caption, highlight=False)
    for heading, frame, lines in sections(result.report):
        if frame is not None:
            out.print(frame_table(frame, heading))
        else:
            out.print(f"{heading}:", highlight=False)
        for line in lines:
            out.print(escape(line), highlight=False)
    for note in result.notes:
        info(f"note: {note}")
    info("written: " + ", ".join(str(f) for f in result.files))
    if result.baseline_written is not None:
        info(f"baseline written to {result.baseline_written}")
    if result.baseline_diff is not None:
        out.print(frame_table(display_diff(result.baseline_diff), f"baseline {baseline}"))
        info("baseline: all checks hold" if result.baseline_ok else "baseline: REGRESSION")


def compare_outcome(result) -> None:
    """The lines after a study's table: diverged runs (a warning) and failed ones."""
    diverged = int(result.table["diverged"].sum()) if "diverged" in result.table else 0
    warn(f"{diverged} run(s) diverged; the table counts them and the notes say where" if diverged else None)
    if result.failed_runs:
        warn(f"{result.failed_runs} run(s) failed; see the notes above")


def frame_table(frame, title: str) -> Table:
    """A DataFrame of strings as a rich table: the first column left, the numbers right."""
    table = Table(title=title)
    for i, column in enumerate(frame.columns):
        table.add_column(str(column), justify="left" if i == 0 else "right")
    for _, row in frame.iterrows():
        table.add_row(*[str(v) for v in row])
    return table


def verdict_table(result) -> Table:
    """`samcli reproduce`: one study's verdicts, each with its theorem, condition and measured numbers."""
    table = Table(title=f"reproduce {result.name}" + (" (quick)" if result.quick else ""), show_lines=False)
    for column in ("verdict", "prediction", "theorem, condition, settings", "measured"):
        table.add_column(column)
    colors = {"PASS": "green", "FAIL": "red", "open": "yellow"}
    for v in result.verdicts:
        color = "red" if v.failed else ("green" if v.kind == "control" and v.passed is False else colors[v.status])
        table.add_row(f"[{color}]{escape(v.label)}[/]", escape(v.claim_text()),
                      escape(f"{v.theorem}: {v.condition_text().replace('**', '')}"), escape(v.measured_text()))
    return table


def reproduce_result(result) -> None:
    """One study's verdict table (stdout) and where it wrote (stderr), as soon as it finishes."""
    stdout().print(verdict_table(result))
    info(f"{result.name}: {result.seconds:.1f} s -> {result.out_dir}")


# ---- progress (stderr, gone when done) -----------------------------------------------------------

def train_progress(quiet: bool):
    """(a rich progress bar with the live batch loss, its update function), or (None, None) when quiet."""
    if quiet:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=stderr, transient=True)
    task_id = bar.add_task("training", total=None, loss="-")

    def update(step: int, total: int, loss: float) -> None:
        bar.update(task_id, completed=step, total=total, loss=f"{loss:.4f}")
    return bar, update


class StudyProgress:
    """Rich display: the study's bar (runs done of all) and one bar per run in progress."""

    def __init__(self, name: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=stderr, transient=True)
        self.study = self.bar.add_task(f"study {name}: runs", total=None, note="")
        self.runs: dict = {}

    def __call__(self, event) -> None:
        """Show one study event: the plan, a note, a run's start, steps, measurement or end."""
        bar, kind = self.bar, event.kind
        if kind == "plan":
            bar.update(self.study, total=event.total, completed=event.step, note=event.message)
        elif kind == "note":
            bar.console.print(f"note: {escape(event.message)}", highlight=False, soft_wrap=True)
        elif kind == "start" and event.run not in self.runs:
            self.runs[event.run] = bar.add_task(f"  {event.label} seed {event.seed}", total=None,
                                                note=event.message or "training")
        elif kind == "step" and event.run in self.runs:
            bar.update(self.runs[event.run], completed=event.step, total=event.total, note="training")
        elif kind == "measure" and event.run in self.runs:
            bar.update(self.runs[event.run], note="measuring sharpness")
        elif kind == "done":
            task = self.runs.pop(event.run, None)
            if task is not None:
                bar.remove_task(task)
            bar.advance(self.study)
            bar.update(self.study, note=f"last: {event.label} seed {event.seed} {event.status}")
            if event.status == "failed":
                bar.console.print(escape(f"{event.label} seed {event.seed} failed: {event.message}"),
                                  highlight=False)


# ---- errors the engine did not word: the file system, the command line's own parsing ----------------

def os_error_message(err: Exception) -> str:
    """A file-system error the engine did not foresee (a file where a directory should be, no permission,
    a file that is not UTF-8), naming the path."""
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
    filename = getattr(err, "filename", None)
    where = f" {filename}" if filename else ""
    why = getattr(err, "strerror", None) or type(err).__name__
    return f"cannot use{where}: {why}; check the path and its permissions"


def unknown_command(name: str, commands) -> str:
    """The one-line error for a command samcli does not have, with the nearest one and the list of commands."""
    near = near_miss(name, commands)
    return (f"samcli has no command {short_repr(name)}" + (f" (did you mean {near}?)" if near else "")
            + f"; the commands are {', '.join(commands)}")


# the words for a value of the wrong type (pydantic's error types, under Typer's BadParameter)
_EXPECTED = {"float_parsing": "a number", "float_type": "a number", "int_parsing": "an integer",
             "int_from_float": "an integer", "int_type": "an integer", "bool_parsing": "true or false"}


def usage_message(err, command: str) -> str:
    """A Click/Typer usage error (an unknown option, a value of the wrong type, a missing argument) in
    samcli's words. Read by class name and attributes: Typer vendors its own copy of Click."""
    kind, param = type(err).__name__, getattr(err, "param", None)
    see = f"; see '{command} --help'"
    ctx = getattr(err, "ctx", None)
    if kind == "NoSuchOption":
        names = [*_option_names(ctx.command), *ctx.help_option_names] if ctx is not None else []
        near = near_miss(err.option_name, names)
        return f"{command} has no option {err.option_name}" + (f" (did you mean {near}?)" if near else "") + see
    if kind == "MissingParameter" and param is not None:
        what = (getattr(param, "help", None) or "").rstrip(".")
        return f"{command} needs {_param_name(param)}" + (f" ({what[:1].lower()}{what[1:]})" if what else "") + see
    if kind == "BadParameter" and param is not None:
        first = _first_validation_error(err)
        if first and first.get("type") in _EXPECTED:
            value = first.get("input")
            return f"{_param_name(param)}={short_repr(value)} must be {_EXPECTED[first['type']]}{_integral(value)}{see}"
        return f"{_param_name(param)}: {err.format_message()}{see}"
    option = getattr(err, "option_name", None)
    text = err.format_message()
    if option and "requires an argument" in text:
        return f"{option} needs a value{see}"
    if option and "does not take a value" in text:
        return f"{option} is a flag and takes no value{see}"
    text = text.strip().rstrip(".")
    return f"{command}: {text[:1].lower()}{text[1:]}{see}"


def _option_names(command) -> list[str]:
    return [name for p in getattr(command, "params", ()) if getattr(p, "param_type_name", "") == "option"
            for name in [*p.opts, *getattr(p, "secondary_opts", ())]]


def _param_name(param) -> str:
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name).upper()
    opts = list(getattr(param, "opts", ())) or [f"--{param.name}"]
    return max(opts, key=len)


def _first_validation_error(err) -> Optional[dict]:
    errors = getattr(err.__cause__, "errors", None)
    try:
        return errors()[0] if callable(errors) else None
    except (IndexError, TypeError):
        return None


def _integral(value) -> str:
    """' (write 1000)' for an integer typed as a float, e.g. --steps 1e3."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return f" (write {int(number)})" if number.is_integer() and abs(number) < 1e15 else ""
