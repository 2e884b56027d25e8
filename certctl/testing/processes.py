"""Child processes for the harness, the demo and the benchmarks: start, wait, stop.

Every child the test suites, ``certctl demo`` and the benchmarks run goes through here, so
they all start, probe and stop processes the same way. A child runs in a process group of
its own, so a Ctrl-C in the terminal reaches only the parent, which then stops its
children in order by SIGTERM, as a service manager would, killing a child only if it
ignores that. Its output (stdout and stderr) is appended to a log file, whose tail every
failure message ends with.

Readiness is a probe (a function answering "ready yet?") polled by ``wait_ready`` while
the child is alive; ``tcp_listening`` and ``https_ok`` are the probes the harness needs.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from certctl.core.errors import CertctlError

__all__ = [
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "Child",
    "Probe",
    "StartFailed",
    "free_port",
    "https_ok",
    "port_in_use",
    "spawn",
    "stop_all",
    "stop_process",
    "tail",
    "tcp_listening",
    "wait_ready",
]

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 40

Probe = Callable[[], bool]


class StartFailed(CertctlError):
    """A child exited or did not become ready; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails the way a server's own bind would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it was never written)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Child:
    """One running child and the log file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_running(self) -> None:
        """Raise ``StartFailed`` (with the end of the log) if the child has exited."""
        if not self.running:
            raise StartFailed(
                f"{self.name} exited with status {self.process.returncode}; its log "
                f"({self.log_path}) ends with:\n{tail(self.log_path)}"
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; SIGKILL only if it is still running after ``timeout``."""
        return stop_process(self.process, timeout)


def spawn(name: str, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str]) -> Child:
    """Start ``argv`` in its own process group with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - argv is built by our callers, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            process_group=0,
        )
    return Child(name, process, log_path)


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then wait; SIGKILL only if it is still running after ``timeout``."""
    _terminate(process)
    return _reap(process, timeout)


def stop_all(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> dict[str, int]:
    """SIGTERM to every child first, then wait for each: they shut down in parallel.

    One signal each: a second SIGTERM could arrive after a child restored the default
    handler on its way out, and kill it mid-shutdown.
    """
    for child in children:
        _terminate(child.process)
    return {child.name: _reap(child.process, timeout) for child in children}


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def _reap(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.returncode


def _never() -> bool:
    return False


def wait_ready(
    child: Child,
    ready: Probe,
    *,
    timeout: float = READY_TIMEOUT,
    cancelled: Callable[[], bool] = _never,
    interval: float = 0.1,
) -> bool:
    """Poll ``ready()`` until it answers ``True``; ``False`` if ``cancelled()`` first.

    Raises ``StartFailed`` (with the end of the log) if the child exits or ``timeout``
    passes: a child that died is reported at once, not after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while not cancelled():
        child.check_running()
        if ready():
            return True
        if time.monotonic() > deadline:
            raise StartFailed(
                f"{child.name} was not ready within {timeout:g} s; its log "
                f"({child.log_path}) ends with:\n{tail(child.log_path)}"
            )
        time.sleep(interval)
    return False


def tcp_listening(host: str, port: int, *, timeout: float = 0.5) -> Probe:
    """A probe: does something accept TCP connections on ``host:port``?"""

    def probe() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
            return True
        return False

    return probe


def https_ok(url: str, context: ssl.SSLContext, *, timeout: float = 5.0) -> Probe:
    """A probe: does ``GET url`` answer 200 over TLS verified with ``context``?

    A fresh connection each time: a half-started server may accept and then drop one.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"https_ok needs an https:// URL with a host, not {url!r}")
    host, port, path = parts.hostname, parts.port or 443, parts.path or "/"

    def probe() -> bool:
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
        try:
            connection.request("GET", path)
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    return probe
