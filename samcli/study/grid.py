"""A study: a base train config, a grid (or named variants) and seeds, the sharpness settings, and
the baseline's tolerances. `load_study` validates all of it and builds every run's `TrainConfig`
before anything trains, so a bad entry is refused up front with one line naming it.

    name: default
    base: {data: {name: mnist1d}, steps: 600, ...}          # a TrainConfig dict
    grid: {optimizer.method: [sgd, sam], optimizer.batch_size: [full, 128]}
    variants:                                               # or / and: named configurations
      - {label: GD, optimizer.method: sgd, optimizer.batch_size: full}
    seeds: [0, 1, 2]
    sharpness: {rho: 0.05, samples: 1000, notions: [worst, ascent, average]}
    baseline: {tolerances: {test_accuracy: {abs: 0.03}}, orderings: ["SAM lambda_1 < GD lambda_1"]}
    confound_tolerance: 0.01      # warn when configurations' mean train losses span more than this

Variants and grid combine as a cross product (each variant x each grid point x each seed). Grid
axes may use the short names method, lr, rho, batch_size, m. An axis that does not apply to a
method is dropped for it (m for every method but msam; rho and m for sgd), and the duplicates this
makes are merged, so `method: [sgd, sam, msam] x m: [1, 4]` is 1 + 1 + 2 configurations.
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError, TrainConfig, config_hash, load_yaml, set_dotted
from ..data import train_set_size
from ..errors import short_repr
from ..spec.measure import MeasureSpec, SpecError
from ..spec.methods import method_names, unused_parameters, validate_optimizer
from .spec import RunSpec, Study, StudyError, parse_checks
from .table import all_metrics

__all__ = ["RunSpec", "Study", "StudyError", "load_study", "parse_study", "default_study_path", "packaged_study_path",
           "packaged_studies"]

STUDY_KEYS = ("name", "description", "base", "grid", "variants", "seeds", "sharpness", "baseline",
              "confound_tolerance", "runs")
ALIASES = {"method": "optimizer.method", "lr": "optimizer.lr", "rho": "optimizer.rho",
           "batch_size": "optimizer.batch_size", "m": "optimizer.m", "momentum": "optimizer.momentum"}
SHORT = {v: k for k, v in ALIASES.items()}


# ---- loading --------------------------------------------------------------------------------

def default_study_path() -> Path:
    """The path of the embedded default study (samcli/studies/default.yaml)."""
    return packaged_study_path("default")


def packaged_study_path(name: str) -> Path:
    """The path of a study shipped with samcli (samcli/studies/<name>.yaml), by name."""
    from importlib.resources import files
    return Path(str(files("samcli") / "studies" / f"{name}.yaml"))


def packaged_studies() -> list[str]:
    """The names of the studies shipped with samcli: `samcli compare NAME` runs one."""
    from importlib.resources import files
    return sorted(p.name[:-5] for p in files("samcli").joinpath("studies").iterdir() if p.name.endswith(".yaml"))


def load_study(study: str | Path | dict | Study | None = None) -> Study:
    """A Study from a path, a dict or None (the embedded default study)."""
    if isinstance(study, Study):
        return study
    source = None
    if study is None:
        study = default_study_path()
    if isinstance(study, (str, Path)) and not Path(study).exists() and str(study) in packaged_studies():
        study = packaged_study_path(str(study))       # `samcli compare variants`: a study shipped with samcli
    if isinstance(study, (str, Path)) and not Path(study).exists():
        raise StudyError(f"study {study} does not exist: it is neither a YAML file nor a packaged study "
                         f"({', '.join(packaged_studies())}); pass a path or one of those names")
    if isinstance(study, (str, Path)):
        source = str(study)
        raw = load_yaml(study)
    elif isinstance(study, dict):
        raw = study
    else:
        raise StudyError(f"a study is a YAML path or a dict, not {type(study).__name__}")
    return parse_study(raw, source)


def parse_study(raw: dict, source: Optional[str] = None) -> Study:
    """A Study from its raw mapping: validated, with every run's config built; `source` names it in errors."""
    where = f"study {source}" if source else "study"
    unknown = [k for k in raw if k not in STUDY_KEYS]
    if unknown:
        raise StudyError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(STUDY_KEYS)}")
    name = raw.get("name") or (Path(source).stem if source else "study")
    # the name is a directory under results/studies and a file under results/baselines: '.', '..' or a
    # separator would write somewhere else
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise StudyError(f"{where}: name={name!r} must be a word of letters, digits, '.', '_' or '-' that starts "
                         "with a letter, digit or '_' (no '/', no '.' or '..')")
    where = f"study {name}"
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise StudyError(f"{where}: base must be a mapping of train config keys")
    try:
        TrainConfig.from_dict(base)
    except ConfigError as err:
        raise StudyError(f"{where}: base: {err}") from None

    given = raw.get("runs") is not None      # run directories to tabulate, not to train (given.py)
    points = _points(raw, where) if not given or raw.get("grid") is not None or raw.get("variants") else []
    seeds = _seeds(raw, where)
    runs: list[RunSpec] = []
    seen: dict[str, RunSpec] = {}
    by_label: dict[tuple[str, int], RunSpec] = {}
    for label, overrides in points:
        for seed in seeds:
            spec = _build_run(base, label, overrides, seed, where)
            other = by_label.setdefault((label, seed), spec)
            if other.hash != spec.hash:
                raise StudyError(f"{where}: two different configurations are labelled {label!r}; "
                                 "give each variant its own label")
            previous = seen.get(spec.hash)
            if previous is not None:
                if previous.label != spec.label:
                    raise StudyError(f"{where}: configurations {previous.label!r} and {spec.label!r} are the "
                                     "same run; remove one or make them differ")
                continue
            seen[spec.hash] = spec
            runs.append(spec)
    if given:
        from .given import given_runs
        for spec in given_runs(raw["runs"], where):
            if spec.hash in seen or (spec.label in {r.label for r in runs if r.given is None}):
                raise StudyError(f"{where}: the given run {spec.given} is a run (or a label, {spec.label!r}) the "
                                 "study's grid also has; remove it from runs: or relabel it")
            seen[spec.hash] = spec
            runs.append(spec)
    _check_targets(runs, where)
    labels = tuple(dict.fromkeys(r.label for r in runs))
    sharpness = _sharpness(raw.get("sharpness"), where)
    tolerances, orderings = parse_checks(raw.get("baseline"), labels, all_metrics(), where)
    return Study(name, raw, tuple(runs), labels, sharpness, tolerances, orderings, source,
                 str(raw.get("description") or ""), _confound_tolerance(raw.get("confound_tolerance"), where))


