"""Where a study's runs execute: in this process, in a pool of processes, or as Ray tasks.

An executor takes the runs to do, each `(spec, run_dir, action)` with action train or measure (see
rundir.py), and returns their records. `execute` is the one function every executor calls for a
run (a top-level function, so it pickles for spawned processes and Ray workers); `collect` is the
one loop that gathers what the runs return, turns an error into a failed record and reports each
run done. `make_executor` picks one from EXECUTORS by name; adding an executor is one entry there.
Pool workers die with the process that started them (die_with_parent), so a killed study leaves
nothing behind that could still write into its directory.

Ctrl-C ends a study at every jobs count: in this process the run in progress stops as `samcli
train` does (summary 'interrupted'); a pool's workers are told and joined first (workers.py).
Finished runs stay on disk, so the same command resumes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, TypeVar

from ..config import SamcliError
from ..errors import near_miss
from ..runs import CHECKPOINT, CONFIG, METRICS, SHARPNESS, SUMMARY, read_run_files, read_summary, write_run_files
from .rundir import KeptReportError, RunRecord, measure_and_record, record_diverged
from .spec import RunSpec
from .workers import (
    die_with_parent,
    interruptible_run,
    restore_registrations,
    signals_blocked,
    signals_noted,
    stop_when_told,
    stop_workers,
    user_registrations,
)


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
Job = tuple[RunSpec, Path, str]          # (spec, run directory, action: train | measure)


class Executor(Protocol):
    """Where a study's runs execute: `run(todo, sharpness, emit)` returns one record per job."""

    def run(self, todo: list[Job], sharpness: dict, emit: ProgressFn) -> list[RunRecord]:
        """Train and/or measure every job; one record per job, in order (a run that raised is 'failed')."""


# ---- one run, wherever it executes -----------------------------------------------------------

_QUEUE = None   # set in pool workers: progress events go back to the parent through it


def _init_worker(threads: int, queue, parent: int, registrations: tuple = ([], [])) -> None:
    global _QUEUE
    _QUEUE = queue
    die_with_parent(parent)
    stop_when_told()
    restore_registrations(registrations)
    import torch
    torch.set_num_threads(threads)


def _pool_run(spec: RunSpec, run_dir: str | Path, sharpness: dict, action: str) -> RunRecord:
    """`execute` in a pool worker, interruptible by the parent; a run handed over after the stop never starts."""
    with interruptible_run():
        return execute(spec, run_dir, sharpness, action)


def _measure_kwargs(sharpness: dict) -> dict:
    kwargs = dict(sharpness)
    kwargs["notions"] = tuple(kwargs["notions"])
    return kwargs


