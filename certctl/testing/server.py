"""A real ``certctl server`` in a child process, for integration tests, e2e and benchmarks.

``control_plane(...)`` bootstraps TLS material as ``certctl server init-tls`` does, writes
an env file with generated operator/bootstrap secrets, starts ``certctl server`` on a free
loopback port and waits for ``/ready`` over HTTPS (trusting only the generated CA). On exit
it sends SIGTERM and waits, killing the process only if it ignores the signal: what a
service manager does. Its output goes to ``server.log`` next to the env file, so a failed
test can show it.

The process handling is the product's own (``certctl.demo.processes``, which ``certctl
demo`` runs its server and agents with), so the harness and the demo cannot drift apart.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from certctl.demo import processes
from certctl.demo.processes import StartFailed, free_port, tls_material, write_env

__all__ = [
    "READY_TIMEOUT",
    "ControlPlane",
    "StartFailed",
    "control_plane",
    "tls_material",
    "write_env",
]

READY_TIMEOUT = processes.READY_TIMEOUT


@dataclass
class ControlPlane:
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
        return processes.trusting(self.ca_path)

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

    def stop(self, timeout: float = 30) -> int:
        return processes.stop_process(self.process, timeout)


@contextlib.contextmanager
def control_plane(
    workdir: Path,
    *,
    database_url: str | None = None,
    tls_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    name: str = "server",
) -> Iterator[ControlPlane]:
    """Run ``certctl server`` until the block ends; see the module docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca, cert, key = tls_material(tls_dir or workdir / "tls")
    port = free_port()
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
    child = processes.start_certctl("server", env_file, workdir / f"{name}.log", name=name)
    running = ControlPlane(
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
        processes.wait_ready(running.url, ca, child, timeout=READY_TIMEOUT)
        yield running
    finally:
        running.stop()
