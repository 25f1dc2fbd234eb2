"""Run directories: atomic writes, metrics as JSON lines, checkpoints that carry their config.

A run directory holds config.yaml (resolved), metrics.jsonl (one record per evaluation, appended
and flushed as it happens), summary.json (status: running | completed | diverged | interrupted | failed),
checkpoint.pt and, once measured, sharpness.json. Whole files are written to a temporary name (pid and
a random suffix, so concurrent writers never share one) and renamed, so a killed process never leaves
half a summary or checkpoint behind. A new run never lands on an existing one unless asked
(open_run_dir).
"""
from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import SamcliError, TrainConfig

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"
SHARPNESS = "sharpness.json"
# the order in which a copied run directory is written: summary.json, then sharpness.json, last, so a
# directory that holds them is never missing an earlier file
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, SUMMARY, SHARPNESS)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid and a random suffix: two processes (or two threads) writing one file never share a temporary
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` holds any run file (a run, finished or not, that writing there would replace)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def open_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """The directory a new run writes to, made and checked: never an existing run's unless `overwrite`,
    and then its old run files (a stale sharpness.json too) are removed first. File-system trouble
    (a file in the way, no permission) is one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SamcliError(f"--out {path} is an existing file, not a directory; pass a directory path")
    if is_run_dir(path):
        if not overwrite:
            raise SamcliError(f"--out {path} already holds a run; pass --overwrite (overwrite=True) to replace "
                              "it, or choose another directory")
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SamcliError(f"cannot write to --out {path}: {err.strerror or type(err).__name__}; "
                          "choose a writable directory") from None
    return path


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so a diverged run's files still parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(_clean(data), indent=2) + "\n"))


def write_yaml(path: Path, data: Any) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(yaml.safe_dump(data, sort_keys=False)))


def write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def save_checkpoint(path: Path, data: dict) -> None:
    _atomic(Path(path), lambda tmp: torch.save(data, tmp))


class MetricsLog:
    """Append-only metrics.jsonl; each record is one complete line, flushed on write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(_clean(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break          # a torn last line from a killed process
    return records


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_run(run_dir: str | Path) -> tuple[TrainConfig, dict]:
    """The resolved config and checkpoint of a finished run (no config re-typed by the user)."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise SamcliError(f"{run_dir} holds no {CHECKPOINT}; pass a run directory written by `samcli train`")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or corrupt file: say so in one line
        raise SamcliError(f"{checkpoint} cannot be read ({type(err).__name__}); re-run the training") from None
    return TrainConfig.from_dict(state["config"]), state


def write_sharpness(run_dir: str | Path, report) -> Path:
    """Write a SharpnessReport (anything with to_dict) as the run's sharpness.json; return its path."""
    path = Path(run_dir) / SHARPNESS
    write_json(path, report.to_dict())
    return path


def write_sharpness_skipped(run_dir: str | Path, why: str) -> Path:
    """Record in sharpness.json that the run was not measured, and why (e.g. it diverged)."""
    path = Path(run_dir) / SHARPNESS
    write_json(path, {"skipped": why})
    return path


def read_sharpness(run_dir: str | Path) -> dict | None:
    """sharpness.json as a dict, or None when it is missing or does not parse as a JSON object.
    Whether the dict is a valid report is for the sharpness layer to say (SharpnessReport.from_dict)."""
    try:
        data = json.loads((Path(run_dir) / SHARPNESS).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_run_files(run_dir: str | Path, names=RUN_FILES) -> dict[str, bytes]:
    """name -> bytes of the run files that exist (to copy a run directory to another machine)."""
    run_dir = Path(run_dir)
    return {name: (run_dir / name).read_bytes() for name in names if (run_dir / name).is_file()}


def write_run_files(run_dir: str | Path, files: dict[str, bytes]) -> None:
    """Write copied run files, each whole and in RUN_FILES order, so an interrupted copy never looks finished."""
    run_dir = Path(run_dir)
    unknown = [name for name in files if name not in RUN_FILES]
    if unknown:
        raise SamcliError(f"{unknown[0]!r} is not a run file; run files are {', '.join(RUN_FILES)}")
    for name in RUN_FILES:
        if name in files:
            _atomic(run_dir / name, lambda tmp, data=files[name]: tmp.write_bytes(data))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes: what ties a summary and a sharpness report to the checkpoint they
    describe (an edited or swapped checkpoint no longer matches either)."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
