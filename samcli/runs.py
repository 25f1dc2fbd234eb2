"""Run directories: atomic writes, metrics as JSON lines, checkpoints that carry their config.

A run directory holds config.yaml (resolved), metrics.jsonl (one record per evaluation, appended
and flushed as it happens), summary.json (status: running | completed | diverged | interrupted | failed)
and checkpoint.pt. Whole files are written to a temporary name and renamed, so a killed process
never leaves half a summary or checkpoint behind.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import SamcliError, TrainConfig

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


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
