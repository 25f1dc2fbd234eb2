"""Run directories: atomic writes, metrics as JSON lines, checkpoints that carry their config.

A run directory holds config.yaml (resolved), metrics.jsonl (one record per evaluation, appended
and flushed as it happens), summary.json (status: running | completed | diverged | interrupted | failed),
checkpoint.pt and, once measured, sharpness.json. Whole files are written to a temporary name (pid and
a random suffix, so concurrent writers never share one) and renamed, so a killed process never leaves
half a summary or checkpoint behind. A new run never lands on an existing one unless asked
(open_run_dir).
"""
from __future__ import annotations

import errno
import json
import math
import os
import platform
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from . import _version
from .config import ConfigError, SamcliError, TrainConfig, config_hash

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"
SHARPNESS = "sharpness.json"
# the order in which a copied run directory is written: summary.json, then sharpness.json, last, so a
# directory that holds them is never missing an earlier file
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, SUMMARY, SHARPNESS)


class RunFileError(SamcliError):
    """A run file could not be written (a full disk, a quota, a file-size limit, no permission).
    `path` names the file; the message is the one line a user sees."""

    def __init__(self, path: Path, err: OSError):
        self.path = Path(path)
        why = err.strerror or str(err) or type(err).__name__
        hint = ("check the directory's permissions" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "a full disk, a quota or a file-size limit?")
        super().__init__(f"cannot write {self.path}: {why} ({hint})")

    def noted(self, note: str) -> RunFileError:
        """The same fault with what became of the run appended to its line."""
        noted = RunFileError.__new__(RunFileError)
        SamcliError.__init__(noted, f"{self}; {note}")
        noted.path = self.path
        return noted


def _atomic(path: Path, write) -> None:
    # pid and a random suffix: two processes (or two threads) writing one file never share a temporary
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise RunFileError(path, err) from None
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
    """Write `data` as indented JSON (NaN and infinities as strings), atomically."""
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(_clean(data), indent=2) + "\n"))


