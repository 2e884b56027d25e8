"""What each sidecar server is, and the ``Sidecar`` interface its launchers implement.

A ``Server`` is one server type: its Debian package, its image, its ports, how to start,
reload and validate it (as a local process and in its container) and the connector config
that deploys to its files. A ``Sidecar`` is one of them running, whichever launcher
started it (``certctl.testing.sidecars.launchers``): where it listens, which files it
serves, and what a client sees (``served``, by ``probes.served_leaf``).

Configs are rendered from the templates in ``templates/<server>/`` (see the README
there), read with ``importlib.resources``: they are package data, so the harness works
from an installed wheel as from a checkout. The sidecar lays out its initial files with
the connector's own plan, so the files the server starts with are exactly the ones a
deploy replaces.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509

from certctl.connectors.targets.registry import load_connector
from certctl.core.errors import CertctlError
from certctl.core.model import TargetType
from certctl.deploy import Command, Endpoint
from certctl.pki.pem import fingerprint_sha256
from certctl.testing import haproxy_reload
from certctl.testing.scripts import executable
from certctl.testing.sidecars.probes import PROBE_ERRORS, StartTLS, served_leaf

__all__ = [
    "FAST_VERIFY",
    "SERVERS",
    "START_TIMEOUT",
    "TEMPLATES",
    "Commands",
    "Place",
    "Server",
    "Sidecar",
    "SidecarFailed",
    "SidecarUnavailable",
    "render_templates",
    "substitute",
]

TEMPLATES: Traversable = importlib.resources.files("certctl.testing.sidecars") / "templates"
START_TIMEOUT = 20.0


class SidecarUnavailable(CertctlError):
    """The server cannot run here; the message is the exact command that fixes it."""


class SidecarFailed(CertctlError):
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


class NginxServer(Server):
    name = "nginx"
    target_type = TargetType.NGINX
    package = "nginx"
    binary = "nginx"
    image = "nginx:1.27-alpine"
    settled_children = 1  # worker_processes in templates/nginx/nginx.conf

    def local(self, place: Place) -> Commands:
        base = (self.binary, "-p", place.run, "-e", place.log, "-c", f"{place.conf}/nginx.conf")
        return Commands(start=base, reload=(*base, "-s", "reload"), validate=(*base, "-t", "-q"))

    def container(self, place: Place) -> Commands:
        base = (self.binary, "-c", f"{place.conf}/nginx.conf")
        return Commands(start=base, reload=(*base, "-s", "reload"), validate=(*base, "-t", "-q"))


class HAProxyServer(Server):
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


class ApacheServer(Server):
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


class CaddyServer(Server):
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


class PostfixServer(Server):
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


class DovecotServer(Server):
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


class TraefikServer(Server):
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


class EnvoyServer(Server):
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
    for server in (
        NginxServer(),
        HAProxyServer(),
        ApacheServer(),
        CaddyServer(),
        PostfixServer(),
        DovecotServer(),
        TraefikServer(),
        EnvoyServer(),
    )
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
            except PROBE_ERRORS as exc:
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
    """Render ``templates/<name>/`` into ``conf_dir`` (``certs/`` into ``cert_dir``)."""
    values = place.values()
    for relative, source in _template_files(TEMPLATES / name, ()):
        if relative[0] == "certs":
            target = cert_dir.joinpath(*relative[1:])
        else:
            target = conf_dir.joinpath(*relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(substitute(source.read_text(encoding="utf-8"), values, source))


def _template_files(
    folder: Traversable, parents: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Traversable]]:
    """``(relative parts, file)`` under ``folder``, in name order (``Traversable`` has no
    ``rglob``: a wheel's resources need not be a directory tree on disk)."""
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            yield from _template_files(entry, (*parents, entry.name))
        elif entry.is_file():
            yield (*parents, entry.name), entry


def substitute(text: str, values: Mapping[str, str], source: Traversable) -> str:
    """``text`` with each ``{{name}}`` replaced; an unknown one is an error naming ``source``."""

    def value(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise SidecarFailed(
                f"{source} uses unknown placeholder {match.group(0)}; use one listed in "
                "certctl/testing/sidecars/templates/README.md or add it to Place.values()."
            ) from None

    return _PLACEHOLDER.sub(value, text)
