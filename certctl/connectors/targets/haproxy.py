"""HAProxy: one PEM holding the leaf, its chain and its key (``crt`` in a ``bind`` line).

Mode 0600 unless ``pem_file_mode`` is set, even over an existing looser file, since the
file holds the private key; new files owned by ``haproxy``. ``reload_command`` is
required, ``validate_command`` optional (conventionally ``haproxy -c -f <cfg>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from certctl.connectors.targets.base import (
    Connector,
    Material,
    service_defaults,
    write_probe,
)
from certctl.connectors.targets.fields import AbsolutePath, Account, CommandLine, FileMode, Program
from certctl.connectors.targets.local import OwnedFiles
from certctl.core.model import TargetType
from certctl.deploy import Command, File, FileDefaults, FileRole

PEM_MODE = 0o600


class HAProxyConfig(OwnedFiles):
    owned_files: ClassVar[tuple[str, ...]] = ("pem",)

    pem_path: AbsolutePath
    pem_file_mode: FileMode = Field(default="0600", validate_default=True)
    pem_file_owner: Account | None = None
    pem_file_group: Account | None = None
    reload_command: CommandLine
    validate_command: CommandLine | None = None
    binary: Program = "haproxy"


class HAProxy(Connector[HAProxyConfig]):
    target_type = TargetType.HAPROXY
    schema = HAProxyConfig

    def files(self, material: Material) -> tuple[File, ...]:
        config = self.config
        return (config.file("pem", config.pem_path, material.combined, FileRole.COMBINED),)

    def defaults(self) -> FileDefaults:
        return service_defaults(PEM_MODE, ("haproxy",))

    def validate_command(self) -> Command | None:
        return self.config.validate_command

    def reload_command(self) -> Command:
        return self.config.reload_command

    def probe(self, staged: Mapping[str, str], workdir: str) -> Command:
        """``haproxy -c`` on a one-frontend config binding the staged PEM, which makes
        HAProxy load it and check that the key matches, as a reload would."""
        conf = write_probe(
            workdir,
            "probe-haproxy.cfg",
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n"
            "  timeout server 1s\nfrontend probe\n"
            f"  bind 127.0.0.1:9 ssl crt {staged[self.config.pem_path]}\n",
        )
        return (self.config.binary, "-c", "-f", conf)
