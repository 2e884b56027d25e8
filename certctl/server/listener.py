"""The one HTTPS listener: hypercorn's trio worker on our live ``SSLContext``.

There is no plaintext listener, not even a redirect: hypercorn only wraps the sockets it
is given, and it is given TLS sockets only, so a plaintext request on the port fails the
TLS handshake and the connection closes without an HTTP response.

Several worker processes (``CERTCTL_SERVER_WORKERS``) share listening sockets bound once
in the parent, as ``hypercorn.run`` does, so the kernel spreads connections across them;
each worker has its own event loop, store pool and ``SSLContext``.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.typing import ASGIFramework

from certctl.config import ConfigError, Settings
from certctl.core.clock import Clock
from certctl.server import connection
from certctl.server.tls import HOST_VAR, ReloadableTLS

__all__ = [
    "BindError",
    "ListenerConfig",
    "bind_sockets",
    "run_workers",
    "serve",
    "watch_sighup",
]

# The TLS handshake gets 10 s: a slow or stalled client must not hold a slot for a minute.
# Reading a request (CERTCTL_SERVER_READ_TIMEOUT, 30 s) and idle keep-alive connections
# (CERTCTL_SERVER_IDLE_TIMEOUT, 60 s) are settings, as in Go's http.Server.
HANDSHAKE_TIMEOUT = 10.0
# How long in-flight requests may finish after a shutdown request before they are cut.
GRACEFUL_TIMEOUT = 30.0
BACKLOG = 1024

_PORT_VAR = "CERTCTL_SERVER_PORT"
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class BindError(ConfigError):
    """The listening address cannot be bound (taken, not ours, or not allowed)."""


class ListenerConfig(Config):
    """hypercorn settings for the HTTPS listener, serving ``tls``'s live context.

    hypercorn builds a fresh context from file paths by default; returning our object
    instead is what lets a SIGHUP reload reach new handshakes.
    """

    def __init__(self, tls: ReloadableTLS, settings: Settings) -> None:
        self._tls = tls
        self.worker_class = "trio"
        # Requests are logged by the application with its request ids; hypercorn's
        # own errors go through the root logger that certctl.logging configures.
        self.accesslog = None
        self.errorlog = logging.getLogger("hypercorn.error")
        self.include_server_header = False
        self.ssl_handshake_timeout = HANDSHAKE_TIMEOUT
        self.read_timeout = max(1, round(settings.server_read_timeout.total_seconds()))
        self.keep_alive_timeout = settings.server_idle_timeout.total_seconds()
        self.graceful_timeout = GRACEFUL_TIMEOUT
        self.backlog = BACKLOG

    @property
    def ssl_enabled(self) -> bool:
        return True

    def create_ssl_context(self) -> ssl.SSLContext:
        return self._tls.context


def bind_sockets(settings: Settings) -> list[socket.socket]:
    """The listening socket for ``CERTCTL_SERVER_HOST:CERTCTL_SERVER_PORT``, inheritable
    so worker processes can share it; raises ``BindError`` naming the variable to change."""
    host = settings.server_host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, settings.server_port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise _bind_error(settings, exc) from None
    sock.setblocking(False)
    sock.set_inheritable(True)
    return [sock]


def _bind_error(settings: Settings, exc: OSError) -> BindError:
    address = f"{settings.server_host}:{settings.server_port}"
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return BindError(
            _PORT_VAR,
            f"cannot listen on {address} ({exc.strerror}); stop what holds the port or set "
            f"{_PORT_VAR} to a free port (ports under 1024 need privileges).",
        )
    return BindError(
        HOST_VAR,
        f"cannot listen on {address} ({exc.strerror or exc}); set {HOST_VAR} to an address "
        "of this machine, such as 127.0.0.1 or 0.0.0.0.",
    )


connection.install()


async def serve(
    app: ASGIFramework,
    settings: Settings,
    tls: ReloadableTLS,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve ``app`` over HTTPS until ``shutdown_trigger`` returns, then drain gracefully.

    ``sockets`` are listening sockets from ``bind_sockets`` (a worker's inherited ones);
    without them the address in ``settings`` is bound here and closed on return.
    ``task_status.started`` receives the ``https://`` addresses once connections are
    accepted. Calls ``worker_serve`` rather than ``hypercorn.trio.serve``, which is the
    same minus the ability to take sockets bound elsewhere.
    """
    owned = bind_sockets(settings) if sockets is None else []
    try:
        await worker_serve(
            ASGIWrapper(app),
            ListenerConfig(tls, settings),
            sockets=Sockets(
                secure_sockets=list(sockets) if sockets is not None else owned,
                insecure_sockets=[],
                quic_sockets=[],
            ),
            shutdown_trigger=shutdown_trigger,
            task_status=task_status,
        )
    finally:
        for sock in owned:
            sock.close()


