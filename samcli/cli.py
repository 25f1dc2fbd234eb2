"""The command line: each command parses its arguments, calls one engine function and hands the result
to render.py. Bad input of every kind (the engine's SamcliErrors, the file system's errors, Click's own
parsing errors) is one line on stderr and exit code 2; Ctrl-C and SIGTERM are exit code 130."""
from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from . import render
from ._version import __version__
from .config import DEFAULT_NOTIONS, SamcliError, TrainConfig, apply_override, load_yaml
from .errors import SamcliWarning, integer_or_word
from .spec.methods import get_method, method_names

# Typer vendors its own copy of Click in some versions: find its ClickException by name, not by import
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_DEFAULTS = TrainConfig()


class _SamcliGroup(TyperGroup):
    """The root command: Click's own usage errors (a typo in an option, a value of the wrong type, an
    unknown command) in samcli's one-line format instead of Click's boxed usage text."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise SamcliError(render.unknown_command(name, self.list_commands(ctx)))
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx) -> list[str]:
        return [name for name, cmd in self.commands.items() if not cmd.hidden]

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:                    # a caller of its own: the exceptions are theirs
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERROR as err:
            if type(err).__name__ == "NoArgsIsHelpError":      # `samcli` alone: the help, as Click does
                text = err.format_message()
                if text.strip():
                    print(text)
                sys.exit(2)
            render.error(render.usage_message(err, self._path(err, argv)))
            sys.exit(2)
        except SamcliError as err:
            render.error(str(err))
            sys.exit(2)
        except typer.Abort:
            render.error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def _path(self, err, argv: list[str]) -> str:
        """`samcli COMMAND`, the words a user types, whatever the program was started as."""
        names, ctx = [], getattr(err, "ctx", None)
        while ctx is not None and ctx.parent is not None:
            names.append(ctx.info_name)
            ctx = ctx.parent
        if not names and argv and argv[0] in self.commands:
            names = [argv[0]]
        return " ".join(["samcli", *reversed(names)])


app = typer.Typer(cls=_SamcliGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Benchmark Sharpness-Aware Minimization: train, measure sharpness, compare.")


def _print_version(value: bool) -> None:
    if value:
        print(f"samcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print samcli's version and exit.")) -> None:
    """Benchmark Sharpness-Aware Minimization: train, measure sharpness, compare."""
    warnings.showwarning = _one_line_warning
    # torch's forward-mode AD (the curvature code) warns once about its own use of torch.jit: not the user's
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """samcli's own warnings (a regenerated cache ...) as the CLI's one warning line; others as Python shows them."""
    if issubclass(category, SamcliWarning):
        render.warn(str(message))
    else:
        _python_warning(message, category, filename, lineno, file, line)


_python_warning = warnings.showwarning


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2, no traceback."""
    render.error(message)
    raise typer.Exit(2)


