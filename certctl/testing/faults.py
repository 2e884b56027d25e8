"""Fault injection for the deploy engine: crashes, I/O errors and a power-cut model.

``FaultPlan`` numbers every filesystem and process step of a run and fires at most one
fault at a chosen step: an ``OSError`` with a chosen errno, a crash or a power cut. A
crash raises ``SimulatedCrash`` and every later step raises it too, so nothing after the
crash point runs, as if the process had died.

``FaultyFileSystem`` performs operations on a real directory but models durability itself
(it never calls the real fsync, which also keeps thousands of examples fast): a power cut
rewrites each watched directory to what a power cut would leave, that is the entries as of
the directory's last fsync, each holding its contents as of that file's last fsync (empty
if never synced). Without that model a missing directory fsync could never fail a test.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from certctl.deploy.fs import FileSystem, OsFileSystem, Stat
from certctl.deploy.run import Command, CommandFailed


class SimulatedCrash(BaseException):
    """The process died. A ``BaseException`` so the engine's ``except`` clauses cannot
    swallow it, just as they could not run after a real power cut."""


@dataclass(frozen=True, slots=True)
class Fault:
    """Fail step number ``at`` (0-based, counting only ``op`` steps if given).

    ``errno`` ``None`` means the process dies there; with ``power_cut`` the machine loses
    power too, so whatever was not fsynced is lost. A plain crash keeps the page cache:
    both extremes matter, since one tests atomicity and the other durability.
    """

    at: int
    errno: int | None = None
    op: str | None = None
    power_cut: bool = False


class FaultPlan:
    """Counts steps and fires the planned fault once; ``fired`` records where."""

    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault
        self.steps = 0
        self._matching = 0
        self.fired: tuple[str, str] | None = None
        self.crashed = False
        self._on_crash: list[Callable[[], None]] = []

    def on_power_cut(self, callback: Callable[[], None]) -> None:
        self._on_crash.append(callback)

    def step(self, op: str, target: str) -> None:
        if self.crashed:
            raise SimulatedCrash(f"{op} {target} after the crash")
        self.steps += 1
        if self.fault is None or self.fault.op not in (None, op):
            return
        index = self._matching
        self._matching += 1
        if index != self.fault.at:
            return
        self.fired = (op, target)
        if self.fault.errno is None:
            self.crashed = True
            if self.fault.power_cut:
                for callback in self._on_crash:
                    callback()
            raise SimulatedCrash(f"crash before {op} {target}")
        raise OSError(self.fault.errno, os.strerror(self.fault.errno), target)


@dataclass(frozen=True, slots=True)
class _Inode:
    data: bytes
    mode: int
    uid: int
    gid: int


class FaultyFileSystem:
    """A ``FileSystem`` over real files in ``dirs`` with injected faults and a power-cut model.

    One instance plays the kernel: keep it across simulated process deaths (``arm`` a new
    plan for the next process) so that what a dead process left unsynced can still be lost
    to a later power cut. Files already in ``dirs`` at construction count as durable;
    paths outside ``dirs`` pass through unmodelled.
    """

    def __init__(
        self,
        dirs: Iterable[str],
        faults: FaultPlan | None = None,
        inner: FileSystem | None = None,
    ) -> None:
        self._inner = inner or OsFileSystem()
        self.faults = faults or FaultPlan()
        self.faults.on_power_cut(self._power_cut)
        self._dirs = sorted({os.path.abspath(d) for d in dirs})
        self._ids = itertools.count()
        self._live: dict[str, int] = {}
        self._durable: dict[int, _Inode] = {}
        self._entries: dict[str, dict[str, int]] = {}
        self._load_disk()

    def arm(self, fault: Fault | None) -> FaultPlan:
        """A fresh fault plan for the next process run on this same disk."""
        self.faults = FaultPlan(fault)
        self.faults.on_power_cut(self._power_cut)
        return self.faults

    def _load_disk(self) -> None:
        """Take the directories as they are on disk now as the durable state."""
        self._live.clear()
        self._durable.clear()
        for directory in self._dirs:
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    ident = next(self._ids)
                    self._live[path] = ident
                    self._durable[ident] = self._snapshot(path)
            self._entries[directory] = self._listing(directory)

    def read(self, path: str) -> bytes:
        self.faults.step("read", path)
        return self._inner.read(path)

    def stat(self, path: str) -> Stat | None:
        self.faults.step("stat", path)
        return self._inner.stat(path)

    def listdir(self, path: str) -> list[str]:
        self.faults.step("listdir", path)
        return self._inner.listdir(path)

    def create(self, path: str, data: bytes) -> None:
        try:
            self.faults.step("create", path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EIO):  # a short write leaves a partial file
                self._inner.create(path, data[: len(data) // 2])
                self._track(path)
            raise
        self._inner.create(path, data)
        self._track(path)

    def chmod(self, path: str, mode: int) -> None:
        self.faults.step("chmod", path)
        self._inner.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.faults.step("chown", path)
        self._inner.chown(path, uid, gid)

    def fsync(self, path: str) -> None:
        self.faults.step("fsync", path)
        if path in self._live:
            self._durable[self._live[path]] = self._snapshot(path)

    def rename(self, src: str, dst: str) -> None:
        self.faults.step("rename", dst)
        self._inner.rename(src, dst)
        if src in self._live:
            self._live[dst] = self._live.pop(src)

    def remove(self, path: str) -> None:
        self.faults.step("remove", path)
        self._inner.remove(path)
        self._live.pop(path, None)

    def fsync_dir(self, path: str) -> None:
        self.faults.step("fsync_dir", path)
        if path in self._entries:
            self._entries[path] = self._listing(path)

    def _track(self, path: str) -> None:
        if os.path.dirname(path) in self._entries:
            self._live[path] = next(self._ids)

    def _listing(self, directory: str) -> dict[str, int]:
        return {
            os.path.basename(p): ident
            for p, ident in self._live.items()
            if os.path.dirname(p) == directory
        }

    @staticmethod
    def _snapshot(path: str) -> _Inode:
        st = os.stat(path)
        with open(path, "rb") as handle:
            return _Inode(handle.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid)

    def _power_cut(self) -> None:
        """Rewrite every watched directory to what survives: synced entries, synced bytes."""
        lost = _Inode(b"", 0o600, os.geteuid(), os.getegid())
        for directory in self._dirs:
            durable = self._entries[directory]
            for name in self._listing(directory):
                if name not in durable:
                    os.unlink(os.path.join(directory, name))
            for name, ident in durable.items():
                path = os.path.join(directory, name)
                inode = self._durable.get(ident, lost)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(inode.data)
                os.chown(path, inode.uid, inode.gid)
                os.chmod(path, inode.mode)
        self._load_disk()


class ScriptedRunner:
    """FAKE ``Runner``, for tests only: it runs nothing and fails on command.

    It exists because the property tests must make the validate or reload step fail on an
    exact call, and crash at an exact step, deterministically; unit tests exercise the
    real ``SubprocessRunner`` with real commands.
    """

    def __init__(self, faults: FaultPlan | None = None) -> None:
        self.faults = faults or FaultPlan()
        self.calls: list[Command] = []
        self._failures: dict[Command, float] = {}

    def fail(self, argv: Command, times: float = math.inf) -> None:
        """Make the next ``times`` runs of ``argv`` fail (all of them by default)."""
        self._failures[argv] = times

    def run(self, argv: Command, timeout: float) -> str:
        try:
            self.faults.step("run", " ".join(argv))
        except OSError as exc:  # as SubprocessRunner reports a command that cannot start
            raise CommandFailed(argv, f"could not start: {exc.strerror}", "") from exc
        self.calls.append(argv)
        remaining = self._failures.get(argv, 0)
        if remaining > 0:
            self._failures[argv] = remaining - 1
            raise CommandFailed(argv, "exited with status 1", "scripted failure")
        return ""
