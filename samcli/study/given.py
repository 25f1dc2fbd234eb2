"""Given runs: run directories a study tabulates but never trains (`runs:` in a study, `samcli compare --runs`).

A given run is one written by `samcli.RunWriter` from a user's own loop, or by `samcli train`. Each is
checked when the study is loaded (a directory with every run file, written by this samcli, a config
that validates; two given runs with one config and seed are refused), then copied into the study's
runs/<config_hash>/ (the user's directory is never written to) and measured there like any other run,
its sharpness.json reused when it was measured under the study's spec. Its configuration (a table
row) is its config less the seed: label= given to RunWriter, else the method and a hash prefix. A
given run whose files do not hold up, or that did not complete, is reported failed, never trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .. import _version
from ..config import ConfigError, TrainConfig, config_hash
from ..runs import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    RUN_FILES,
    SUMMARY,
    file_sha256,
    read_run_files,
    read_summary,
    write_run_files,
)
from .rundir import move_aside, run_state
from .spec import RunSpec, StudyError

NEEDED = (CONFIG, METRICS, CHECKPOINT, SUMMARY)


def configuration_hash(cfg: TrainConfig) -> str:
    """The hash of a config less its seed: runs that share it are one configuration (one table row)."""
    return config_hash(cfg.replace(seed=0))


def given_runs(paths: Any, where: str) -> list[RunSpec]:
    """The RunSpecs of a study's `runs:` (a list of run directory paths, relative to the working
    directory), each checked; bad input is one StudyError line naming the entry."""
    if not isinstance(paths, list) or not paths:
        raise StudyError(f"{where}: runs must be a non-empty list of run directory paths")
    specs: list[RunSpec] = []
    by_hash: dict[str, str] = {}
    by_label: dict[str, str] = {}
    for i, path in enumerate(paths):
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise StudyError(f"{where}: runs[{i}]={path!r} must be a run directory path")
        spec = given_run(Path(path).absolute(), f"{where}: runs[{i}] {path}")
        if spec.hash in by_hash:
            raise StudyError(f"{where}: runs {by_hash[spec.hash]} and {path} are the same run (one config, seed "
                             f"{spec.seed}); remove one, or give them different seeds")
        key = configuration_hash(spec.config)
        if by_label.setdefault(spec.label, key) != key:
            raise StudyError(f"{where}: runs[{i}] {path} is labelled {spec.label!r} like a run of another "
                             "configuration; give each configuration its own label= in RunWriter")
        by_hash[spec.hash] = str(path)
        specs.append(spec)
    return specs


def given_run(path: Path, where: str) -> RunSpec:
    """The RunSpec of one given run directory, or a StudyError saying what it lacks."""
    if not path.is_dir():
        raise StudyError(f"{where} is not a directory; pass a run directory (written by samcli.RunWriter or "
                         "samcli train)")
    missing = [name for name in NEEDED if not (path / name).is_file()]
    if missing:
        raise StudyError(f"{where} is not a run directory: it has no {missing[0]}; pass a directory written by "
                         "samcli.RunWriter or samcli train")
    summary = read_summary(path)
    if not isinstance(summary, dict):
        raise StudyError(f"{where}: {SUMMARY} cannot be read; write the run again")
    versions = summary.get("versions")
    by = versions.get("samcli") if isinstance(versions, dict) else None
    if by != _version.__version__:
        raise StudyError(f"{where} was written by samcli {by or '(unknown, older)'}, not this samcli "
                         f"{_version.__version__}; write it again with this samcli (its loop, or samcli train)")
    try:
        cfg = TrainConfig.from_dict(yaml.safe_load((path / CONFIG).read_text()))
    except (ConfigError, yaml.YAMLError, OSError, AttributeError) as err:
        raise StudyError(f"{where}: {CONFIG} is not a valid config ({str(err).splitlines()[0] if str(err) else err!r}"
                         "); write the run again") from None
    label = summary.get("label")
    if not isinstance(label, str) or not label.strip():
        label = f"{cfg.optimizer.method} {configuration_hash(cfg)[:6]}"
    return RunSpec(label, cfg.seed, {}, cfg, config_hash(cfg), given=str(path))


def adopt(spec: RunSpec, run_dir: Path, sharpness: dict, linked: str = "") -> tuple[str, str]:
    """(action, reason) of a given run: its files copied into `run_dir` (again when a file in the user's
    directory is no longer the copy's), then run_state; 'train' or 'stale' there is 'failed' here
    (samcli never trains a given run), 'measure' and 'done' as for any run. `linked`: why the copy is
    not trusted (a symlink), when it is not."""
    assert spec.given is not None
    source = Path(spec.given)
    if not source.is_dir():
        return "failed", f"the given run directory {source} is gone"
    # new, changed in the user's directory since it was copied, or a symlink (measuring through one could
    # write into the user's directory): copied afresh
    if linked or not _same_files(source, run_dir):
        if run_dir.exists() or run_dir.is_symlink():
            move_aside(run_dir)
        try:
            write_run_files(run_dir, read_run_files(source, RUN_FILES))
        except OSError as err:
            return "failed", f"cannot copy {source}: {err.strerror or err}"
    status = (read_summary(run_dir) or {}).get("status")
    if status not in ("completed", "diverged"):
        return "failed", f"{source} did not complete (status {status}); samcli never trains a given run"
    action, reason = run_state(run_dir, spec, sharpness)
    if action in ("train", "stale"):
        return "failed", f"{source}: {reason or 'unfinished'}; samcli never trains a given run: write it again"
    return action, reason


def _same_files(source: Path, copy: Path) -> bool:
    """Whether the copy holds the given run's files as they are now (sha256 of each)."""
    try:
        return all(file_sha256(source / name) == file_sha256(copy / name) for name in NEEDED)
    except OSError:
        return False
