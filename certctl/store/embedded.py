"""The embedded PostgreSQL of the zero-config default (``CERTCTL_DATABASE_URL`` unset).

The server binaries come from the ``pgserver`` wheel, so a first run needs no system
PostgreSQL. The cluster lives in ``$CERTCTL_DATA_DIR/postgres`` and listens only on a unix
socket (no TCP port to collide with or expose). Run as root, pgserver runs PostgreSQL as
a ``pgserver`` system user (PostgreSQL refuses root) and makes the data dir's parents
traversable for it.

pgserver starts or joins a cluster, but cannot be trusted to recover one (measured, with
PostgreSQL 16 from pgserver 0.1.4, after a SIGKILL of the postmaster):

- a killed postmaster stays a zombie until init reaps it (1.5 to 2 s here), and pgserver's
  liveness test, like ``kill(pid, 0)``, takes a zombie (or a reused pid) for alive, so it
  "joins" a dead server instead of starting one;
- its ``cleanup`` stops the cluster when the last process that used it exits, whoever
  started it, and a process that was killed stays on its list for ever.

So this module reads ``postmaster.pid`` itself (``live_postmaster``: a non-zombie
``postgres`` process working in this data dir, status ``ready``), starts PostgreSQL with
``pg_ctl`` when it must, clears the lock files a dead postmaster left (safe: PostgreSQL's
shared-memory interlock still refuses to start while an orphaned backend holds the old
segment; an orphan still busy after ``KILL_ORPHANS_AFTER`` is killed), and stops on exit
only a postmaster this process started (the first one or a restart). Starts and stops
take an ``flock`` on ``postgres.lock`` in the data dir, which excludes other processes
and threads alike. pgserver is kept for what it does well: ``initdb``, the system user
and permissions, its binaries.

Calls block (``initdb``, ``pg_ctl``, waits): trio callers use ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import psutil

from certctl.logging import get_logger
from certctl.store.errors import DataDirUnusable

with warnings.catch_warnings():
    # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset and falls back
    # to /tmp/runtime-<uid>, which is where pgserver then keeps only its lock file: fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning)
    from pgserver._commands import create_command_function
    from pgserver.postgres_server import PostgresServer, get_server
    from pgserver.utils import ensure_prefix_permissions, find_suitable_socket_dir

pg_ctl = create_command_function("pg_ctl")
"""pgserver's own ``pg_ctl`` (its binaries, its output handling), run as its user."""

SUBDIR: Final = "postgres"
LOCK: Final = "postgres.lock"
KILL_ORPHANS_AFTER: Final = 5.0
"""Seconds a restart waits for the dead postmaster's busy backends to end by themselves
(a running query keeps one alive, and its shared memory in use) before killing them."""
START_TIMEOUT: Final = 30

# postmaster.pid lines (PostgreSQL's LOCK_FILE_LINE_*): pid, data dir, start time, port,
# socket dir, listen address, shared memory key, status.
_PID, _START, _PORT, _SOCKETS, _STATUS = 0, 2, 3, 4, 7

Identity = tuple[int, str]
"""A postmaster: its pid and its start time (a pid alone can be reused)."""

log = get_logger(__name__)


def _usable(data_dir: Path) -> Path:
    """``data_dir/postgres``, after making sure the data dir can hold it."""
    fix = "point CERTCTL_DATA_DIR at a writable directory, or set CERTCTL_DATABASE_URL"
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirUnusable(f"CERTCTL_DATA_DIR {data_dir} is not a directory; {fix}.")
    pgdata = data_dir / SUBDIR
    if pgdata.exists() and not pgdata.is_dir():
        raise DataDirUnusable(f"{pgdata} is not a directory; remove it or {fix}.")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise DataDirUnusable(
            f"CERTCTL_DATA_DIR {data_dir} is not usable ({exc.strerror}); {fix}."
        ) from None
    return pgdata.absolute()


