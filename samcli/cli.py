"""The command line: each command parses its arguments, calls one engine function and renders the result."""
from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .config import DEFAULT_NOTIONS, SamcliError, TrainConfig, apply_override, load_yaml
from .methods import get_method, method_names
from .render import sharpness_table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark Sharpness-Aware Minimization: train, measure sharpness, compare.")
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Benchmark Sharpness-Aware Minimization: train, measure sharpness, compare."""


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2, no traceback."""
    console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def fail_on_os_error(err: Exception) -> None:
    """A file-system error the engine did not foresee (a file where a directory should be, no
    permission, a file that is not UTF-8): one line naming the path, exit code 2."""
    if isinstance(err, UnicodeDecodeError):
        fail(f"a file is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8")
    where = f" {err.filename}" if getattr(err, "filename", None) else ""
    fail(f"cannot use{where}: {err.strerror or type(err).__name__}; check the path and its permissions")


def warn(line: Optional[str]) -> None:
    """A line the user must see even with --quiet or --json (stderr, so --json stays parseable)."""
    if line:
        console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler's time limit, `kill`) ends a training as Ctrl-C does: the loop stops, the
    summary says 'interrupted' with the step, the checkpoint is written. Python's default for SIGTERM
    is to die on the spot, leaving a summary that claims 'running'."""
    if threading.current_thread() is not threading.main_thread():     # only the main thread may set handlers
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def progress_bar(quiet: bool):
    """A rich progress bar with the live batch loss, or nothing when quiet."""
    if quiet:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console, transient=True)
    task_id = bar.add_task("training", total=None, loss="-")

    def update(step: int, total: int, loss: float) -> None:
        bar.update(task_id, completed=step, total=total, loss=f"{loss:.4f}")
    return bar, update


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML train config (defaults apply to missing keys)."),
    set_: List[str] = typer.Option([], "--set", help="Override a key: --set optimizer.rho=0.1 (repeatable)."),
    dataset: Optional[str] = typer.Option(None, help="data.name: mnist1d, digits, synthetic, mnist, cifar10, ..."),
    model: Optional[str] = typer.Option(None, help="model.name: mlp, cnn, resnet, linear, diag-linear."),
    method: Optional[str] = typer.Option(None, help="optimizer.method: " + "; ".join(
                                              f"{name}: {get_method(name).help}" for name in method_names())),
    rho: Optional[float] = typer.Option(None, help="optimizer.rho, the SAM radius."),
    m: Optional[int] = typer.Option(None, help="optimizer.m, the msam group size."),
    batch_size: Optional[str] = typer.Option(None, help="optimizer.batch_size: an integer or 'full'."),
    lr: Optional[float] = typer.Option(None, help="optimizer.lr."),
    momentum: Optional[float] = typer.Option(None, help="optimizer.momentum."),
    steps: Optional[int] = typer.Option(None, help="Number of update steps."),
    seed: Optional[int] = typer.Option(None, help="Seed for initialization, data order and sampling."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    dtype: Optional[str] = typer.Option(None, help="float32 or float64."),
    loss: Optional[str] = typer.Option(None, help="cross-entropy or mse."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: results/runs/<name>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (its files, "
                                                              "sharpness.json included, are removed first)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
):
    """Train one model and write its run directory (config, metrics.jsonl, summary.json, checkpoint).
    Exit code 0: completed; 1: diverged; 2: bad input (nothing trained); 130: interrupted (Ctrl-C, SIGTERM)."""
    from .train import halt_line, train as run_training
    try:
        raw = load_yaml(config) if config else {}
        flags = {"data.name": dataset, "model.name": model, "optimizer.method": method, "optimizer.rho": rho,
                 "optimizer.m": m, "optimizer.lr": lr, "optimizer.momentum": momentum, "steps": steps,
                 "seed": seed, "device": device, "dtype": dtype, "loss": loss}
        if batch_size is not None:
            flags["optimizer.batch_size"] = batch_size if batch_size == "full" else _int(batch_size, "--batch-size")
        for key, value in flags.items():
            if value is not None:
                apply_override(raw, f"{key}={json.dumps(value)}")
        for item in set_:
            apply_override(raw, item)
        cfg = TrainConfig.from_dict(raw)
        bar, update = progress_bar(quiet or as_json)
        with bar or nullcontext(), sigterm_as_interrupt():
            result = run_training(cfg, out, progress=update, overwrite=overwrite)
    except SamcliError as err:
        fail(str(err))
    except (OSError, UnicodeDecodeError) as err:
        fail_on_os_error(err)
    except KeyboardInterrupt:
        warn("interrupted: the metrics so far and a summary marked 'interrupted' (with the step) are in the "
             "run directory")
        raise typer.Exit(130)
    warn(halt_line(result.summary))
    if as_json:
        print(json.dumps({"run_dir": str(result.run_dir), **result.summary}, indent=2))
    elif not quiet and result.status == "completed":
        final = result.summary["final"]
        acc = final.get("test_accuracy")
        console.print(f"{result.status}: train loss {final.get('train_loss', float('nan')):.4g}"
                      + (f", test accuracy {acc:.4f}" if acc is not None else "")
                      + f" in {result.summary['seconds']:.1f}s -> {escape(str(result.run_dir))}")
    if result.status == "diverged":
        raise typer.Exit(1)


def _sharpness(run_dir: Path, rho: float, samples: str, notions: List[str], exact: bool, seed: int,
               as_json: bool, settings: List[str] = ()) -> None:
    from .study.rundir import measure_and_record
    try:
        count = None if samples == "all" else _int(samples, "--samples", "all")
        knobs: dict = {}
        for item in settings:
            apply_override(knobs, item)
        report, written, warning = measure_and_record(run_dir, rho=rho, notions=notions or DEFAULT_NOTIONS,
                                                      samples=count, seed=seed, exact=exact, **knobs)
    except SamcliError as err:
        fail(str(err))
    except (OSError, UnicodeDecodeError) as err:
        fail_on_os_error(err)
    warn(warning)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        console.print(sharpness_table(report), soft_wrap=True)
        console.print(f"written to {written}")


@app.command()
def sharpness(
    run_dir: Path = typer.Argument(..., help="A run directory written by `samcli train`."),
    rho: float = typer.Option(0.05, help="Perturbation radius."),
    samples: str = typer.Option("all", help="Examples to measure on: an integer (seeded subset) or 'all'."),
    notions: List[str] = typer.Option([], "--notions", help="worst, ascent, average, adaptive (repeatable; default the first three)."),
    exact: bool = typer.Option(False, "--exact", help="Also the dense float64 Hessian's spectrum (small models)."),
    seed: int = typer.Option(0, help="Seed for every stochastic estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    set_: List[str] = typer.Option([], "--set", help="A measurement setting, e.g. --set ascent_restarts=1 "
                                                     "(repeatable; the keys of samcli.sharpness.Settings)."),
):
    """Measure a trained run by the three notions of sharpness; writes sharpness.json."""
    _sharpness(run_dir, rho, samples, notions, exact, seed, as_json, set_)


@app.command("measure-sharpness", hidden=True)
def measure_sharpness_alias(
    run_dir: Path = typer.Argument(...), rho: float = typer.Option(0.05), samples: str = typer.Option("all"),
    notions: List[str] = typer.Option([], "--notions"), exact: bool = typer.Option(False, "--exact"),
    seed: int = typer.Option(0), as_json: bool = typer.Option(False, "--json"),
):
    """Same as `samcli sharpness` (the name in the original design)."""
    _sharpness(run_dir, rho, samples, notions, exact, seed, as_json)


def _int(text: str, flag: str, word: str = "full") -> int:
    try:
        return int(text)
    except ValueError:
        fail(f"{flag}={text!r} must be an integer or {word!r}")


# ---- compare: a study of many runs (samcli/study) ----------------------------------------------

@app.command()
def compare(
    study: Optional[Path] = typer.Argument(None, help="Study YAML (default: the study embedded in samcli)."),
    from_: Optional[Path] = typer.Option(None, "--from", help="Re-render tables and plots from a study directory "
                                                               "(no training)."),
    out: Optional[Path] = typer.Option(None, help="Study directory (default results/studies/<name>)."),
    executor: str = typer.Option("local", help="local (processes on this machine) or ray."),
    jobs: Optional[int] = typer.Option(None, help="Local executor: runs at once, each in its own process with "
                                                  "cores/N torch threads (default: one per core, at most 4, on a "
                                                  "CPU machine; 1 when a GPU is visible)."),
    address: Optional[str] = typer.Option(None, help="Ray: cluster address (default: start a local instance)."),
    baseline: Optional[Path] = typer.Option(None, help="Check the table against this baseline JSON; exit 1 on a "
                                                       "regression."),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="Write the table as the baseline "
                                         "(to --baseline, or results/baselines/<name>.json)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON on stdout."),
    wait: bool = typer.Option(False, "--wait", help="If another process holds the study directory, wait for it "
                                                    "instead of refusing."),
    allow_new: bool = typer.Option(False, "--allow-new", help="With --baseline: a configuration the baseline does "
                                   "not have is not a regression (one it has that the study lacks still is)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --out be a directory that holds another study: it "
                                   "becomes this study's (its run directories are reused where their configs match)."),
):
    """Train and measure every run of a study, print the table of accuracy and sharpness (mean ± std over seeds)
    and the rank correlations of each sharpness notion with test accuracy and the generalization gap (Kendall
    tau-b with bootstrap intervals, granulated Kendall per hyperparameter axis); write table.csv, table.md,
    study.json, plots. Exit code 0: every run completed or diverged; 1: a run failed or the baseline regressed;
    2: bad input (nothing trained); 130: interrupted (finished runs are kept)."""
    from .study import compare as run_study, load_study, render_from
    if from_ is not None and study is not None:
        fail("give a study file or --from STUDY_DIR, not both")
    try:
        if from_ is not None:
            result = render_from(from_, baseline=baseline, update_baseline=update_baseline, allow_new=allow_new)
        else:
            spec = load_study(study)
            display = None if quiet or as_json else _StudyProgress(spec.name)
            with display.bar if display else nullcontext():
                result = run_study(spec, out=out, executor=executor, jobs=jobs, address=address, progress=display,
                                   baseline=baseline, update_baseline=update_baseline, wait=wait,
                                   allow_new=allow_new, overwrite=overwrite)
    except SamcliError as err:
        fail(str(err))
    except (OSError, UnicodeDecodeError) as err:
        fail_on_os_error(err)
    except KeyboardInterrupt:
        console.print("interrupted: finished runs are kept; run the same command again to resume")
        raise typer.Exit(130)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_compare(result, baseline)
    diverged = int(result.table["diverged"].sum()) if "diverged" in result.table else 0
    warn(f"{diverged} run(s) diverged; the table counts them and the notes say where" if diverged else None)
    if result.failed_runs:
        console.print(f"{result.failed_runs} run(s) failed; see the notes above", highlight=False)
    if result.baseline_ok is False or result.failed_runs:
        raise typer.Exit(1)


def _print_compare(result, baseline: Optional[Path]) -> None:
    from .study.baseline import display_diff
    from .study.correlations import sections
    from .study.table import display as display_table
    stdout = Console()
    if not stdout.is_terminal:
        stdout = Console(width=max(stdout.width, 240))
    stdout.print(_frame_table(display_table(result.table), f"study {result.name}"))
    stdout.print(result.caption, highlight=False)
    for heading, frame, lines in sections(result.report):
        if frame is not None:
            stdout.print(_frame_table(frame, heading))
        else:
            stdout.print(f"{heading}:", highlight=False)
        for line in lines:
            stdout.print(escape(line), highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print("written: " + ", ".join(str(f) for f in result.files), highlight=False, soft_wrap=True)
    if result.baseline_written is not None:
        console.print(f"baseline written to {result.baseline_written}", highlight=False)
    if result.baseline_diff is not None:
        stdout.print(_frame_table(display_diff(result.baseline_diff), f"baseline {baseline}"))
        console.print("baseline: all checks hold" if result.baseline_ok else "baseline: REGRESSION", highlight=False)


def _frame_table(frame, title: str):
    from rich.table import Table
    table = Table(title=title)
    for i, column in enumerate(frame.columns):
        table.add_column(str(column), justify="left" if i == 0 else "right")
    for _, row in frame.iterrows():
        table.add_row(*[str(v) for v in row])
    return table


class _StudyProgress:
    """Rich display: the study's bar (runs done of all) and one bar per run in progress."""

    def __init__(self, name: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console, transient=True)
        self.study = self.bar.add_task(f"study {name}: runs", total=None, note="")
        self.runs: dict = {}

    def __call__(self, event) -> None:
        bar, kind = self.bar, event.kind
        if kind == "plan":
            bar.update(self.study, total=event.total, completed=event.step, note=event.message)
        elif kind == "note":
            bar.console.print(f"note: {event.message}", highlight=False, soft_wrap=True)
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
                bar.console.print(f"{event.label} seed {event.seed} failed: {event.message}", highlight=False)