async def watch_sighup(
    tls: ReloadableTLS,
    clock: Clock,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reload the certificate on every SIGHUP, for ever; ``started`` once the handler is in.

    Signals that arrive while a reload runs are coalesced into one more reload, which is
    all a burst of rotations needs.
    """
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            tls.reload(clock.now())


# --------------------------------------------------------------------------- workers


def run_workers(settings: Settings, worker_main: Callable[[list[socket.socket]], None]) -> int:
    """Bind once, then run ``worker_main(sockets)`` in ``CERTCTL_SERVER_WORKERS`` processes.

    One worker runs in this process. More are spawned (a fresh interpreter each: forking
    a process that may hold threads and database connections is unsafe) and receive the
    sockets; this process forwards SIGTERM, SIGINT and SIGHUP to them and returns once
    they have exited. ``worker_main`` must be picklable and reports failure by raising
    ``SystemExit``. Returns 0 when every worker exited cleanly, else 1.
    """
    sockets = bind_sockets(settings)
    try:
        if settings.server_workers == 1:
            return _run_here(worker_main, sockets)
        return _Supervisor(worker_main, sockets).run(settings.server_workers)
    finally:
        for sock in sockets:
            sock.close()


def _run_here(
    worker_main: Callable[[list[socket.socket]], None], sockets: list[socket.socket]
) -> int:
    try:
        worker_main(sockets)
    except SystemExit as exc:
        # The exit status a spawned worker raising the same would have had.
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


class _Supervisor:
    """The parent of spawned workers: forwards signals and ends all when one ends."""

    def __init__(
        self, worker_main: Callable[[list[socket.socket]], None], sockets: list[socket.socket]
    ) -> None:
        self._worker_main = worker_main
        self._sockets = sockets
        self._workers: list[BaseProcess] = []
        self._stopping = False

    def run(self, count: int) -> int:
        previous = {signum: signal.getsignal(signum) for signum in _FORWARDED}
        # Ignored dispositions survive exec, so workers start with SIGHUP and SIGINT
        # ignored until their trio receivers take over: a reload request during a slow
        # start must not kill a worker. SIGTERM keeps its default, so stopping a worker
        # that has not started serving yet still works.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._forward)
        try:
            self._spawn(count)
            signal.signal(signal.SIGHUP, self._forward)
            signal.signal(signal.SIGINT, self._forward)
            return self._wait()
        finally:
            # Only reached with workers alive when spawning or waiting failed: none may
            # outlive the supervisor and keep serving unsupervised.
            for worker in self._workers:
                if worker.exitcode is None:
                    worker.terminate()
                    worker.join()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _spawn(self, count: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        for index in range(count):
            if self._stopping:
                return
            worker = spawn.Process(
                target=self._worker_main,
                args=(self._sockets,),
                name=f"certctl-worker-{index + 1}",
            )
            worker.start()
            self._workers.append(worker)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        """SIGHUP as itself; SIGINT and SIGTERM as SIGTERM, the stop signal a worker
        never ignores, even before its trio receivers are in place."""
        if signum != signal.SIGHUP:
            self._stopping = True
            signum = signal.SIGTERM
        for worker in self._workers:
            # exitcode reaps, so a worker whose pid could be reused is never signalled.
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    def _wait(self) -> int:
        if self._workers:  # none when a stop request came before the first start
            multiprocessing.connection.wait([worker.sentinel for worker in self._workers])
        if not self._stopping:
            # A worker died on its own: stop the rest rather than serve at a fraction
            # of the capacity without anyone noticing.
            self._stopping = True
            for worker in self._workers:
                if worker.exitcode is None:
                    worker.terminate()
        for worker in self._workers:
            worker.join()
        return 0 if all(worker.exitcode == 0 for worker in self._workers) else 1
