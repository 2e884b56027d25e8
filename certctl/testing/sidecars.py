"""Real servers to deploy to: one ``Sidecar`` interface, two launchers.

``launch(name, material)`` starts the named server serving ``material`` and yields a
``Sidecar``: in a container (testcontainers) when a Docker engine answers, otherwise as a
local process from the distribution's package, with its own config, pid files, logs and
queues under a fresh temporary prefix and on free loopback ports, so the host's own
instance (if any) and its configuration are never read or touched. Configs are the
templates in ``containers/sidecars/`` (see the README there).

The sidecar lays out its initial files with the connector's own plan, so the files the
server starts with are exactly the ones a deploy replaces. ``served`` fetches the leaf
with the standard library's ``ssl`` (and ``smtplib``/``imaplib`` for STARTTLS): a check
that shares no code with the connector's verifier it is used to judge.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import importlib.util
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import psutil
import trio
from cryptography import x509

from certctl.connectors.targets.registry import load_connector
from certctl.core.model import TargetType
from certctl.deploy import Command, Endpoint
from certctl.pki.pem import fingerprint_sha256
from certctl.testing import haproxy_reload
from certctl.testing.scripts import executable

TEMPLATES = Path(__file__).resolve().parents[2] / "containers" / "sidecars"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
StartTLS = Literal["smtp", "imap"]


class SidecarUnavailable(Exception):
    """The server cannot run here; the message is the exact command that fixes it."""


class SidecarFailed(Exception):
    """The server did not start or stop; the message carries its log."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where a rendered config points, as the server sees it (host or container paths)."""

    conf: str
    run: str
    log: str
    certs: str
    listen: str
    ports: Mapping[str, int]
    user: str = ""
    modules: str = ""

    def values(self) -> dict[str, str]:
        values = {
            "conf": self.conf,
            "run": self.run,
            "log": self.log,
            "certs": self.certs,
            "listen": self.listen,
            "user": self.user,
            "modules": self.modules,
        }
        values.update({f"port_{name}": str(port) for name, port in self.ports.items()})
        return values


@dataclass(frozen=True, slots=True)
class Commands:
    """How to run the server; ``start`` stays in the foreground unless ``daemonizes``.

    A daemon is stopped by ``SIGTERM`` to the pid in ``pidfile``: its own stop command would
    parse the config, which a test may have broken on purpose.
    """

    start: Command
    reload: Command
    validate: Command
    daemonizes: bool = False
    pidfile: str | None = None


class Server(ABC):
    """One server type: its packages, image, ports, commands and connector config."""

    name: ClassVar[str]
    target_type: ClassVar[TargetType]
    package: ClassVar[str | None]  # Debian package; None: not packaged, Docker only
    binary: ClassVar[str]
    image: ClassVar[str | None]  # None: no usable image, local process only
    ports: ClassVar[tuple[str, ...]] = ("https",)  # the first is the implicit-TLS endpoint
    starttls: ClassVar[tuple[str, StartTLS] | None] = None
    local_user: ClassVar[str] = ""
    local_modules: ClassVar[str] = ""
    image_user: ClassVar[str] = ""
    image_modules: ClassVar[str] = ""
    # Children a local process has once a reload has settled; None: nothing to wait for.
    # NGINX's old workers keep accepting for a moment after a reload, so a handshake
    # then may still get the old leaf even though new workers already serve the new one.
    settled_children: ClassVar[int | None] = None

    def local(self, place: Place) -> Commands:
        """Commands for the local process; ``place`` holds host paths."""
        raise SidecarUnavailable(self.install_hint())

    def container(self, place: Place) -> Commands:
        """Commands inside the container; ``start`` is the container's command."""
        raise SidecarUnavailable(f"{self.name} has no container definition; run it locally.")

    def target_config(self, certs: str, commands: Commands) -> dict[str, Any]:
        """The connector config that deploys to this server's files with these commands."""
        return _paths(certs, cert_path="cert.pem", key_path="key.pem") | _hooks(commands)

    def prepare(self, place: Place) -> None:
        """Create what the local process needs before it starts (queues, state dirs)."""
        os.makedirs(place.run, exist_ok=True)

    def install_hint(self) -> str:
        if self.package is None:
            return (
                f"{self.name} has no Debian package here; run the tests on a machine with a "
                "Docker engine to use its container."
            )
        return f"DEBIAN_FRONTEND=noninteractive apt-get install -y {self.package}"


