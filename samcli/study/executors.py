"""Run a study's training runs: in this process, in a pool of processes, or as Ray tasks.

Every run lives in `<study>/runs/<config_hash>/`. A run is done when its summary.json says
completed or diverged for the expected config hash AND its sharpness.json parses (and was
measured with the study's rho, seed and notions). Files are written whole (temporary name, then
rename), summary.json last of the training files and sharpness.json after it, so killing the
process at any moment loses at most the runs in progress:

    missing directory                      -> train
    summary running / interrupted          -> unfinished: train again from scratch
    summary completed, no sharpness.json   -> measure only
    foreign or corrupt directory           -> reported, moved aside to <hash>.stale-N, trained again

`execute` is the one function every executor calls (a top-level function, so it pickles for
spawned processes and Ray workers); it returns the run's record (see `load_record`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from ..config import SamcliError, TrainConfig, config_hash
from ..runs import CHECKPOINT, CONFIG, METRICS, SUMMARY, read_metrics, read_summary, write_json
from .grid import RunSpec

SHARPNESS = "sharpness.json"
FINISHED = ("completed", "diverged")


@dataclass(frozen=True)
class Event:
    """What a study reports while it runs; the CLI turns these into its progress display."""
    kind: str                   # plan | start | step | measure | done | note
    run: str = ""               # config hash
    label: str = ""
    seed: int = 0
    step: int = 0
    total: int = 0
    status: str = ""
    message: str = ""


ProgressFn = Callable[[Event], None]


# ---- the state of a run directory -----------------------------------------------------------

def _measure_key(sharpness: dict) -> dict:
    return {"rho": float(sharpness["rho"]), "seed": int(sharpness["seed"]),
            "notions": sorted(sharpness["notions"])}


def run_state(run_dir: Path, spec: RunSpec, sharpness: dict) -> tuple[str, str]:
    """(action, reason): action is done | measure | train | stale (foreign or corrupt: move aside)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return "train", ""
    if not run_dir.is_dir():
        return "stale", f"{run_dir} is not a directory"
    summary = read_summary(run_dir)
    if summary is None or not isinstance(summary, dict):
        if not [p for p in run_dir.iterdir() if not p.name.startswith(".")]:
            return "train", ""          # empty, or only temporary files of a killed write
        if not (run_dir / SUMMARY).exists() and _config_matches(run_dir, spec):
            return "train", "unfinished (killed before its first summary)"
        return "stale", "summary.json is missing or unreadable"
    if summary.get("config_hash") != spec.hash:
        return "stale", f"summary.json belongs to config {summary.get('config_hash')!r}, not {spec.hash}"
    if not _config_matches(run_dir, spec):
        return "stale", "config.yaml is missing, unreadable or not this run's config"
    status = summary.get("status")
    if status in ("running", "interrupted"):
        return "train", f"unfinished (status {status})"
    if status not in FINISHED:
        return "stale", f"summary.json has unknown status {status!r}"
    sharp = read_sharpness(run_dir)
    if sharp is None:
        reason = "not measured" if not (run_dir / SHARPNESS).exists() else "sharpness.json is unreadable"
        if status == "completed" and not (run_dir / CHECKPOINT).is_file():
            return "train", "checkpoint.pt is missing"
        return "measure", reason
    if status == "diverged":
        return ("done", "") if "skipped" in sharp else ("measure", "diverged run with a sharpness report")
    if "skipped" in sharp:
        return "measure", "completed run without a sharpness report"
    try:
        measured = {"rho": float(sharp["rho"]), "seed": int(sharp["seed"]),
                    "notions": sorted(n for n in ("worst", "ascent", "average") if sharp.get(n) is not None)}
    except (KeyError, TypeError, ValueError):
        return "measure", "sharpness.json is not a sharpness report"
    if measured != _measure_key(sharpness):
        return "measure", "measured with other sharpness settings"
    return "done", ""


def _config_matches(run_dir: Path, spec: RunSpec) -> bool:
    try:
        return config_hash(TrainConfig.from_dict(yaml.safe_load((run_dir / CONFIG).read_text()))) == spec.hash
    except Exception:
        return False


def read_sharpness(run_dir: Path) -> Optional[dict]:
    """sharpness.json as a dict if it parses (a report, or {'skipped': why} for a diverged run)."""
    path = Path(run_dir) / SHARPNESS
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if "skipped" in data:
        return data
    from ..sharpness import SharpnessReport
    try:
        SharpnessReport.from_dict(data)
    except Exception:
        return None
    return data


def move_aside(run_dir: Path) -> Path:
    for i in range(1, 10_000):
        target = run_dir.with_name(f"{run_dir.name}.stale-{i}")
        if not target.exists():
            os.replace(run_dir, target)
            return target
    raise SamcliError(f"cannot move {run_dir} aside; remove the {run_dir.name}.stale-* directories")


