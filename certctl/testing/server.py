"""``certctl server`` and ``certctl agent`` as child processes, for the tests, the benchmarks
and ``certctl demo``.

A child is ``sys.executable -m certctl <role> --env-file F`` with every ``CERTCTL_*``
variable of the parent removed, so the env file is its whole configuration; it runs and
stops as every harness child does (``certctl.testing.processes``).

``control_plane(...)`` bootstraps TLS material as ``certctl server init-tls`` does, writes
an env file with generated operator/bootstrap secrets, starts ``certctl server`` on a free
loopback port and waits for ``/ready`` over HTTPS (trusting only the generated CA). On exit
it sends SIGTERM and waits, killing the process only if it ignores the signal: what a
service manager does. Its output goes to ``server.log`` next to the env file, so a failed
test can show it. The demo starts its processes with the same pieces, so the harness and
the demo cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from certctl.testing import processes

__all__ = [
    "ServerProcess",
    "child_env",
    "control_plane",
    "start_certctl",
    "tls_material",
    "trusting",
    "write_env",
]


def child_env() -> dict[str, str]:
    """The parent's environment without ``CERTCTL_*``: the env file is the configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}


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


def trusting(ca_path: Path) -> ssl.SSLContext:
    """TLS 1.3 only, trusting only ``ca_path``: how agents reach the control plane."""
    context = ssl.create_default_context(cafile=str(ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def start_certctl(
    role: str, env_file: Path, log_path: Path, *, name: str | None = None
) -> processes.Child:
    """``certctl <role> --env-file env_file`` (role: ``server`` or ``agent``), run by this
    interpreter whether or not a ``certctl`` script is on PATH."""
    argv = [sys.executable, "-m", "certctl", role, "--env-file", str(env_file)]
    return processes.spawn(name or role, argv, log_path, env=child_env())


@dataclass
class ServerProcess:
    url: str
    port: int
    ca_path: Path
    api_key: str
    bootstrap_token: str
    env_file: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext:
        return trusting(self.ca_path)

    def client(self, *, key: str | None = None) -> httpx.Client:
        """A keep-alive client trusting only this server's CA; ``key`` defaults to the
        operator key, ``key=""`` sends no Authorization header."""
        token = self.api_key if key is None else key
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, verify=self.ssl_context(), headers=headers, timeout=30
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = processes.STOP_TIMEOUT) -> int:
        return processes.stop_process(self.process, timeout)


@contextlib.contextmanager
def control_plane(
    workdir: Path,
    *,
    database_url: str | None = None,
    tls_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    name: str = "server",
) -> Iterator[ServerProcess]:
    """Run ``certctl server`` until the block ends; see the module docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca, cert, key = tls_material(tls_dir or workdir / "tls")
    port = processes.free_port()
    api_key = f"test-operator-{secrets.token_hex(16)}"
    token = f"test-bootstrap-{secrets.token_hex(16)}"
    values = {
        "CERTCTL_SERVER_HOST": "127.0.0.1",
        "CERTCTL_SERVER_PORT": str(port),
        "CERTCTL_SERVER_TLS_CERT_PATH": str(cert),
        "CERTCTL_SERVER_TLS_KEY_PATH": str(key),
        "CERTCTL_API_KEYS": f"operator:{api_key}:admin",
        "CERTCTL_AGENT_BOOTSTRAP_TOKEN": token,
        "CERTCTL_CONFIG_ENCRYPTION_KEY": f"test-encryption-{secrets.token_hex(24)}",
        "CERTCTL_DATA_DIR": str(workdir / "data"),
        "CERTCTL_LOG_LEVEL": "warning",
        **({"CERTCTL_DATABASE_URL": database_url} if database_url else {}),
        **(extra_env or {}),
    }
    env_file = write_env(workdir / f"{name}.env", values)
    child = start_certctl("server", env_file, workdir / f"{name}.log", name=name)
    running = ServerProcess(
        f"https://127.0.0.1:{port}",
        port,
        ca,
        api_key,
        token,
        env_file,
        child.log_path,
        child.process,
        values,
    )
    try:
        processes.wait_ready(child, processes.https_ok(f"{running.url}/ready", trusting(ca)))
        yield running
    finally:
        running.stop()