def _paths(certs: str, **names: str) -> dict[str, Any]:
    return {key: f"{certs}/{name}" for key, name in names.items()}


def _hooks(commands: Commands) -> dict[str, Any]:
    return {"reload_command": list(commands.reload), "validate_command": list(commands.validate)}


class Nginx(Server):
    name = "nginx"
    target_type = TargetType.NGINX
    package = "nginx"
    binary = "nginx"
    image = "nginx:1.27-alpine"
    settled_children = 1  # worker_processes in containers/sidecars/nginx/nginx.conf

    def local(self, place: Place) -> Commands:
        base = (self.binary, "-p", place.run, "-e", place.log, "-c", f"{place.conf}/nginx.conf")
        return Commands(start=base, reload=(*base, "-s", "reload"), validate=(*base, "-t", "-q"))

    def container(self, place: Place) -> Commands:
        base = (self.binary, "-c", f"{place.conf}/nginx.conf")
        return Commands(start=base, reload=(*base, "-s", "reload"), validate=(*base, "-t", "-q"))


class HAProxy(Server):
    """Master-worker mode: ``SIGUSR2`` to the master is HAProxy's hitless reload."""

    name = "haproxy"
    target_type = TargetType.HAPROXY
    package = "haproxy"
    binary = "haproxy"
    image = "haproxy:2.9-alpine"

    def local(self, place: Place) -> Commands:
        cfg, master = f"{place.conf}/haproxy.cfg", f"{place.run}/master.sock"
        return Commands(
            start=(self.binary, "-W", "-db", "-S", master, "-f", cfg),
            reload=(executable(haproxy_reload.__file__), master),
            validate=(self.binary, "-c", "-q", "-f", cfg),
        )

    def container(self, place: Place) -> Commands:
        cfg = f"{place.conf}/haproxy.cfg"
        return Commands(
            start=(self.binary, "-W", "-db", "-f", cfg),
            reload=("kill", "-USR2", "1"),
            validate=(self.binary, "-c", "-q", "-f", cfg),
        )

    def target_config(self, certs: str, commands: Commands) -> dict[str, Any]:
        return _paths(certs, pem_path="site.pem") | _hooks(commands)


class Apache(Server):
    name = "apache"
    target_type = TargetType.APACHE
    package = "apache2"
    binary = "apache2"
    image = "httpd:2.4-alpine"
    local_user = "www-data"
    local_modules = "/usr/lib/apache2/modules"
    image_user = "daemon"
    image_modules = "/usr/local/apache2/modules"

    def local(self, place: Place) -> Commands:
        base = (self.binary, "-f", f"{place.conf}/httpd.conf")
        return Commands(
            start=(*base, "-k", "start"),
            reload=(*base, "-k", "graceful"),
            validate=(*base, "-t"),
            daemonizes=True,
            pidfile=f"{place.run}/httpd.pid",
        )

    def container(self, place: Place) -> Commands:
        base = ("httpd", "-f", f"{place.conf}/httpd.conf")
        return Commands(
            start=(*base, "-DFOREGROUND"), reload=(*base, "-k", "graceful"), validate=(*base, "-t")
        )

    def target_config(self, certs: str, commands: Commands) -> dict[str, Any]:
        paths = _paths(certs, cert_path="cert.pem", key_path="key.pem", chain_path="chain.pem")
        return paths | _hooks(commands)


