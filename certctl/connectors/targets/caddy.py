"""Caddy: full chain and key in ``cert_dir``, loaded by Caddy's ``load_files``.

``mode: api`` (the default, as before): the engine writes the files, then Caddy is told
through its admin API (``admin_api``, default ``http://localhost:2019``) to reload them
(see ``caddy_admin``); the validate step checks that the admin API answers. The files are
the fallback the earlier implementation only reached when the API failed: they are always
written, so a restarted Caddy loads the same certificate. An API failure is a reload
failure and rolls the files back, rather than silently leaving Caddy on the old
certificate. ``mode: file``: ``reload_command`` and ``validate_command`` instead, by default
Debian's ``caddy reload --config /etc/caddy/Caddyfile --force`` and
``caddy validate --config /etc/caddy/Caddyfile``. Explicit commands win in both modes.

Defaults: ``cert.pem`` 0644 and ``key.pem`` 0600, explicit.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AfterValidator

from certctl.connectors.targets.base import write_probe
from certctl.connectors.targets.fields import CommandLine, Program, parse_command_field
from certctl.connectors.targets.local import CertDir, CertDirConfig
from certctl.core.model import TargetType
from certctl.deploy import Command

DEFAULT_ADMIN_API = "http://localhost:2019"
FILE_MODE_RELOAD = "caddy reload --config /etc/caddy/Caddyfile --force"
FILE_MODE_VALIDATE = "caddy validate --config /etc/caddy/Caddyfile"


def _admin_url(value: str) -> str:
    url = urllib.parse.urlsplit(value)
    if url.scheme not in {"http", "https"} or not url.netloc or url.path not in {"", "/"}:
        raise ValueError(
            f"{value!r} is not an admin API address; write it like 'http://localhost:2019'"
        )
    return value.rstrip("/")


class CaddyConfig(CertDirConfig):
    mode: Literal["api", "file"] = "api"
    admin_api: Annotated[str, AfterValidator(_admin_url)] = DEFAULT_ADMIN_API
    reload_command: CommandLine | None = None
    validate_command: CommandLine | None = None
    binary: Program = "caddy"


class Caddy(CertDir[CaddyConfig]):
    target_type = TargetType.CADDY
    schema = CaddyConfig

    def _hook(self, configured: Command | None, action: str, file_mode: str) -> Command:
        if configured is not None:
            return configured
        if self.config.mode == "api":
            module = "certctl.connectors.targets.caddy_admin"
            return (sys.executable, "-m", module, action, self.config.admin_api)
        return parse_command_field(file_mode)

    def reload_command(self) -> Command:
        return self._hook(self.config.reload_command, "reload", FILE_MODE_RELOAD)

    def validate_command(self) -> Command:
        return self._hook(self.config.validate_command, "check", FILE_MODE_VALIDATE)

    def probe(self, staged: Mapping[str, str], workdir: str) -> Command:
        """``caddy validate`` on a config loading the staged files: Caddy provisions its TLS
        app, which parses the certificate and checks that the key matches."""
        files = {"certificate": staged[self.path(self.config.cert_file)]}
        files["key"] = staged[self.path(self.config.key_file)]
        probe = {
            "admin": {"disabled": True},
            "storage": {"module": "file_system", "root": f"{workdir}/storage"},
            "apps": {"tls": {"certificates": {"load_files": [files]}}},
        }
        conf = write_probe(workdir, "probe-caddy.json", json.dumps(probe))
        return (self.config.binary, "validate", "--config", conf)