def one_line_errors(interrupted: str, options: Optional[Mapping[str, str]] = None):
    """The one place a command's failures become exit codes: a SamcliError is its one line (in command-line
    words: `options` maps the settings this command has options for to them, see errors.SettingError) and
    exit 2; a file-system error names the path, exit 2; Ctrl-C warns `interrupted` and exits 130."""
    def decorate(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except SamcliError as err:
                fail(err.cli_message(options))
            except BrokenPipeError:                 # stdout closed (`| head`): Typer ends quietly
                raise
            except (OSError, UnicodeDecodeError) as err:
                fail(render.os_error_message(err))
            except KeyboardInterrupt:
                render.warn(interrupted)
                raise typer.Exit(130) from None
        return run
    return decorate


def _default(key: str) -> str:
    """The built-in default of a config key, for --help (a YAML file or --set may change it)."""
    node = _DEFAULTS
    for part in key.split("."):
        node = getattr(node, part)
    return str(node)


@app.command()
@one_line_errors(interrupted="interrupted: the metrics so far and a summary marked 'interrupted' (with the step) "
                             "are in the run directory")
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML train config (defaults apply to missing keys)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set optimizer.rho=0.1 (repeatable)."),
    dataset: Optional[str] = typer.Option(None, help="data.name: mnist1d, digits, synthetic, mnist, cifar10, ...; "
                                          "or your loader, data.target: pkg.data:load or data.py:load",
                                          show_default=_default("data.name")),
    model: Optional[str] = typer.Option(None, help="model.name: mlp, cnn, resnet, linear, diag-linear; or your "
                                        "factory, model.target: pkg.nets:build or nets.py:build",
                                        show_default=_default("model.name")),
    method: Optional[str] = typer.Option(None, help="optimizer.method: " + "; ".join(
                                              f"{name}: {get_method(name).help}" for name in method_names()),
                                         show_default=_default("optimizer.method")),
    rho: Optional[float] = typer.Option(None, help="optimizer.rho, the SAM radius.",
                                        show_default=_default("optimizer.rho")),
    m: Optional[int] = typer.Option(None, help="optimizer.m, the msam group size (required by msam)."),
    batch_size: Optional[str] = typer.Option(None, help="optimizer.batch_size: an integer or 'full'.",
                                             show_default=_default("optimizer.batch_size")),
    lr: Optional[float] = typer.Option(None, help="optimizer.lr.", show_default=_default("optimizer.lr")),
    momentum: Optional[float] = typer.Option(None, help="optimizer.momentum.",
                                             show_default=_default("optimizer.momentum")),
    steps: Optional[int] = typer.Option(None, help="Number of update steps.", show_default=_default("steps")),
    seed: Optional[int] = typer.Option(None, help="Seed for initialization, data order and sampling.",
                                       show_default=_default("seed")),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda.", show_default=_default("device")),
    dtype: Optional[str] = typer.Option(None, help="float32 or float64.", show_default=_default("dtype")),
    loss: Optional[str] = typer.Option(None, help="cross-entropy or mse.", show_default=_default("loss")),
    out: Optional[Path] = typer.Option(None, help="Run directory.", show_default="results/runs/<name>"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (its files, "
                                                              "sharpness.json included, are removed first)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
):
    """Train one model and write its run directory (config, metrics.jsonl, summary.json, checkpoint).
    Exit code 0: completed; 1: diverged; 2: bad input (nothing trained) or a run file that cannot be written
    (full disk, quota: the run is marked failed); 130: interrupted (Ctrl-C, SIGTERM)."""
    from .study.workers import sigterm_as_interrupt
    from .train import halt_line
    from .train import train as run_training
    raw = load_yaml(config) if config else {}
    flags = {_name_or_target(raw, "data", dataset): dataset, _name_or_target(raw, "model", model): model,
             "optimizer.method": method, "optimizer.rho": rho,
             "optimizer.m": m, "optimizer.lr": lr, "optimizer.momentum": momentum, "steps": steps,
             "seed": seed, "device": device, "dtype": dtype, "loss": loss}
    if batch_size is not None:
        flags["optimizer.batch_size"] = "full" if batch_size == "full" else integer_or_word(batch_size, "--batch-size")
    for key, value in flags.items():
        if value is not None:
            apply_override(raw, f"{key}={json.dumps(value)}")
    for item in set_:
        apply_override(raw, item)
    cfg = TrainConfig.from_dict(raw)
    bar, update = render.train_progress(quiet or as_json)
    with bar or nullcontext(), sigterm_as_interrupt():
        result = run_training(cfg, out, progress=update, overwrite=overwrite)
    render.warn(halt_line(result.summary))
    render.train_result(result, quiet, as_json)
    if result.status == "diverged":
        raise typer.Exit(1)


def _name_or_target(raw: dict, section: str, value: Optional[str]) -> str:
    """--model / --dataset: a built-in's name, or a target (has a ':', nets.py:build) replacing the file's name."""
    if value is None or ":" not in value:
        return f"{section}.name"
    if isinstance(raw.get(section), dict):
        raw[section].pop("name", None)
    return f"{section}.target"


# the sharpness settings that have options of their own: an error about one names the option, not --set
SHARPNESS_OPTIONS = {"rho": "--rho", "samples": "--samples", "notions": "--notions", "exact": "--exact",
                     "seed": "--seed"}
SHARPNESS_INTERRUPTED = "interrupted: nothing was written (a sharpness.json already there is unchanged)"
DEFAULT_NOTIONS_SHOWN = " ".join(DEFAULT_NOTIONS)     # --notions' default, as --help shows it


def _settings(items: Sequence[str]) -> dict:
    """--set key=value items as the measurement's keyword arguments (values read as YAML)."""
    knobs: dict = {}
    for item in items:
        apply_override(knobs, item)
    for key, value in knobs.items():
        if key in SHARPNESS_OPTIONS:        # one knob, one way in: else which of the two values holds?
            option = SHARPNESS_OPTIONS[key]
            if isinstance(value, bool):     # a flag takes no value
                use = f"pass {option} instead" if value else f"leave {option} out instead"
            else:
                use = f"pass {option} {' '.join(map(str, value)) if isinstance(value, list) else value} instead"
            raise SamcliError(f"--set {key}=... sets a knob that has its own option; {use}")
    return knobs


def _sharpness(run_dir: Optional[Path], rho: float, samples: str, notions: list[str], exact: bool, seed: int,
               as_json: bool, settings: Sequence[str] = (), weights: Optional[Path] = None,
               out: Optional[Path] = None, targets: Optional[dict] = None) -> None:
    from .study.rundir import measure_and_record
    count = None if samples == "all" else integer_or_word(samples, "--samples", "all")
    knobs: dict = dict(rho=rho, notions=notions or DEFAULT_NOTIONS, samples=count, seed=seed, exact=exact)
    if weights is not None:         # --set model.args.*, data.args.*, loss describe the model; the rest measure
        from .sharpness import measure_weights
        ours = [i for i in settings if i.startswith(("model.", "data.", "loss="))]
        weighed = measure_weights((targets or {})["model"], (targets or {})["data"], weights, out, overrides=ours,
                                  **knobs, **_settings([i for i in settings if i not in ours]))
        render.sharpness_result(*weighed, as_json)
        return
    assert run_dir is not None      # the command gives a run directory or --weights
    report, written, warning = measure_and_record(run_dir, **knobs, **_settings(settings))
    render.warn(warning)
    render.sharpness_result(report, written, as_json)


@app.command()
@one_line_errors(interrupted=SHARPNESS_INTERRUPTED, options=SHARPNESS_OPTIONS)
def sharpness(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory written by `samcli train` (or give "
                                                        "--model, --data and --weights)."),
    rho: float = typer.Option(0.05, help="Perturbation radius."),
    samples: str = typer.Option("all", help="Examples to measure on: an integer (seeded subset) or 'all'."),
    notions: list[str] = typer.Option([], "--notions", help="worst, ascent, average, adaptive, density (repeatable).",
                                      show_default=DEFAULT_NOTIONS_SHOWN),
    exact: bool = typer.Option(False, "--exact", help="Also the dense float64 Hessian's spectrum (small models)."),
    seed: int = typer.Option(0, help="Seed for every stochastic estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    set_: list[str] = typer.Option([], "--set", help="A measurement setting, e.g. --set ascent_restarts=1 "
                                                     "(repeatable; the keys of samcli.sharpness.Settings); with "
                                                     "--model: also model.args.*, data.args.* and loss."),
    model: Optional[str] = typer.Option(None, help="With --weights: the model factory (pkg.nets:build)."),
    data: Optional[str] = typer.Option(None, help="With --weights: the loader (pkg.data:load) or a data set."),
    weights: Optional[Path] = typer.Option(None, help="A state_dict file or checkpoint.pt to measure (no run dir)."),
    out: Optional[Path] = typer.Option(None, help="With --weights: where sharpness.json goes (default: beside it)."),
):
    """Measure a run (or --model/--data/--weights: a checkpoint samcli did not write); writes sharpness.json."""
    given = {flag: value for flag, value in (("--model", model), ("--data", data), ("--weights", weights)) if value}
    if run_dir is not None and given or run_dir is None and len(given) < 3:
        fail("samcli sharpness needs RUN_DIR (a run directory written by `samcli train`), or instead --model, "
             "--data and --weights (a checkpoint samcli did not write)")
    _sharpness(run_dir, rho, samples, notions, exact, seed, as_json, set_, weights=weights, out=out,
               targets={"model": model, "data": data})


@app.command("measure-sharpness", hidden=True)
@one_line_errors(interrupted=SHARPNESS_INTERRUPTED, options=SHARPNESS_OPTIONS)
def measure_sharpness_alias(
    run_dir: Path = typer.Argument(...), rho: float = typer.Option(0.05), samples: str = typer.Option("all"),
    notions: list[str] = typer.Option([], "--notions"), exact: bool = typer.Option(False, "--exact"),
    seed: int = typer.Option(0), as_json: bool = typer.Option(False, "--json"),
):
    """Same as `samcli sharpness` (the name in the original design)."""
    _sharpness(run_dir, rho, samples, notions, exact, seed, as_json)


# ---- compare: a study of many runs (samcli/study) ----------------------------------------------

@app.command()
@one_line_errors(interrupted="interrupted: finished runs are kept; run the same command again to resume")
def compare(
    study: Optional[list[Path]] = typer.Argument(None, help="Study YAML, or a packaged study's name (default, "
                                                 "variants); with --runs, run directories."),
    runs: bool = typer.Option(False, "--runs", help="Tabulate the run directories given (samcli.RunWriter's or "
                              "samcli train's): measured, never trained; --out default results/studies/runs."),
    from_: Optional[Path] = typer.Option(None, "--from", help="Re-render tables and plots from a study directory "
                                                               "(no training)."),
    out: Optional[Path] = typer.Option(None, help="Study directory.", show_default="results/studies/<name>"),
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
    tau-b with a bootstrap over configurations and seeds, granulated Kendall per hyperparameter axis with
    permutation p-values, coupled pairs, conditional mutual information, and warnings where the design cannot
    support a claim; docs/statistics.md); write table.csv, table.md,
    study.json, plots. Exit code 0: every run completed or diverged; 1: a run failed or the baseline regressed;
    2: bad input (nothing trained); 130: interrupted (finished runs are kept)."""
    from .study import compare as run_study
    from .study import given_study, load_study, render_from
    from .study.workers import sigterm_as_interrupt
    if from_ is not None and (study or runs):
        fail("give a study file or --from STUDY_DIR, not both")
    if (runs and not study) or (len(study or []) > 1 and not runs):
        fail("give one study file, or --runs RUN_DIR [RUN_DIR ...] to tabulate run directories")
    if from_ is not None:
        result = render_from(from_, baseline=baseline, update_baseline=update_baseline, allow_new=allow_new)
    else:
        spec = given_study(study) if runs else load_study(study[0] if study else None)
        display = None if quiet or as_json else render.StudyProgress(spec.name)
        # SIGTERM as Ctrl-C: with --jobs 1 the run in progress is in this process and must be marked interrupted
        with display.bar if display else nullcontext(), sigterm_as_interrupt():
            result = run_study(spec, out=out, executor=executor, jobs=jobs, address=address, progress=display,
                               baseline=baseline, update_baseline=update_baseline, wait=wait,
                               allow_new=allow_new, overwrite=overwrite)
    if as_json:
        render.print_json(result.to_json())
    else:
        render.compare_result(result, baseline)
    render.compare_outcome(result)
    if result.baseline_ok is False or result.failed_runs:
        raise typer.Exit(1)


# ---- reproduce: the paper's predictions (samcli/paper) -------------------------------------------

@app.command()
@one_line_errors(interrupted="interrupted: each study that finished has its directory under --out")
def reproduce(
    name: Optional[str] = typer.Argument(None, help="Study name (see --list), or all."),
    list_: bool = typer.Option(False, "--list", help="List the studies and exit."),
    quick: bool = typer.Option(False, "--quick",
                               help="Small settings (seconds; for tests): the config's quick: section."),
    out: Path = typer.Option(Path("results/paper"), help="Base directory; each study writes OUT/NAME/."),
    config: Optional[Path] = typer.Option(None, help="Study YAML (default: the packaged NAME.yaml); one study only."),
    set_: list[str] = typer.Option([], "--set", help="Override a study config key: --set rho=0.1 (one study only)."),
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
            render.info("give a study name (or all) to run it")
        return
    chatty = not (quiet or as_json)
    results = paper.reproduce(name, out, quick=quick, config=config, overrides=set_,
                              log=render.info if chatty else (lambda message: None),
                              on_result=render.reproduce_result if chatty else (lambda result: None))
    if as_json:
        render.print_json([r.summary() for r in results])
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def main() -> None:
    """The `samcli` console script: run the Typer app."""
    app()


if __name__ == "__main__":
    main()