class Caddy(Server):
    """File mode by default (reload through ``caddy reload``); tests switch to API mode."""

    name = "caddy"
    target_type = TargetType.CADDY
    package = "caddy"
    binary = "caddy"
    image = "caddy:2.8-alpine"
    ports = ("https", "admin")

    def _commands(self, place: Place, admin: str) -> Commands:
        config = f"{place.conf}/caddy.json"
        return Commands(
            start=(self.binary, "run", "--config", config),
            reload=(self.binary, "reload", "--config", config, "--address", admin, "--force"),
            validate=(self.binary, "validate", "--config", config),
        )

    def local(self, place: Place) -> Commands:
        return self._commands(place, f"127.0.0.1:{place.ports['admin']}")

    def container(self, place: Place) -> Commands:
        return self._commands(place, f"localhost:{place.ports['admin']}")

    def target_config(self, certs: str, commands: Commands) -> dict[str, Any]:
        return {"cert_dir": certs, "mode": "file"} | _hooks(commands)


class Postfix(Server):
    """STARTTLS on ``smtp`` and implicit TLS (wrapper mode) on ``smtps``, no chroot."""

    name = "postfix"
    target_type = TargetType.POSTFIX
    package = "postfix"
    binary = "postfix"
    image = None
    ports = ("smtps", "smtp")
    starttls = ("smtp", "smtp")

    def local(self, place: Place) -> Commands:
        base = (self.binary, "-c", place.conf)
        return Commands(
            start=(*base, "start"),
            reload=(*base, "reload"),
            validate=(*base, "check"),
            daemonizes=True,
            pidfile=f"{place.run}/spool/pid/master.pid",
        )

    def prepare(self, place: Place) -> None:
        """Postfix checks that its data directory belongs to ``mail_owner``."""
        super().prepare(place)
        os.makedirs(f"{place.run}/spool", exist_ok=True)
        os.makedirs(f"{place.run}/data", exist_ok=True)
        shutil.chown(f"{place.run}/data", user="postfix")


class Dovecot(Server):
    """STARTTLS on ``imap`` and implicit TLS on ``imaps``."""

    name = "dovecot"
    target_type = TargetType.DOVECOT
    package = "dovecot-imapd"
    binary = "dovecot"
    image = "dovecot/dovecot:2.3.21"
    ports = ("imaps", "imap")
    starttls = ("imap", "imap")

    def local(self, place: Place) -> Commands:
        conf = f"{place.conf}/dovecot.conf"
        return Commands(
            start=(self.binary, "-c", conf),
            reload=("doveadm", "-c", conf, "reload"),
            validate=("doveconf", "-c", conf, "-n"),
            daemonizes=True,
            pidfile=f"{place.run}/base/master.pid",
        )

    def container(self, place: Place) -> Commands:
        local = self.local(place)
        return Commands(start=(*local.start, "-F"), reload=local.reload, validate=local.validate)


class Traefik(Server):
    """Reloads when its file provider sees the renames in the watched cert directory."""

    name = "traefik"
    target_type = TargetType.TRAEFIK
    package = None
    binary = "traefik"
    image = "traefik:v3.1"

    def container(self, place: Place) -> Commands:
        return Commands(
            start=("traefik", f"--configFile={place.conf}/traefik.yml"),
            reload=("true",),
            validate=("true",),
        )

    def target_config(self, certs: str, commands: Commands) -> dict[str, Any]:
        return {"cert_dir": certs}


class Envoy(Server):
    """Serves the SDS secret in ``sds.json``, reloaded when the cert directory changes."""

    name = "envoy"
    target_type = TargetType.ENVOY
    package = None
    binary = "envoy"
    image = "envoyproxy/envoy:v1.32-latest"

    def container(self, place: Place) -> Commands:
        return Commands(
            start=("envoy", "-c", f"{place.conf}/envoy.yaml"),
            reload=("true",),
            validate=("envoy", "--mode", "validate", "-c", f"{place.conf}/envoy.yaml"),
        )

    def target_config(self, certs: str, commands: Commands) -> dict[str, Any]:
        return {"cert_dir": certs, "sds_config": True}


