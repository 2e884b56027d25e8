"""Per-destination locks: one deploy at a time per path, in this process and across processes.

Locks are taken in sorted path order so two plans sharing paths cannot deadlock (AB/BA).
The in-process lock is a ``threading.Lock`` because deploys run in worker threads; the
``flock`` on a lock file in the state directory keeps a second agent process (or a manual
``certctl deploy``) out as well. Lock files are never deleted: deleting a flock file races
with a process that has just opened it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

_registry: dict[str, threading.Lock] = {}
_registry_guard = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _registry_guard:
        return _registry.setdefault(path, threading.Lock())


class PathLocks:
    def __init__(self, lock_dir: str) -> None:
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        self._lock_dir = lock_dir

    @contextmanager
    def hold(self, paths: Iterable[str]) -> Iterator[None]:
        with ExitStack() as stack:
            for path in sorted(set(paths)):
                lock = _thread_lock(path)
                lock.acquire()
                stack.callback(lock.release)
                name = hashlib.sha256(path.encode()).hexdigest()[:32] + ".lock"
                fd = os.open(
                    os.path.join(self._lock_dir, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                stack.callback(os.close, fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