def _number(value):
    if isinstance(value, str):
        try:
            return float(value)          # "nan" / "inf" as written by runs._clean
        except ValueError:
            return value
    return value


def load_record(run_dir: Path, spec: RunSpec) -> dict:
    """Everything the table, plots and study.json need about one finished run, read from disk."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir) or {}
    sharp = read_sharpness(run_dir)
    flat = {}
    if sharp and "skipped" not in sharp:
        from ..sharpness import SharpnessReport
        report = SharpnessReport.from_dict(sharp)
        flat = {("sharpness_loss" if k == "loss" else k): v for k, v in report.summary().items()}
        flat["measure_seconds"] = report.seconds
    history = [{k: _number(v) for k, v in r.items() if k == "step" or k.startswith("sharp_")}
               for r in read_metrics(run_dir) if any(k.startswith("sharp_") for k in r)]
    final = {k: _number(v) for k, v in (summary.get("final") or {}).items()}
    return {"label": spec.label, "seed": spec.seed, "hash": spec.hash, "method": spec.method,
            "run_dir": str(run_dir), "status": summary.get("status", "missing"),
            "config": spec.config.to_dict(), "overrides": spec.overrides,
            "final": final, "steps": summary.get("steps_done"), "seconds": summary.get("seconds"),
            "device": summary.get("device"), "sharpness": sharp, "sharpness_summary": flat,
            "history": history}


# ---- one run, wherever it executes -----------------------------------------------------------

_QUEUE = None   # set in pool workers: progress events go back to the parent through it


def _init_worker(threads: int, queue) -> None:
    global _QUEUE
    _QUEUE = queue
    import torch
    torch.set_num_threads(threads)


def _measure_kwargs(sharpness: dict) -> dict:
    kwargs = dict(sharpness)
    kwargs["notions"] = tuple(kwargs["notions"])
    return kwargs


def execute(spec: RunSpec, run_dir: str | Path, sharpness: dict, action: str,
            progress: Optional[ProgressFn] = None, threads: Optional[int] = None) -> dict:
    """Train (action 'train') and/or measure (action 'measure') one run; return its record."""
    import warnings
    from ..sharpness import measure_run
    from ..train import train
    # torch's forward-mode AD (used by the curvature code) warns once about its own use of torch.jit
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    if threads:
        import torch
        torch.set_num_threads(threads)
    emit = progress or (_QUEUE.put if _QUEUE is not None else None)
    run_dir = Path(run_dir)
    base = Event("start", spec.hash, spec.label, spec.seed)

    def on_step(step: int, total: int, loss: float) -> None:
        every = max(1, total // 200)
        if emit and (step % every == 0 or step == total):
            emit(Event("step", spec.hash, spec.label, spec.seed, step, total))

    if emit:
        emit(base)
    if action == "train":
        if run_dir.exists():
            shutil.rmtree(run_dir)
        result = train(spec.config, run_dir, progress=on_step)
        status = result.status
    else:
        status = (read_summary(run_dir) or {}).get("status")
    if status == "completed":
        if emit:
            emit(Event("measure", spec.hash, spec.label, spec.seed))
        try:
            report = measure_run(run_dir, **_measure_kwargs(sharpness))
        except SamcliError:
            if action != "measure":
                raise
            return execute(spec, run_dir, sharpness, "train", progress, threads)   # unreadable checkpoint
        write_json(run_dir / SHARPNESS, report.to_dict())
    elif status == "diverged":
        write_json(run_dir / SHARPNESS, {"skipped": "the run diverged: sharpness is undefined at non-finite weights"})
    record = load_record(run_dir, spec)
    if emit:
        emit(Event("done", spec.hash, spec.label, spec.seed, status=record["status"]))
    return record


# ---- executors ---------------------------------------------------------------------------------

def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def auto_jobs() -> int:
    """The CLI's default --jobs: one process per core (at most 4) on a CPU machine, 1 with a GPU (runs share it)."""
    import torch
    return 1 if torch.cuda.is_available() else max(1, min(cpu_count(), 4))


def blank_record(spec: RunSpec, run_dir: Path, status: str = "missing") -> dict:
    """A record with no results (a run that is missing, untrusted or failed before writing anything)."""
    return {"label": spec.label, "seed": spec.seed, "hash": spec.hash, "method": spec.method,
            "run_dir": str(run_dir), "status": status, "config": spec.config.to_dict(), "overrides": spec.overrides,
            "final": {}, "steps": None, "seconds": None, "device": None, "sharpness": None,
            "sharpness_summary": {}, "history": []}


