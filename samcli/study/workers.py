"""The processes of a study's pool: they die with their parent, and they stop when the parent says so.

Ctrl-C (SIGINT, to the process group or to the parent alone) and SIGTERM end a study at every jobs
count. With a pool, the workers ignore SIGINT and the parent alone decides: while the pool runs its
SIGINT and SIGTERM only raise a flag (`signals_noted`) that it reads between waits; on a stop it
cancels the queued runs, tells each worker (SIGTERM: the run in progress stops as `samcli train`
does, its summary 'interrupted'; a run handed over later never starts), joins them while it keeps
reading their progress (a worker exits only once its queued events have drained), kills any that
outlive STOP_PATIENCE, and raises KeyboardInterrupt: the CLI exits 130 with finished runs kept and
nothing left running.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_PATIENCE = 10.0    # seconds a told worker has to stop its run and write its summary before it is killed
_TOLD = False           # in a pool worker: the parent said stop
_IN_RUN = False         # in a pool worker: a run is in progress (only then does a stop interrupt it)


def die_with_parent(parent: int) -> None:
    """A pool worker must not outlive `samcli compare` (kill -9 included): it would keep writing into the
    study directory and race the rerun. On Linux the kernel kills it (PR_SET_PDEATHSIG); everywhere a
    daemon thread also exits it once its parent pid changes (reparented), which covers the moment before
    prctl and systems without it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass            # no libc prctl: the watchdog alone

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="samcli-parent-watchdog", daemon=True).start()


# ---- in a worker ---------------------------------------------------------------------------------

def stop_when_told() -> None:
    """A pool worker's signal handling, set by its initializer: SIGINT ignored (a Ctrl-C reaches the whole
    process group, and a worker acting on it alone would leave the parent waiting, or die before its
    summary is written), SIGTERM the parent's word to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _told_to_stop)
    if hasattr(signal, "pthread_sigmask"):          # POSIX; blocked by the parent while it spawned us
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _told_to_stop(signum, frame) -> None:
    """Interrupt the run in progress once (a second interrupt could land in the middle of writing its
    'interrupted' summary); when idle, only remember it."""
    global _TOLD
    first, _TOLD = not _TOLD, True
    if first and _IN_RUN:
        raise KeyboardInterrupt


@contextmanager
def interruptible_run() -> Iterator[None]:
    """Around one run in a worker: a stop interrupts it; a run that starts after the stop never starts."""
    global _IN_RUN
    _IN_RUN = True
    try:
        if _TOLD:
            raise KeyboardInterrupt
        yield
    finally:
        _IN_RUN = False


# ---- in the parent -------------------------------------------------------------------------------

@contextmanager
def signals_noted() -> Iterator[Callable[[], bool]]:
    """While the pool runs, SIGINT and SIGTERM only set a flag, read between waits: the parent must stop
    its workers in order, not raise wherever the signal lands. Outside the main thread, where no handler
    can be set, the flag stays down and the signals keep their handlers."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in STOP_SIGNALS}
    try:
        yield lambda: bool(seen)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back (not lost) in this thread; processes spawned meanwhile start with them
    blocked, so a Ctrl-C cannot kill a worker before its initializer has set its handlers."""
    if not hasattr(signal, "pthread_sigmask"):      # not POSIX: nothing to block
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_workers(pool, workers: list, drain: Callable[[], None], patience: float = STOP_PATIENCE) -> None:
    """Cancel the pool's queued runs, tell every worker (a multiprocessing Process) to stop, and join
    them, killing any that outlive `patience`; `drain` reads their progress meanwhile."""
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        try:
            os.kill(worker.pid, signal.SIGTERM)
        except (ProcessLookupError, TypeError):
            pass                      # already gone
    deadline = time.monotonic() + patience
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        drain()
        time.sleep(0.05)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
        worker.join(timeout=patience)


# ---- what a script registered: notions and methods travel to the workers --------------------------

def user_registrations() -> tuple[list, list]:
    """The notions and methods registered from outside samcli (a script, a notebook, a test), for the
    workers: a spawned process imports samcli afresh and would know only the built-ins. Their functions
    travel by reference, so they must be importable (top-level functions of an importable module)."""
    from ..methods import DIRECTIONS
    from ..rules import Rule
    from ..spec.measure import NOTIONS
    from ..spec.methods import METHODS

    def ours(function) -> bool:
        if isinstance(function, Rule):      # a rule is the user's when any of its functions is
            return all(ours(f) for f in (function.perturb, function.combine, function.second_batch,
                                         function.decoupled) if f is not None)
        return isinstance(function, str) or getattr(function, "__module__", "").startswith("samcli.")
    notions = [n for n in NOTIONS.values() if not ours(n.compute)]
    methods = [(METHODS[name], DIRECTIONS[name]) for name in METHODS
               if name in DIRECTIONS and not ours(DIRECTIONS[name])]
    return notions, methods


def restore_registrations(registrations: tuple[list, list]) -> None:
    """Register in this worker what `user_registrations` captured in the parent."""
    from .. import methods as engine
    from ..spec.measure import register_notion
    notions, methods = registrations
    for notion in notions:
        register_notion(notion, replace=True)
    for spec, direction in methods:
        if spec.name not in engine.DIRECTIONS:
            engine.register(spec, direction)


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