def execute(spec: RunSpec, run_dir: str | Path, sharpness: dict, action: str,
            progress: Optional[ProgressFn] = None, threads: Optional[int] = None) -> RunRecord:
    """Train (action 'train') and/or measure (action 'measure') one run; return its record."""
    import warnings

    from ..train import train
    # torch's forward-mode AD (used by the curvature code) warns once about its own use of torch.jit
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    if threads:
        import torch
        torch.set_num_threads(threads)
    emit = progress or (_QUEUE.put if _QUEUE is not None else None)
    run_dir = Path(run_dir)
    status: Optional[str]

    def on_step(step: int, total: int, loss: float) -> None:
        every = max(1, total // 200)
        if emit and (step % every == 0 or step == total):
            emit(Event("step", spec.hash, spec.label, spec.seed, step, total))

    if emit:
        emit(Event("start", spec.hash, spec.label, spec.seed))
    if action == "train":
        if run_dir.exists():
            shutil.rmtree(run_dir)
        status = train(spec.config, run_dir, progress=on_step).status
    else:
        status = (read_summary(run_dir) or {}).get("status")
    if status == "completed":
        if emit:
            emit(Event("measure", spec.hash, spec.label, spec.seed))
        try:
            warning = measure_and_record(run_dir, **_measure_kwargs(sharpness))[2]
            if warning and emit:
                emit(Event("note", spec.hash, spec.label, spec.seed, message=f"{spec.name}: {warning}"))
        except KeptReportError:
            raise                # the run fails with that line; its finite report stays
        except SamcliError:
            if action != "measure" or spec.given is not None:     # a given run is never trained
                raise
            return execute(spec, run_dir, sharpness, "train", progress, threads)   # unreadable checkpoint
    elif status == "diverged":
        record_diverged(run_dir)
    record = RunRecord.read(run_dir, spec)
    if emit:
        emit(Event("done", spec.hash, spec.label, spec.seed, status=record.status))
    return record


# ---- the one result collector ------------------------------------------------------------------

Handle = TypeVar("Handle")


def collect(handles: dict[Handle, tuple[RunSpec, Path]],
            wait_some: Callable[[list[Handle]], tuple[Iterable[Handle], list[Handle]]],
            outcome: Callable[[Handle], RunRecord], emit: ProgressFn,
            catch: tuple[type[BaseException], ...] = (Exception,)) -> dict[str, RunRecord]:
    """Wait for every handle (handle -> (spec, run_dir)), in the order `wait_some(pending) -> (done,
    pending)` hands them back; `outcome(handle)` is the run's record, or raises one of `catch` (the
    run fails, the study goes on). Emits one 'done' event per run. Returns config hash -> record."""
    records: dict[str, RunRecord] = {}
    pending = list(handles)
    while pending:
        done, pending = wait_some(pending)
        for handle in done:
            spec, run_dir = handles[handle]
            try:
                record, message = outcome(handle), ""
            except catch as err:
                record = RunRecord.failed(spec, run_dir, err)
                message = record.error or ""      # always set on a failed record
            records[spec.hash] = record
            emit(Event("done", spec.hash, spec.label, spec.seed, status=record.status, message=message))
    return records


def _without_done(emit: ProgressFn) -> ProgressFn:
    """Progress from inside a run, less its 'done' event: the collector reports that one."""
    return lambda event: None if event.kind == "done" else emit(event)


# ---- local: this process, or a pool of spawned processes -----------------------------------------

def cpu_count() -> int:
    """The cores this process may run on (its affinity where the OS tells it, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def auto_jobs() -> int:
    """The default jobs: one process per core (at most 4) on a CPU machine, 1 with a GPU (runs share it)."""
    import torch
    return 1 if torch.cuda.is_available() else max(1, min(cpu_count(), 4))


@dataclass(frozen=True)
class LocalExecutor:
    """jobs == 1: one run after the other in this process; else a pool of `jobs` spawned processes,
    each limited to cores // jobs torch threads."""
    jobs: int = 1

    def run(self, todo: list[Job], sharpness: dict, emit: ProgressFn) -> list[RunRecord]:
        """Train and/or measure every job here or in the pool; one record per job, in order."""
        handles = {i: (spec, Path(run_dir)) for i, (spec, run_dir, _) in enumerate(todo)}
        if self.jobs <= 1 or len(todo) <= 1:
            def one(i: int) -> RunRecord:
                spec, run_dir, action = todo[i]
                return execute(spec, run_dir, sharpness, action, _without_done(emit))
            # in this process a bug is not a failed run: only the errors a run can meet (bad numerics,
            # a data set that cannot be downloaded or read) are caught
            records = collect(handles, lambda pending: (pending[:1], pending[1:]), one, emit,
                              catch=(SamcliError, RuntimeError, ValueError, OSError))
        else:
            records = self._pool(todo, handles, sharpness, emit)
        return [records[spec.hash] for spec, _, _ in todo]

    def _pool(self, todo: list[Job], handles: dict, sharpness: dict, emit: ProgressFn) -> dict[str, RunRecord]:
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        forward = _without_done(emit)
        with signals_noted() as interrupted:
            # spawned children start with the parent's signal mask: blocked, a Ctrl-C cannot kill a worker
            # before its initializer has set its handlers (one that arrives here waits, it is not lost)
            with signals_blocked():
                queue = ctx.Queue()
                pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_init_worker,
                                           initargs=(max(1, cpu_count() // self.jobs), queue, os.getpid(),
                                                     user_registrations()))
                futures = {pool.submit(_pool_run, spec, run_dir, sharpness, action): handles[i]
                           for i, (spec, run_dir, action) in enumerate(todo)}
                workers = list(getattr(pool, "_processes", {}).values())    # to tell and join on a stop

            def wait_some(pending: list) -> tuple[Iterable, list]:
                if interrupted():
                    raise KeyboardInterrupt
                done, rest = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(queue, forward)
                return done, list(rest)
            try:
                records = collect(futures, wait_some, lambda future: future.result(), emit)
                _drain(queue, forward)
                if interrupted():
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                stop_workers(pool, workers, lambda: _drain(queue, forward))
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return records


def _drain(queue, emit: ProgressFn) -> None:
    import queue as queue_module
    while True:
        try:
            event = queue.get_nowait()
        except (queue_module.Empty, OSError, EOFError):
            return
        emit(event)


# ---- Ray: each run a task with its resource request ------------------------------------------------
# The worker trains in a scratch directory and hands the run's files back, so the driver writes them
# (no shared file system needed).

def _ray_task(spec: RunSpec, sharpness: dict, action: str, inputs: dict, threads: int,
              registrations: tuple = ([], [])) -> dict:
    restore_registrations(registrations)
    with tempfile.TemporaryDirectory(prefix="samcli-run-") as tmp:
        run_dir = Path(tmp) / spec.hash
        run_dir.mkdir()
        write_run_files(run_dir, inputs)
        execute(spec, run_dir, sharpness, action, progress=None, threads=threads)
        return read_run_files(run_dir)


def _write_back(run_dir: Path, files: dict) -> None:
    if SUMMARY not in files:
        raise SamcliError(f"the Ray task for {run_dir.name} returned no summary.json")
    write_run_files(run_dir, files)


@dataclass(frozen=True)
class RayExecutor:
    """One Ray task per run on the cluster at `address` (None: start a local Ray instance)."""
    address: Optional[str] = None
    cpus_per_run: int = 1

    def run(self, todo: list[Job], sharpness: dict, emit: ProgressFn) -> list[RunRecord]:
        """Train and/or measure every job as a Ray task; one record per job, in order."""
        started = not _ray_initialized()
        ray = self._connect()
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(_ray_task)
        registrations = user_registrations()
        refs = {}
        for spec, run_dir, action in todo:
            wants_gpu = spec.config.device == "cuda" or (spec.config.device == "auto" and gpus > 0)
            if spec.config.device == "cuda" and gpus == 0:
                raise SamcliError(f"configuration {spec.label!r} asks for device=cuda but the Ray cluster has no GPU")
            inputs = {}
            if action == "measure":
                inputs = read_run_files(run_dir, (CONFIG, METRICS, CHECKPOINT, SUMMARY))
            elif action == "train" and Path(run_dir).exists():
                shutil.rmtree(run_dir)
            ref = task.options(num_cpus=self.cpus_per_run, num_gpus=1 if wants_gpu else 0).remote(
                spec, sharpness, action, inputs, self.cpus_per_run, registrations)
            refs[ref] = (spec, Path(run_dir))
            emit(Event("start", spec.hash, spec.label, spec.seed, message="submitted to ray"))

        def outcome(ref) -> RunRecord:
            spec, run_dir = refs[ref]
            files = ray.get(ref)
            if spec.given is not None:       # the run's own files stay as copied: only its measurement comes back
                write_run_files(run_dir, {k: v for k, v in files.items() if k == SHARPNESS})
            else:
                _write_back(run_dir, files)
            return RunRecord.read(run_dir, spec)
        # Ctrl-C to the group also reaches Ray's workers, whose tasks then fail: the signal is noted and read
        # between waits (and once more at the end), so the study ends interrupted, never as failed runs
        with signals_noted() as interrupted:
            def wait_some(pending):
                if interrupted():
                    raise KeyboardInterrupt
                return ray.wait(pending, num_returns=1, timeout=1.0)
            try:
                records = collect(refs, wait_some, outcome, emit)
                if interrupted():
                    raise KeyboardInterrupt
            except KeyboardInterrupt:     # no task may keep running (cancelling a finished one is a no-op)
                for ref in refs:
                    ray.cancel(ref, force=True)
                if started:               # the instance this study started goes with it, its workers too
                    ray.shutdown()
                raise
        return [records[spec.hash] for spec, _, _ in todo]

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise SamcliError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(include_dashboard=False, log_to_driver=False)
            except Exception as err:
                raise SamcliError(f"cannot start or reach Ray{' at ' + self.address if self.address else ''}: "
                                  f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        return ray


def _ray_initialized() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


# ---- choosing one ----------------------------------------------------------------------------

EXECUTORS: dict[str, Callable[[int, Optional[str]], Executor]] = {
    "local": lambda jobs, address: LocalExecutor(jobs),
    "ray": lambda jobs, address: RayExecutor(address),
}


def make_executor(name: str = "local", jobs: Optional[int] = 1, address: Optional[str] = None) -> Executor:
    """The executor called `name`, checked: jobs None means one per core (auto_jobs), else at least 1."""
    if name not in EXECUTORS:
        near = near_miss(name, EXECUTORS)
        raise SamcliError(f"--executor {name!r} is unknown{f' (did you mean {near}?)' if near else ''}; "
                          f"choose {' or '.join(EXECUTORS)}")
    if jobs is None:
        jobs = auto_jobs()
    elif jobs < 1:
        raise SamcliError(f"--jobs {jobs} must be >= 1")
    return EXECUTORS[name](jobs, address)
