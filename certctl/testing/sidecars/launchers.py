"""The two ways to run a sidecar, and ``launch``, which picks one.

``launch(name, ...)`` starts the named server serving the given material and yields a
``Sidecar``: in a container (testcontainers) when a Docker engine answers, otherwise as a
local process from the distribution's package, with its own config, pid files, logs and
queues under a fresh temporary prefix and on free loopback ports, so the host's own
instance (if any) and its configuration are never read or touched. A local server is a
harness child (``certctl.testing.processes``) like every other process the tests run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

from certctl.deploy import Endpoint
from certctl.testing import processes
from certctl.testing.sidecars.servers import (
    SERVERS,
    START_TIMEOUT,
    Commands,
    Place,
    Sidecar,
    SidecarFailed,
    SidecarUnavailable,
)

__all__ = ["ContainerSidecar", "LocalSidecar", "docker_engine_answers", "launch"]

STOP_TIMEOUT = 10.0


@dataclass
class LocalSidecar(Sidecar):
    """The server as a child process of the test, everything under ``prefix``."""

    child: processes.Child | None = field(init=False, default=None)
    place: Place = field(init=False)

    def __post_init__(self) -> None:
        server = self.server
        if server.package is None or shutil.which(server.binary) is None:
            raise SidecarUnavailable(server.install_hint())
        run = self.prefix / "run"
        self.place = Place(
            conf=str(self.conf_dir),
            run=str(run),
            log=str(run / f"{server.name}.log"),
            certs=str(self.cert_dir),
            listen="127.0.0.1",
            ports={name: processes.free_port() for name in server.ports},
            user=server.local_user,
            modules=server.local_modules,
        )
        self.ports = dict(self.place.ports)
        self.endpoint = Endpoint("127.0.0.1", self.ports[server.ports[0]])
        if server.starttls is not None:
            self.starttls_endpoint = Endpoint("127.0.0.1", self.place.ports[server.starttls[0]])
        self.commands = server.local(self.place)

    def start(self) -> None:
        server, place = self.server, self.place
        self.render(place)
        server.prepare(place)
        # HOME and the XDG directories too: Caddy keeps its state there.
        run = place.run
        env = {**os.environ, "HOME": run, "XDG_DATA_HOME": run, "XDG_CONFIG_HOME": run}
        log = Path(run) / "stdout.log"
        self.child = processes.spawn(server.name, self.commands.start, log, env=env)
        if self.commands.daemonizes and self.child.process.wait(timeout=START_TIMEOUT) != 0:
            raise SidecarFailed(f"{' '.join(self.commands.start)} failed:\n{self.logs()}")
        self.wait_ready()

    def settle(self) -> None:
        wanted, child = self.server.settled_children, self.child
        if wanted is None or child is None or not child.running:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while len(children := _children(child.process.pid)) > wanted:
            if time.monotonic() > deadline:
                raise SidecarFailed(
                    f"{self.name} still runs {len(children)} workers {STOP_TIMEOUT:g} s after "
                    f"a reload, not {wanted}; its log:\n{self.logs()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server and every process it forked, daemonized or not."""
        commands = self.commands
        if commands.pidfile is not None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(Path(commands.pidfile).read_text().split()[0]), signal.SIGTERM)
        if self.child is not None:
            self.child.stop(STOP_TIMEOUT)
        self._reap_session()

    def _reap_session(self) -> None:
        """Daemonized servers leave our child's session; find them by their prefix."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while _processes_under(str(self.prefix)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _processes_under(str(self.prefix)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def logs(self) -> str:
        run = Path(self.place.run)
        parts = [
            f"--- {path.name}\n{path.read_text(errors='replace')[-8000:]}"
            for path in sorted(run.glob("*.log"))
        ]
        return "\n".join(parts)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


def _processes_under(prefix: str) -> list[int]:
    """Pids started from or working in ``prefix``: our daemons and their children only.

    Postfix's master and Dovecot's workers do not name the config on their command line,
    but they work in their queue or base directory, which lies under the prefix.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if prefix.encode() in cmdline or cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(int(entry.name))
    return found