SERVERS: Mapping[str, Server] = {
    server.name: server
    for server in (Nginx(), HAProxy(), Apache(), Caddy(), Postfix(), Dovecot(), Traefik(), Envoy())
}
# Connector configs for sidecars verify quickly: tests deploy hundreds of times, and a
# reload that lands after the first handshake should cost 50 ms, not the default 1 s.
FAST_VERIFY = {"attempts": 6, "backoff": "50ms", "max_backoff": "1s", "timeout": "5s"}


@dataclass
class Sidecar(ABC):
    """A running server: where it listens, which files it serves, how to reload it."""

    server: Server
    prefix: Path
    cert_dir: Path  # on this host; the connector writes here
    endpoint: Endpoint = field(init=False)
    starttls_endpoint: Endpoint | None = field(init=False, default=None)
    ports: dict[str, int] = field(init=False, default_factory=dict)  # as reachable from here
    served_files: tuple[Path, ...] = field(init=False, default=())
    commands: Commands = field(init=False)

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def reload_argv(self) -> Command:
        return self.commands.reload

    @property
    def validate_argv(self) -> Command:
        return self.commands.validate

    @property
    def conf_dir(self) -> Path:
        return self.prefix / "conf"

    def cert_paths(self) -> tuple[Path, ...]:
        """The files the connector writes and the server serves."""
        return self.served_files

    def target_config(self, **overrides: Any) -> dict[str, Any]:
        """The connector config for this sidecar; an override of ``None`` drops the key."""
        config = self.server.target_config(str(self.cert_dir), self.commands)
        config["post_deploy_verify"] = {"endpoint": _address(self.endpoint), **FAST_VERIFY}
        config.update(overrides)
        return {k: v for k, v in config.items() if v is not None}

    @abstractmethod
    def settle(self) -> None:
        """Return once processes from before the last reload have stopped accepting."""

    def served(self, *, starttls: bool = False, timeout: float = 5.0) -> x509.Certificate:
        """The leaf a new client gets, by a plain stdlib handshake once reloads settled."""
        self.settle()
        if starttls:
            if self.starttls_endpoint is None or self.server.starttls is None:
                raise ValueError(f"{self.name} has no STARTTLS listener")
            return served_leaf(self.starttls_endpoint, self.server.starttls[1], timeout)
        return served_leaf(self.endpoint, None, timeout)

    def wait_served(
        self, fingerprint: str, *, starttls: bool = False, timeout: float = 10.0
    ) -> None:
        """Poll until the server presents the leaf with this SHA-256 (reloads are async)."""
        deadline = time.monotonic() + timeout
        while True:
            served = fingerprint_sha256(self.served(starttls=starttls))
            if served == fingerprint:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} still serves {served} after {timeout:g} s, not {fingerprint}"
                )
            time.sleep(0.05)

    def break_config(self) -> Path:
        """Append a line every server's parser rejects to the main config; returns its path.

        The running server keeps its loaded config until a reload, so the break is seen
        only by the validate command, as when an operator saves a broken edit.
        """
        main = self.conf_dir / sorted(p.name for p in self.conf_dir.iterdir() if p.is_file())[0]
        with main.open("a", encoding="utf-8") as handle:
            handle.write("\ncertctl-deliberately-broken-line\n")
        return main

    def layout(self, cert_pem: bytes, chain_pem: bytes, key_pem: bytes) -> None:
        """Write ``material`` where the connector would, as files that existed before.

        Before ``start``: a container's published endpoint is not known yet, and the
        layout needs only the paths.
        """
        config = self.server.target_config(str(self.cert_dir), self.commands)
        connector = load_connector(self.server.target_type, config)
        files = connector.plan(cert_pem, chain_pem, key_pem).files
        for item in files:
            path = Path(item.path)
            path.write_bytes(item.data)
            path.chmod(item.mode if item.mode is not None else 0o644)
        self.served_files = tuple(Path(item.path) for item in files)

    def render(self, place: Place) -> None:
        render_templates(self.server.name, self.conf_dir, self.cert_dir, place)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.served(timeout=2.0)
                if self.starttls_endpoint is not None:
                    self.served(starttls=True, timeout=2.0)
            except (OSError, smtplib.SMTPException, imaplib.IMAP4.error) as exc:
                if time.monotonic() > deadline:
                    raise SidecarFailed(
                        f"{self.name} did not serve TLS within {START_TIMEOUT:g} s ({exc}); "
                        f"its log:\n{self.logs()}"
                    ) from exc
                time.sleep(0.1)
            else:
                return

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def logs(self) -> str: ...


