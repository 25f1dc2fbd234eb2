"""The command line: parse, validate, print. All logic lives in the engine below."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .config import SamcliError, TrainConfig, apply_override, load_yaml

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark Sharpness-Aware Minimization: train, measure sharpness, compare.")
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Benchmark Sharpness-Aware Minimization: train, measure sharpness, compare."""


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2, no traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


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
    method: Optional[str] = typer.Option(None, help="optimizer.method: sgd, sam, usam, msam, ascent-gd."),
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
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
):
    """Train one model and write its run directory (config, metrics.jsonl, summary.json, checkpoint)."""
    from .train import train as run_training
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
        if bar:
            with bar:
                result = run_training(cfg, out, progress=update)
        else:
            result = run_training(cfg, out)
    except SamcliError as err:
        fail(str(err))
    except KeyboardInterrupt:
        console.print("interrupted: the metrics so far and a summary marked 'interrupted' are in the run directory")
        raise typer.Exit(130)
    if as_json:
        print(json.dumps({"run_dir": str(result.run_dir), **result.summary}, indent=2))
    elif not quiet:
        final = result.summary["final"]
        acc = final.get("test_accuracy")
        console.print(f"{result.status}: train loss {final.get('train_loss', float('nan')):.4g}"
                      + (f", test accuracy {acc:.4f}" if acc is not None else "")
                      + f" in {result.summary['seconds']:.1f}s -> {result.run_dir}")
    if result.status == "diverged":
        raise typer.Exit(1)


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        fail(f"{flag}={text!r} must be an integer or 'full'")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
