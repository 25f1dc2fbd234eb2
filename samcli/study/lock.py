"""One `samcli compare` per study directory at a time.

Two processes training into one study directory would both train every run and overwrite each
other's files. The lock is an advisory flock on <study>/.lock: the kernel drops it when its holder
exits, however it exits (kill -9 included), so a lock is never left stale. The file names its
holder (pid, host, start time) for the message of the process that is refused. flock needs a POSIX
system (on Windows studies are not locked); on a file system without it (some network mounts) the
lock fails, and that is said.
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import SamcliError

LOCK_FILE = ".lock"


class StudyBusyError(SamcliError):
    """Another process holds the study directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return (f"pid {info['pid']} on host {info['host']}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is starting up"


@contextmanager
def study_lock(study_dir: str | Path, wait: bool = False) -> Iterator[Path]:
    """Hold the study directory for this process; another holder means StudyBusyError (one line
    naming it), or, with `wait`, blocking until it is done. Without fcntl (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield Path(study_dir) / LOCK_FILE
        return
    path = Path(study_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise SamcliError(f"cannot create the lock {path}: {err.strerror}; check that the study directory "
                          "is writable") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StudyBusyError(f"study directory {study_dir} is in use by {_holder(path)}; wait for it to "
                                 "finish or pass --wait") from None
        except OSError as err:
            raise SamcliError(f"cannot lock {path}: {err.strerror}; use a local study directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        yield path
    finally:
        os.close(fd)       # releases the flock