def _pid_file(pgdata: Path) -> list[str] | None:
    """The lines of ``postmaster.pid``; ``None`` when absent or not yet holding a pid."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return lines if lines and lines[0].strip().isdigit() else None


def _line(lines: list[str], index: int) -> str:
    return lines[index].strip() if len(lines) > index else ""


def _serves(process: psutil.Process, pgdata: Path) -> bool:
    """A live (not zombie) ``postgres`` of this data dir: PostgreSQL works in it."""
    try:
        return (
            process.status() != psutil.STATUS_ZOMBIE
            and process.name() == "postgres"
            and Path(process.cwd()) == pgdata
        )
    except psutil.Error:
        return False


def live_postmaster(pgdata: Path, *, ready: bool = True) -> Identity | None:
    """The postmaster serving ``pgdata`` (accepting connections, unless ``ready=False``),
    or ``None``: no ``postmaster.pid``, or it names a pid that is gone, a zombie, or some
    other process. Reads files and ``/proc`` only; no connection, no query."""
    lines = _pid_file(pgdata)
    if lines is None:
        return None
    try:
        process = psutil.Process(int(lines[_PID]))
    except psutil.Error:
        return None
    if not _serves(process, pgdata) or (ready and _line(lines, _STATUS) != "ready"):
        return None
    return process.pid, _line(lines, _START)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


class EmbeddedPostgres:
    """A running embedded cluster; ``dsn`` reaches it over its unix socket."""

    def __init__(self, pgdata: Path, server: PostgresServer, owned: Identity | None) -> None:
        self.pgdata = pgdata
        self._server = server
        self._user: str | None = server.system_user
        self._owned = owned
        self._lock = pgdata.parent / LOCK
        # The running postmaster's socket dir (a process that joined may have chosen
        # another), else pgserver's choice; every restart reuses it, so dsn() stays put.
        lines = _pid_file(pgdata)
        sockets = _line(lines, _SOCKETS) if lines and live_postmaster(pgdata) else ""
        self._sockets = (
            Path(sockets) if sockets else find_suitable_socket_dir(pgdata, server.runtime_path)
        )

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        """Start (initialising on first use) the cluster in ``data_dir/postgres``, or join
        the one another certctl process already runs there."""
        pgdata = _usable(data_dir)
        try:
            with _locked(data_dir / LOCK):
                before = live_postmaster(pgdata)
                if before is None:
                    _clear_stale(pgdata, kill_orphans=False)
                # cleanup_mode=None: neither pgserver nor its exit hook ever stops a server.
                server = get_server(pgdata, cleanup_mode=None)
                after = live_postmaster(pgdata)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataDirUnusable(
                f"the embedded PostgreSQL did not start in {pgdata} ({exc}); read {pgdata}/log "
                "for the cause, or set CERTCTL_DATABASE_URL to use another PostgreSQL."
            ) from None
        cluster = cls(pgdata, server, after if after is not None and after != before else None)
        if after is None:  # pgserver "joined" a dead one, or a start failed for now
            cluster.restart(deadline=START_TIMEOUT)
        return cluster

    def dsn(self, database: str = "postgres") -> str:
        """A connection URL for ``database`` on this cluster, over its unix socket."""
        return f"postgresql://postgres:@/{database}?host={self._sockets}"

    @property
    def pid(self) -> int | None:
        """The live postmaster's pid, or ``None`` while none serves."""
        found = live_postmaster(self.pgdata)
        return None if found is None else found[0]

    @property
    def owned(self) -> bool:
        """Whether the running postmaster is one this process started."""
        return self._owned is not None and self._owned == live_postmaster(self.pgdata)

    def ensure_running(self, stop: threading.Event | None = None) -> bool:
        """Start the cluster again if its postmaster is gone; ``True`` if this call did.
        Retries with backoff until it works, or until ``stop`` is set."""
        if live_postmaster(self.pgdata) is not None:
            return False
        log.warning("embedded PostgreSQL postmaster is gone; starting it again")
        return self.restart(stop=stop)

    def restart(
        self, *, stop: threading.Event | None = None, deadline: float | None = None
    ) -> bool:
        """Block until a postmaster serves; ``True`` if this call started it, ``False`` if
        one was (or came) up meanwhile. Backs off from 0.1 s to 5 s between attempts;
        ``TimeoutError`` after ``deadline`` seconds or once ``stop`` is set."""
        began = time.monotonic()
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            with _locked(self._lock):
                if live_postmaster(self.pgdata) is not None:
                    return False
                waited = time.monotonic() - began
                if _clear_stale(self.pgdata, kill_orphans=waited >= KILL_ORPHANS_AFTER):
                    started = self._start_attempt(attempt)
                    if started is not None:
                        self._owned = started
                        log.warning(
                            "embedded PostgreSQL started again",
                            pid=started[0],
                            attempt=attempt,
                            seconds=round(time.monotonic() - began, 2),
                        )
                        return True
            if deadline is not None and time.monotonic() - began + delay > deadline:
                raise TimeoutError(f"the embedded PostgreSQL did not start within {deadline} s")
            pause = delay * random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries only
            if stop is not None and stop.wait(pause):
                raise TimeoutError("the embedded PostgreSQL restart was abandoned: stopping")
            if stop is None:
                time.sleep(pause)
            delay = min(5.0, delay * 2)

    def _start_attempt(self, attempt: int) -> Identity | None:
        if self._user is not None and self._sockets != self.pgdata:
            ensure_prefix_permissions(self._sockets)
            self._sockets.chmod(0o777)
        options = ["-w", "-t", str(START_TIMEOUT), "-o", '-h ""', "-o", f"-k {self._sockets}"]
        try:
            pg_ctl(
                [*options, "-l", str(self.pgdata / "log"), "start"],
                pgdata=self.pgdata,
                user=self._user,
                timeout=START_TIMEOUT + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("embedded PostgreSQL did not start", attempt=attempt, error=str(exc))
            return None
        return live_postmaster(self.pgdata)

    def stop(self) -> bool:
        """Stop the postmaster if, and only if, this process started it; ``True`` if so."""
        with _locked(self._lock):
            self._server.cleanup()  # leaves pgserver's list of users; stops nothing
            current = live_postmaster(self.pgdata, ready=False)
            if current is None or current != self._owned:
                return False
            try:
                pg_ctl(
                    ["-w", "-t", str(START_TIMEOUT), "-m", "fast", "stop"],
                    pgdata=self.pgdata,
                    user=self._user,
                    timeout=START_TIMEOUT + 5,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(current[0], signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            self._owned = None
            return True


def _clear_stale(pgdata: Path, *, kill_orphans: bool) -> bool:
    """With no postmaster serving (the caller holds the lock): remove the lock files a dead
    one left, and with ``kill_orphans`` kill its leftover processes. ``True`` when a start
    can work now; ``False`` while another process's postmaster is starting or orphans of
    the dead one still hold its shared memory."""
    lines = _pid_file(pgdata)
    if lines is not None and live_postmaster(pgdata, ready=False) is None:
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        sockets = _line(lines, _SOCKETS)
        if sockets and Path(sockets).is_dir():
            port = _line(lines, _PORT) or "5432"
            (Path(sockets) / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
    if live_postmaster(pgdata, ready=False) is not None:
        return False
    orphans = [p for p in psutil.process_iter() if _serves(p, pgdata)]
    if not orphans:
        return True
    if not kill_orphans:
        return False
    log.warning("killing processes the dead postmaster left", pids=[p.pid for p in orphans])
    for orphan in orphans:
        with contextlib.suppress(psutil.Error):
            orphan.kill()
    # Not psutil.wait_procs: for a non-child it waits for init to reap the zombie, which
    # takes seconds; a zombie no longer holds shared memory.
    until = time.monotonic() + 2
    while any(_serves(p, pgdata) for p in orphans) and time.monotonic() < until:
        time.sleep(0.02)
    return not any(_serves(p, pgdata) for p in orphans)
