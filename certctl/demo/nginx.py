"""A private NGINX for the demo, when ``nginx`` is installed: a real deploy target.

Everything lives under the demo directory (config, pid file, logs, temp paths) and it
listens on a free loopback port, so the host's own NGINX and its configuration are never
read or touched. It serves one HTTPS virtual host per site, each from its own certificate
files, which an agent's NGINX target replaces: write, ``nginx -t``, ``nginx -s reload``,
then a TLS handshake with the site's name proves the new certificate is the one served.

It starts with a throwaway self-signed certificate per site (NGINX will not start without
one); the first deploy replaces it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from certctl.connectors.targets.base import sample_material
from certctl.core.errors import CertctlError
from certctl.testing.processes import (
    Child,
    StartFailed,
    free_port,
    spawn,
    tail,
    tcp_listening,
    wait_ready,
)
from certctl.testing.server import child_env

START_TIMEOUT = 15.0
# Debian and others install nginx in /usr/sbin, which is not on every user's PATH.
_EXTRA_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_nginx() -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    return shutil.which("nginx", path=path)


class NginxFailed(CertctlError):
    """NGINX did not start; the message ends with its error log."""


class DemoNginx:
    """``sites`` maps a short site name (``www``) to the host name it serves."""

    def __init__(
        self, binary: str, prefix: Path, cert_root: Path, sites: Mapping[str, str]
    ) -> None:
        self.binary = binary
        self.prefix = prefix
        self.cert_root = cert_root
        self.sites = dict(sites)
        self.port = free_port()
        self.conf = prefix / "nginx.conf"
        self.error_log = prefix / "logs" / "error.log"
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cert_dir(self, site: str) -> Path:
        return self.cert_root / site

    @property
    def reload_argv(self) -> list[str]:
        return [*self._base(), "-s", "reload"]

    @property
    def validate_argv(self) -> list[str]:
        return [*self._base(), "-t", "-q"]

    def _base(self) -> list[str]:
        return [
            self.binary,
            "-p",
            str(self.prefix / "run"),
            "-e",
            str(self.error_log),
            "-c",
            str(self.conf),
        ]

    def start(self) -> None:
        for sub in ("run", "logs"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        for site, host in self.sites.items():
            self._placeholder(site, host)
        self.conf.write_text(self._config())
        self.child = spawn(
            "nginx", [*self._base()], self.prefix / "logs" / "stdout.log", env=child_env()
        )
        try:
            wait_ready(self.child, tcp_listening("127.0.0.1", self.port), timeout=START_TIMEOUT)
        except StartFailed:
            # NGINX reports why in its error log, not on the stdout the child's log holds.
            self.stop()
            raise NginxFailed(
                f"nginx did not start on 127.0.0.1:{self.port}; {self.error_log} ends "
                f"with:\n{tail(self.error_log, 10)}"
            ) from None

    def stop(self) -> int | None:
        """SIGTERM to the master process (NGINX's fast shutdown), then wait."""
        return None if self.child is None else self.child.stop(10)

    def target_config(self, site: str) -> dict[str, Any]:
        """The NGINX target config that deploys ``site``'s certificate to this server."""
        files = self.cert_dir(site)
        config: dict[str, Any] = {
            "cert_path": str(files / "cert.pem"),
            "key_path": str(files / "key.pem"),
            "binary": self.binary,
            "reload_command": self.reload_argv,
            "validate_command": self.validate_argv,
            "post_deploy_verify": {
                "endpoint": f"127.0.0.1:{self.port}",
                "server_name": self.sites[site],
                "attempts": 5,
            },
        }
        owner = _current_owner()
        if owner is not None:
            # New files would otherwise go to the nginx or www-data user, which only root
            # may give them to; the demo's own user is the one NGINX reads them as here.
            user, group = owner
            for name in ("cert", "key"):
                config[f"{name}_file_owner"] = user
                config[f"{name}_file_group"] = group
        return config

    def _placeholder(self, site: str, host: str) -> None:
        files = self.cert_dir(site)
        files.mkdir(parents=True, exist_ok=True)
        material = sample_material(host)
        (files / "cert.pem").write_bytes(material.cert)
        key = files / "key.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(material.key)

    def _config(self) -> str:
        run = self.prefix / "run"
        servers = "".join(
            f"""
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {host};
        ssl_certificate {self.cert_dir(site) / "cert.pem"};
        ssl_certificate_key {self.cert_dir(site) / "key.pem"};
        location / {{ return 200 "{host}: served by the certctl demo\\n"; }}
    }}
"""
            for site, host in self.sites.items()
        )
        temp = "".join(
            f"    {name}_temp_path {run / name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "# Written by `certctl demo`; this NGINX serves the demo's sites only.\n"
            "daemon off;\n"
            f"pid {run / 'nginx.pid'};\n"
            f"error_log {self.error_log} notice;\n"
            "worker_processes 1;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "    access_log off;\n"
            f"{temp}"
            f"{servers}"
            "}\n"
        )


def _current_owner() -> tuple[str, str] | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        return None