# ---- reproduce: the paper's predictions (samcli/paper) -------------------------------------------

@app.command()
def reproduce(
    name: Optional[str] = typer.Argument(None, help="Study name (see --list), or all."),
    list_: bool = typer.Option(False, "--list", help="List the studies and exit."),
    quick: bool = typer.Option(False, "--quick", help="Small settings (seconds; for tests): the config's quick: section."),
    out: Path = typer.Option(Path("results/paper"), help="Base directory; each study writes OUT/NAME/."),
    config: Optional[Path] = typer.Option(None, help="Study YAML (default: the packaged NAME.yaml); one study only."),
    set_: List[str] = typer.Option([], "--set", help="Override a study config key: --set rho=0.1 (one study only)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON on stdout."),
):
    """Check the paper's predictions with the engine: verdicts (PASS / FAIL / open, with the measured numbers),
    tables, JSON and plots in OUT/NAME/. Exit code 1 when any prediction FAILs."""
    from . import paper
    if list_ or name is None:
        for study in paper.STUDIES.values():
            print(f"{study.name:12s} {study.summary}")
        if name is None and not list_:
            console.print("give a study name (or all) to run it", highlight=False)
        return
    chatty = not (quiet or as_json)
    log = (lambda message: console.print(message, highlight=False)) if chatty else (lambda message: None)

    def show(result) -> None:
        if chatty:
            console.print(_verdict_table(result))
            console.print(f"{result.name}: {result.seconds:.1f} s -> {escape(str(result.out_dir))}", highlight=False)
    try:
        results = paper.reproduce(name, out, quick=quick, config=config, overrides=set_, log=log, on_result=show)
    except SamcliError as err:
        fail(str(err))
    except (OSError, UnicodeDecodeError) as err:
        fail_on_os_error(err)
    if as_json:
        print(json.dumps([r.summary() for r in results], indent=2, default=str))
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _verdict_table(result):
    from rich.table import Table
    table = Table(title=f"reproduce {result.name}" + (" (quick)" if result.quick else ""), show_lines=False)
    for column in ("verdict", "prediction", "theorem, condition, settings", "measured"):
        table.add_column(column)
    colors = {"PASS": "green", "FAIL": "red", "open": "yellow"}
    for v in result.verdicts:
        table.add_row(f"[{colors[v.status]}]{v.status}[/]", escape(v.claim_text()),
                      escape(f"{v.theorem}: {v.condition_text().replace('**', '')}"), escape(v.measured_text()))
    return table


def main() -> None:
    app()


if __name__ == "__main__":
    main()