def write_yaml(path: Path, data: Any) -> None:
    """Write `data` as YAML in its own key order, atomically."""
    _atomic(Path(path), lambda tmp: tmp.write_text(yaml.safe_dump(data, sort_keys=False)))


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path`, atomically."""
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def save_checkpoint(path: Path, data: dict) -> None:
    """Write a checkpoint with torch.save, atomically; a failed write is an OSError, as for the other files."""
    def write(tmp: Path) -> None:
        try:
            torch.save(data, tmp)
        except RuntimeError:     # torch's zip writer reports a failed write() as a RuntimeError (iostream error)
            raise OSError(errno.EIO, "torch.save could not write it") from None
    _atomic(Path(path), write)


def run_summary(cfg: TrainConfig, status: str, step: int, metrics: list[dict], started: float,
                device: torch.device, dim: int) -> dict:
    """The summary of a run that ended with `status` at `step`: a completed run's last evaluation is its
    "final"; any other run says where it stopped (`<status>_at`) and keeps its last evaluation with finite
    losses as "last_finite", so a stale healthy evaluation is never shown as the result. `started` is
    the time.perf_counter() at its start."""
    summary: dict[str, Any] = {"status": status, "steps_done": step, "config_hash": config_hash(cfg)}
    if status == "completed":
        final = metrics[-1] if metrics else {}
        summary["final"] = {k: v for k, v in final.items() if k not in ("step", "batch_loss")}
    else:
        finite = [r for r in metrics if all(math.isfinite(v) for k, v in r.items()
                                            if k.endswith("_loss") and isinstance(v, float))]
        summary[f"{status}_at"] = step
        summary["last_finite"] = {k: v for k, v in finite[-1].items() if k != "batch_loss"} if finite else None
    summary.update({"parameters": dim, "seconds": round(time.perf_counter() - started, 3),
                    "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                    "versions": {"samcli": _version.__version__, "torch": torch.__version__,
                                 "python": platform.python_version()}})
    return summary


def finish_run(run_dir: Path, checkpoint: dict, summarize: Callable[[Optional[RunFileError]], dict],
               fault: Optional[RunFileError] = None) -> dict:
    """The end of every run directory (samcli train's and RunWriter's): checkpoint.pt, then summary.json
    with the checkpoint's sha256 (what reuse checks the file against), both atomically. `summarize(fault)`
    makes the summary (a fault makes the run "failed"). A file that cannot be written (here, or `fault`
    from earlier) is raised as a RunFileError whose line says what became of the summary."""
    run_dir = Path(run_dir)
    try:
        save_checkpoint(run_dir / CHECKPOINT, checkpoint)
    except RunFileError as err:
        fault = fault or err
    summary = summarize(fault)
    if fault:
        summary["error"] = str(fault)
    else:
        summary["checkpoint_sha256"] = file_sha256(run_dir / CHECKPOINT)
    try:
        write_json(run_dir / SUMMARY, summary)
        marked = f"the run is marked failed at step {summary.get('steps_done')} in {run_dir / SUMMARY}"
    except RunFileError:
        if not fault:
            raise
        marked = f"{run_dir / SUMMARY} could not be marked failed either (it still says 'running')"
    if fault:
        raise fault.noted(f"{marked}; free space and re-run with --overwrite") from None
    return summary


class MetricsLog:
    """Append-only metrics.jsonl; each record is one complete line, written to the file as it happens.

    Unbuffered, so a failed write leaves nothing queued to be flushed later; a record the disk took
    only part of is cut off again, so the file never ends in half a line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb", buffering=0)
        except OSError as err:
            raise RunFileError(self.path, err) from None

    def write(self, record: dict) -> None:
        """Append one record as a complete line; a failed write is cut off again and raised as a RunFileError."""
        data = (json.dumps(_clean(record)) + "\n").encode()
        start = self._file.tell()
        try:
            view = memoryview(data)
            while view:     # a raw write may take part of the record: the rest, or an error, follows
                view = view[self._file.write(view):]
        except OSError as err:
            try:
                os.ftruncate(self._file.fileno(), start)
                self._file.seek(start)
            except OSError:
                pass        # read_metrics stops at a torn last line anyway
            raise RunFileError(self.path, err) from None

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, in order, up to a torn last line; none when there is no file."""
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
    """A run's summary.json, or None when it is missing or unreadable."""
    path = Path(run_dir) / SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_run(run_dir: str | Path) -> tuple[TrainConfig, dict]:
    """The resolved config and checkpoint of a finished run (no config re-typed by the user), its
    schema checked: a config that validates, theta a flat floating-point tensor with exactly as many
    entries as the config's model has parameters, buffers a mapping of tensors. Anything else is one
    line naming the file and the field."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise SamcliError(f"{run_dir} holds no {CHECKPOINT}; pass a run directory written by `samcli train`")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or corrupt file: say so in one line
        raise SamcliError(f"{checkpoint} cannot be read ({type(err).__name__}); re-run the training") from None
    redo = "re-run the training (samcli train --overwrite) to write a whole checkpoint"

    def bad(what: str) -> SamcliError:
        return SamcliError(f"{checkpoint} {what}; it was not written by this samcli's train: {redo}")
    if not isinstance(state, dict):
        raise bad(f"holds a {type(state).__name__}, not a mapping of theta, config and buffers")
    for key in ("theta", "config"):
        if key not in state:
            raise bad(f"has no {key!r} field")
    if not isinstance(state["config"], dict):
        raise bad(f"has a config of type {type(state['config']).__name__}, not a mapping")
    if state.get("origin") == "python":     # samcli.train(cfg, task=...): the config does not describe the model
        raise SamcliError(f"{run_dir}: this run's model came from Python code samcli cannot rebuild (train(..., "
                          f"task=...)); pass --model TARGET --data TARGET --weights {checkpoint}, or train it with "
                          "model.target / data.target so the run records them")
    try:
        cfg = TrainConfig.from_dict(state["config"])
    except ConfigError as err:
        raise SamcliError(f"{checkpoint} holds an invalid config ({err}); {redo}") from None
    theta = state["theta"]
    if not isinstance(theta, torch.Tensor):
        raise bad(f"stores theta as a {type(theta).__name__}, not a tensor")
    if theta.dim() != 1 or not theta.is_floating_point():
        raise bad(f"stores theta as a {theta.dtype} tensor of shape {tuple(theta.shape)}, not a flat float vector")
    buffers = state.get("buffers", {})
    if not isinstance(buffers, dict) or not all(isinstance(v, torch.Tensor) for v in buffers.values()):
        raise bad("has a buffers field that is not a mapping of names to tensors")
    expected = _model_shapes(cfg)
    if expected is not None:
        count, buffer_shapes = expected
        if theta.numel() != count:
            raise bad(f"holds {theta.numel()} parameters, but its config's model ({cfg.model.name} on "
                      f"{cfg.data.name}) has {count}")
        wrong = [k for k, v in buffers.items() if buffer_shapes.get(k) != tuple(v.shape)]
        if wrong:
            raise bad(f"has a buffer {wrong[0]!r} its config's model does not have in that shape")
    return cfg, state


def _model_shapes(cfg: TrainConfig) -> tuple[int, dict[str, tuple]] | None:
    """(parameter count, buffer shapes) of the config's model, built on the meta device (no memory, no
    data read); None where the input shape is only known by loading the data."""
    from .data import input_spec
    from .models import build_model
    spec = input_spec(cfg.data)
    if spec is None or cfg.model.target is not None:    # the user's factory is not run on the meta device
        return None
    with torch.device("meta"):
        module = build_model(cfg.model, *spec)
    return (sum(p.numel() for p in module.parameters()),
            {k: tuple(v.shape) for k, v in module.named_buffers()})


def write_sharpness(run_dir: str | Path, report) -> Path:
    """Write a SharpnessReport (anything with to_dict) as the run's sharpness.json, and beside it the figures
    the report draws (`report.figures()`: name -> draw(path), None for one it lacks, whose stale file an
    earlier measurement left is removed); return the path of sharpness.json."""
    path = Path(run_dir) / SHARPNESS
    write_json(path, report.to_dict())
    for name, draw in getattr(report, "figures", dict)().items():
        if draw is None:
            (Path(run_dir) / name).unlink(missing_ok=True)
        else:
            _atomic(Path(run_dir) / name, draw)
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


def refuse_empty_out(out, example: str) -> None:
    """`--out ''` (an unset shell variable: Path('') is Path('.')) would write among whatever the current
    directory holds: refused, with `example` as the kind of path to pass instead."""
    if out is not None and str(out).strip() in ("", "."):
        raise SamcliError(f"--out {str(out)!r} is empty or the current directory (an unset shell variable?); "
                          f"pass a directory such as {example} (or the current one by its full path)")