@dataclass
class ContainerSidecar(Sidecar):
    """The server's official image; configs and cert directory bind-mounted."""

    container: Any = field(init=False, default=None)
    place: Place = field(init=False)

    # The cert directory is mounted at its host path: Envoy's sds.json names the files
    # by the absolute paths the connector wrote, which must hold inside the container.
    CONF: ClassVar[str] = "/sidecar"

    def __post_init__(self) -> None:
        server = self.server
        if server.image is None:
            raise SidecarUnavailable(f"{server.name} has no container image; run it locally.")
        inner_ports = {name: 8443 + index for index, name in enumerate(server.ports)}
        self.place = Place(
            conf=self.CONF,
            run="/tmp",  # noqa: S108 - inside the container
            log="/dev/stderr",
            certs=str(self.cert_dir),
            listen="0.0.0.0",  # noqa: S104 - inside the container, published on loopback
            ports=inner_ports,
            user=server.image_user,
            modules=server.image_modules,
        )
        self.commands = server.container(self.place)

    def settle(self) -> None:
        """Nothing to wait on: the container's processes are not ours to inspect, so
        comparisons go through ``wait_served``, which polls."""

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415 - Docker only

        self.render(self.place)
        container = (
            DockerContainer(self.server.image or "")
            .with_volume_mapping(str(self.conf_dir), self.CONF, "ro")
            .with_volume_mapping(str(self.cert_dir), str(self.cert_dir), "rw")
            .with_exposed_ports(*self.place.ports.values())
            .with_command(list(self.commands.start))
            .with_kwargs(user="root")
        )
        self.container = container.start()
        host = container.get_container_host_ip()
        published = {
            name: int(container.get_exposed_port(port)) for name, port in self.place.ports.items()
        }
        ident = container.get_wrapped_container().id
        inner = self.commands
        self.commands = Commands(
            start=inner.start,
            reload=("docker", "exec", ident, *inner.reload),
            validate=("docker", "exec", ident, *inner.validate),
        )
        self.ports = published
        self.endpoint = Endpoint(host, published[self.server.ports[0]])
        if self.server.starttls is not None:
            self.starttls_endpoint = Endpoint(host, published[self.server.starttls[0]])
        self.wait_ready()

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()

    def logs(self) -> str:
        if self.container is None:
            return ""
        out, err = self.container.get_logs()
        return str((out + err).decode(errors="replace")[-8000:])


def docker_engine_answers(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers ``/_ping``, not merely when ``docker`` exists.

    Also needs the ``docker`` CLI (reloads run ``docker exec``) and testcontainers.
    ``SIDECAR_LAUNCHER=local`` forces local processes even where Docker runs. Plain
    sockets rather than docker-py, whose client leaks its socket when the engine is down.
    """
    if os.environ.get("SIDECAR_LAUNCHER") == "local" or shutil.which("docker") is None:
        return False
    if importlib.util.find_spec("testcontainers") is None:
        return False
    url = urllib.parse.urlsplit(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    try:
        if url.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as engine:
                engine.settimeout(timeout)
                engine.connect(url.path)
                reply = _ping(engine)
        elif url.scheme == "tcp" and url.hostname:
            with socket.create_connection((url.hostname, url.port or 2375), timeout) as engine:
                reply = _ping(engine)
        else:
            return False
    except OSError:
        return False
    return reply.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]


def _ping(engine: socket.socket) -> bytes:
    engine.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    return engine.recv(1024)


@contextlib.contextmanager
def launch(
    name: str, cert_pem: bytes, chain_pem: bytes, key_pem: bytes, *, docker: bool | None = None
) -> Iterator[Sidecar]:
    """Start ``name`` serving the given material; stop it and remove its prefix after.

    Raises ``SidecarUnavailable`` (with the install command) when the server cannot run.
    """
    server = SERVERS[name]
    use_docker = docker_engine_answers() if docker is None else docker
    kind: type[Sidecar] = ContainerSidecar if use_docker and server.image else LocalSidecar
    # Not pytest's tmp_path: its 0700 parents would stop the servers' unprivileged
    # workers (postfix, dovecot) from reaching their queues and sockets.
    prefix = Path(tempfile.mkdtemp(prefix=f"certctl-{name}-"))
    try:
        prefix.chmod(0o755)
        cert_dir = prefix / "certs"
        cert_dir.mkdir()
        sidecar = kind(server=server, prefix=prefix, cert_dir=cert_dir)
        sidecar.layout(cert_pem, chain_pem, key_pem)
        try:
            sidecar.start()
            yield sidecar
        finally:
            sidecar.stop()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