def _address(endpoint: Endpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"


_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render_templates(name: str, conf_dir: Path, cert_dir: Path, place: Place) -> None:
    """Render ``containers/sidecars/<name>/`` into ``conf_dir`` (``certs/`` into ``cert_dir``)."""
    values = place.values()
    source_dir = TEMPLATES / name
    for source in sorted(p for p in source_dir.rglob("*") if p.is_file()):
        relative = source.relative_to(source_dir)
        if relative.parts[0] == "certs":
            target = cert_dir.joinpath(*relative.parts[1:])
        else:
            target = conf_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(substitute(source.read_text(), values, source))


def substitute(text: str, values: Mapping[str, str], source: Path) -> str:
    def value(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise SidecarFailed(f"{source} uses unknown placeholder {match.group(0)}") from None

    return _PLACEHOLDER.sub(value, text)


def served_leaf(
    endpoint: Endpoint, starttls: StartTLS | None = None, timeout: float = 5.0
) -> x509.Certificate:
    """One handshake (after STARTTLS when asked); no certificate validation: we compare."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    der: bytes | None
    if starttls == "smtp":
        with smtplib.SMTP(endpoint.host, endpoint.port, timeout=timeout) as smtp:
            smtp.starttls(context=context)
            der = cast(ssl.SSLSocket, smtp.sock).getpeercert(binary_form=True)
    elif starttls == "imap":
        imap = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=timeout)
        try:
            imap.starttls(ssl_context=context)
            der = imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        finally:
            imap.shutdown()
    else:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{endpoint} presented no certificate")
    return x509.load_der_x509_certificate(der)


@contextlib.asynccontextmanager
async def decoy_tls_server(cert_pem: bytes, key_pem: bytes) -> AsyncIterator[Endpoint]:
    """A loopback TLS listener presenting another certificate: a verify target that must
    fail, as when the endpoint in a target config points at the wrong server."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="certctl-decoy-") as scratch:
        pem = Path(scratch) / "decoy.pem"
        pem.write_bytes(cert_pem + key_pem)
        context.load_cert_chain(pem)

    async def handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.do_handshake()
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_ssl_over_tcp, handshake, 0, context, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        yield Endpoint("127.0.0.1", port)
        nursery.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LocalSidecar(Sidecar):
    """The server as a child process of the test, everything under ``prefix``."""

    process: subprocess.Popen[bytes] | None = field(init=False, default=None)
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
            ports={name: free_port() for name in server.ports},
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
        log = open(f"{place.run}/stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "HOME": place.run, "XDG_DATA_HOME": place.run}
        env["XDG_CONFIG_HOME"] = place.run
        self.process = subprocess.Popen(  # noqa: S603 - argv built from our templates
            list(self.commands.start),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        if self.commands.daemonizes and self.process.wait(timeout=START_TIMEOUT) != 0:
            raise SidecarFailed(f"{' '.join(self.commands.start)} failed:\n{self.logs()}")
        self.wait_ready()

    def settle(self) -> None:
        wanted, process = self.server.settled_children, self.process
        if wanted is None or process is None or process.poll() is not None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while len(children := _children(process.pid)) > wanted:
            if time.monotonic() > deadline:
                raise SidecarFailed(
                    f"{self.name} still runs {len(children)} workers {STOP_TIMEOUT:g} s after "
                    f"a reload, not {wanted}; its log:\n{self.logs()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server and every process it forked (its whole session)."""
        commands, process = self.commands, self.process
        if commands.pidfile is not None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(Path(commands.pidfile).read_text().split()[0]), signal.SIGTERM)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
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