def _failed(spec: RunSpec, run_dir: Path, err: BaseException) -> dict:
    record = load_record(run_dir, spec) if Path(run_dir).is_dir() else blank_record(spec, run_dir)
    record["status"] = "failed"
    record["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    return record


def run_local(jobs: list[tuple[RunSpec, Path, str]], sharpness: dict, workers: int = 1,
              progress: Optional[ProgressFn] = None) -> list[dict]:
    """workers == 1: one after the other in this process; else a pool of spawned processes, each
    limited to cores // workers torch threads."""
    if workers <= 1 or len(jobs) <= 1:
        records = []
        for spec, run_dir, action in jobs:
            try:
                records.append(execute(spec, run_dir, sharpness, action, progress))
            except (SamcliError, RuntimeError, ValueError) as err:
                records.append(_failed(spec, run_dir, err))
                if progress:
                    progress(Event("done", spec.hash, spec.label, spec.seed, status="failed", message=str(err)))
        return records
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, cpu_count() // workers)
    records: dict[str, dict] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, queue))
    try:
        futures = {pool.submit(execute, spec, run_dir, sharpness, action): (spec, run_dir)
                   for spec, run_dir, action in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for future in done:
                spec, run_dir = futures[future]
                try:
                    records[spec.hash] = future.result()
                    status, message = records[spec.hash]["status"], ""
                except Exception as err:   # a worker's error: the run fails, the study goes on
                    records[spec.hash] = _failed(spec, run_dir, err)
                    status, message = "failed", records[spec.hash]["error"]
                if progress:
                    progress(Event("done", spec.hash, spec.label, spec.seed, status=status, message=message))
        _drain(queue, progress)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [records[spec.hash] for spec, _, _ in jobs]


def _drain(queue, progress: Optional[ProgressFn]) -> None:
    import queue as queue_module
    while True:
        try:
            event = queue.get_nowait()
        except (queue_module.Empty, OSError, EOFError):
            return
        if progress and event.kind != "done":      # done is reported from the future's result
            progress(event)


# Ray: each run is a task with its resource request; the worker trains in a scratch directory and
# hands the run's files back, so the driver writes them (no shared file system needed).
_ORDER = (CONFIG, METRICS, CHECKPOINT, SUMMARY, SHARPNESS)    # summary, then sharpness: last


def _ray_task(spec: RunSpec, sharpness: dict, action: str, inputs: dict, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="samcli-run-") as tmp:
        run_dir = Path(tmp) / spec.hash
        run_dir.mkdir()
        for name, data in inputs.items():
            (run_dir / name).write_bytes(data)
        execute(spec, run_dir, sharpness, action, progress=None, threads=threads)
        return {name: (run_dir / name).read_bytes() for name in _ORDER if (run_dir / name).is_file()}


def _write_files(run_dir: Path, files: dict) -> None:
    if SUMMARY not in files:
        raise SamcliError(f"the Ray task for {run_dir.name} returned no summary.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in _ORDER:                     # each file whole, in the order that keeps "done" honest
        if name in files:
            path = run_dir / name
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.write_bytes(files[name])
            os.replace(tmp, path)


def run_ray(jobs: list[tuple[RunSpec, Path, str]], sharpness: dict, address: Optional[str] = None,
            progress: Optional[ProgressFn] = None, cpus_per_run: int = 1) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise SamcliError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except Exception as err:
            raise SamcliError(f"cannot start or reach Ray{' at ' + address if address else ''}: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(_ray_task)
    refs = {}
    for spec, run_dir, action in jobs:
        wants_gpu = spec.config.device == "cuda" or (spec.config.device == "auto" and gpus > 0)
        if spec.config.device == "cuda" and gpus == 0:
            raise SamcliError(f"configuration {spec.label!r} asks for device=cuda but the Ray cluster has no GPU")
        inputs = {}
        if action == "measure":
            inputs = {name: (Path(run_dir) / name).read_bytes() for name in (CONFIG, METRICS, CHECKPOINT, SUMMARY)
                      if (Path(run_dir) / name).is_file()}
        elif action == "train" and Path(run_dir).exists():
            shutil.rmtree(run_dir)
        ref = task.options(num_cpus=cpus_per_run, num_gpus=1 if wants_gpu else 0).remote(
            spec, sharpness, action, inputs, cpus_per_run)
        refs[ref] = (spec, Path(run_dir))
        if progress:
            progress(Event("start", spec.hash, spec.label, spec.seed, message="submitted to ray"))
    records: dict[str, dict] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in done:
            spec, run_dir = refs[ref]
            try:
                _write_files(run_dir, ray.get(ref))
                records[spec.hash] = load_record(run_dir, spec)
                status = records[spec.hash]["status"]
                message = ""
            except Exception as err:
                records[spec.hash] = _failed(spec, run_dir, err)
                status, message = "failed", records[spec.hash]["error"]
            if progress:
                progress(Event("done", spec.hash, spec.label, spec.seed, status=status, message=message))
    return [records[spec.hash] for spec, _, _ in jobs]