def _confound_tolerance(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise StudyError(f"{where}: confound_tolerance={value!r} must be a finite number >= 0 (a train-loss "
                         "difference, e.g. 0.01), or left out for no confound check")
    return float(value)


def _canonical(key: str, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise StudyError(f"{where}: grid key {key!r} must be a dotted config key such as optimizer.rho")
    return ALIASES.get(key, key)


def _points(raw: dict, where: str) -> list[tuple[str, dict]]:
    """(label, dotted overrides) for every configuration, before seeds."""
    grid, variants = raw.get("grid"), raw.get("variants")
    if grid is None and variants is None:
        raise StudyError(f"{where}: has no grid and no variants; add grid: {{optimizer.method: [sgd, sam]}} "
                         "or a list of variants (or runs: [DIR ...] to tabulate existing runs)")
    axes: list[tuple[str, list]] = []
    if grid is not None:
        if not isinstance(grid, dict):
            raise StudyError(f"{where}: grid must be a mapping of config keys to lists of values")
        if not grid:
            raise StudyError(f"{where}: grid is empty; give at least one key with a list of values")
        for key, values in grid.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise StudyError(f"{where}: grid.{key} is an empty list; give at least one value")
            if key == "seed":
                continue       # seeds are handled apart (they are aggregated, not a row)
            axes.append((_canonical(key, f"{where}: grid"), values))
    variant_list: list[tuple[Optional[str], dict]] = [(None, {})]
    if variants is not None:
        if not isinstance(variants, list) or not variants:
            raise StudyError(f"{where}: variants must be a non-empty list of mappings")
        variant_list = []
        for i, variant in enumerate(variants):
            if not isinstance(variant, dict):
                raise StudyError(f"{where}: variants[{i}] must be a mapping of config keys")
            variant = dict(variant)
            label = variant.pop("label", None)
            if label is not None and (not isinstance(label, str) or not label.strip()):
                raise StudyError(f"{where}: variants[{i}].label={label!r} must be a non-empty string")
            if "seed" in variant:
                raise StudyError(f"{where}: variants[{i}] sets seed; list seeds in the study's seeds: [...]")
            variant_list.append((label, {_canonical(k, f"{where}: variants[{i}]"): v for k, v in variant.items()}))
    multi = {k for k, values in axes if len(values) > 1}
    points = []
    for (vlabel, voverrides), values in itertools.product(variant_list, itertools.product(*[v for _, v in axes])):
        overrides = dict(voverrides)
        grid_part = dict(zip([k for k, _ in axes], values))
        overrides.update(grid_part)
        overrides = _relevant(overrides)
        grid_part = {k: v for k, v in grid_part.items() if k in overrides}
        varying = " ".join(_fmt(k, v) for k, v in grid_part.items() if k in multi)
        if vlabel is None:
            label = varying or _auto_label(overrides) or "run"
        else:
            label = f"{vlabel} {varying}".strip()
        points.append((label, overrides))
    return points


def _relevant(overrides: dict) -> dict:
    """Drop optimizer axes the run's method does not use (its registry entry says which), so that
    `method: [sgd, sam] x rho: [0.05, 0.1]` gives one sgd configuration, not two identical ones."""
    method = overrides.get("optimizer.method")
    if method not in method_names():      # an unknown method fails later, as a StudyError naming it
        return dict(overrides)
    unused = {f"optimizer.{name}" for name in unused_parameters(method)}
    return {k: v for k, v in overrides.items() if k not in unused}


def _fmt(key: str, value: Any) -> str:
    short = SHORT.get(key, key.split(".")[-1])
    if key == "optimizer.method":
        return str(value)
    if short == "batch_size":
        short = "b"
    return f"{short}={value}"


def _auto_label(overrides: dict) -> str:
    return " ".join(_fmt(k, v) for k, v in overrides.items())


def _seeds(raw: dict, where: str) -> list[int]:
    seeds = raw.get("seeds")
    grid_seeds = (raw.get("grid") or {}).get("seed") if isinstance(raw.get("grid"), dict) else None
    if seeds is not None and grid_seeds is not None:
        raise StudyError(f"{where}: seeds are given twice (seeds and grid.seed); keep one")
    seeds = seeds if seeds is not None else grid_seeds
    if seeds is None:
        return [int((raw.get("base") or {}).get("seed", 0))]
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds:
        raise StudyError(f"{where}: seeds is an empty list; give at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            raise StudyError(f"{where}: seed {s!r} must be an integer")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"{where}: seeds {seeds} repeat a seed; list each once")
    return list(seeds)


def _build_run(base: dict, label: str, overrides: dict, seed: int, where: str) -> RunSpec:
    import copy
    raw = copy.deepcopy(base)
    try:
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        raw["seed"] = seed
        cfg = TrainConfig.from_dict(raw)
    except ConfigError as err:
        raise StudyError(f"{where}: configuration {label!r}: {err}") from None
    _check_data_size(cfg, label, where)
    return RunSpec(label, seed, dict(overrides), cfg, config_hash(cfg))


def _check_targets(runs: list[RunSpec], where: str) -> None:
    """Every model and data target the runs name imports, and each distinct pair of them builds (factory
    called, loader run, the model's outputs fitting the labels), here, before any run trains: a user's
    mistake is one line and exit 2, not a study of failed runs. Workers import them again from the configs."""
    import json

    from ..targets import load_target
    from ..task import build_task
    seen: set[str] = set()
    for run in runs:
        cfg = run.config
        if cfg.model.target is None and cfg.data.target is None:
            continue
        sections = cfg.to_dict()
        key = json.dumps([sections["model"], sections["data"], cfg.loss], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            for name, section in (("model.target", cfg.model), ("data.target", cfg.data)):
                if section.target is not None:
                    load_target(section.target, name)
            build_task(cfg.replace(device="cpu"))
        except ConfigError as err:
            raise StudyError(f"{where}: configuration {run.label!r}: {err}") from None


def _check_data_size(cfg: TrainConfig, label: str, where: str) -> None:
    """Checks that need the training-set size, where the config states it (no data loading)."""
    d, o = cfg.data, cfg.optimizer
    n = train_set_size(d)
    if n is None:
        return
    try:
        validate_optimizer(o, train_size=n)
    except ConfigError as err:
        raise StudyError(f"{where}: configuration {label!r}: {err}") from None


def _sharpness(raw: Any, where: str) -> dict:
    """The study's MeasureSpec (as its dict: measure_run keywords), checked by the one validator, so a bad
    knob is refused before the first run trains and a stored report is reused only under this spec."""
    if raw is not None and not isinstance(raw, dict):
        raise StudyError(f"{where}: sharpness must be a mapping of measurement settings, got {short_repr(raw)}")
    try:
        return MeasureSpec.build(raw or {}, name=lambda knob: f"sharpness.{knob}").to_dict()
    except SpecError as err:
        raise StudyError(f"{where}: {err}") from None
