"""``certctl server`` and ``certctl agent`` as child processes: what the demo runs, and what
the test harness (``certctl.testing.server``) runs too.

A child is ``sys.executable -m certctl <role> --env-file F`` with every ``CERTCTL_*``
variable of the parent removed, so the env file is its whole configuration, and its output
appended to a log file. It runs in a process group of its own: a Ctrl-C in the terminal
reaches only the parent, which then stops its children in order (agents before the
server) by SIGTERM, as a service manager would, killing a child only if it ignores that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 40


class StartFailed(RuntimeError):
    """A child exited or did not become ready; the message ends with its log."""


def child_env() -> dict[str, str]:
    """The parent's environment without ``CERTCTL_*``: the env file is the configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}


def certctl_argv(*args: str) -> list[str]:
    """``certctl <args>`` run by this interpreter, whether or not a script is on PATH."""
    return [sys.executable, "-m", "certctl", *args]


def write_env(path: Path, values: Mapping[str, str]) -> Path:
    """``KEY=VALUE`` lines, created with mode 0600 (the file holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """``(ca, cert, key)`` as ``certctl server init-tls --dir directory`` makes them (kept
    when the certificate is already there)."""
    # Imported here: the PKI stack is needed only when material has to be made.
    from certctl.server.tls import init_tls  # noqa: PLC0415

    ca, cert, key = (directory / n for n in ("ca.pem", "server.pem", "server-key.pem"))
    if not cert.exists():
        directory.mkdir(parents=True, exist_ok=True)
        init_tls(directory.absolute(), hosts=(), force=True, now=datetime.now(UTC))
    return ca, cert, key


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails the way the server's own bind would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
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


def start_certctl(role: str, env_file: Path, log_path: Path, *, name: str | None = None) -> Child:
    """``certctl <role> --env-file env_file`` (role: ``server`` or ``agent``)."""
    argv = certctl_argv(role, "--env-file", str(env_file))
    return spawn(name or role, argv, log_path, env=child_env())


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


def trusting(ca_path: Path) -> ssl.SSLContext:
    """TLS 1.3 only, trusting only ``ca_path``: how agents reach the control plane."""
    context = ssl.create_default_context(cafile=str(ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def wait_ready(
    url: str,
    ca_path: Path,
    child: Child,
    *,
    timeout: float = READY_TIMEOUT,
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Poll ``url/ready`` until it answers 200; ``False`` if ``cancelled()`` first.

    Raises ``StartFailed`` (with the log) if the child exits or ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, verify=trusting(ca_path), timeout=5) as client:
        while not cancelled():
            if not child.running:
                raise StartFailed(
                    f"certctl {child.name} exited with status {child.process.returncode}; "
                    f"its log ({child.log_path}) ends with:\n{tail(child.log_path)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/ready").status_code == 200:
                    return True
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"certctl {child.name} was not ready within {timeout:g} s; its log "
                    f"({child.log_path}) ends with:\n{tail(child.log_path)}"
                )
            time.sleep(0.1)
    return False
