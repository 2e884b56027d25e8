"""Envoy: full chain and key in ``cert_dir``, optionally the chain alone, and SDS.

With ``sds_config`` the plan also writes ``sds.json``, a file-based SDS resource named
``server_cert`` pointing at the deployed files and watching ``cert_dir``: Envoy then
reloads the certificate when the engine renames the new files into place, with no
command. Static ``tls_certificates`` in a bootstrap are read only at start, so without
SDS ``reload_command`` must restart or hot-restart Envoy. Every file, ``sds.json``
included, goes through one all-or-nothing apply (the earlier implementation wrote them
one by one and could leave a new certificate next to an old key).

The certificate file always holds the full chain, because ``certificate_chain`` is all
Envoy serves; the earlier implementation wrote the leaf alone when a separate chain file
was configured, so Envoy served an incomplete chain. ``chain_file`` is an extra copy.
"""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import Field

from certctl.connectors.targets.base import Material
from certctl.connectors.targets.fields import Account, CommandLine, FileMode, FileName
from certctl.connectors.targets.local import CertDir, CertDirConfig
from certctl.core.model import TargetType
from certctl.deploy import Command, File, FileRole

SDS_RESOURCE_NAME = "server_cert"
SDS_RESOURCE_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


class EnvoyConfig(CertDirConfig):
    owned_files: ClassVar[tuple[str, ...]] = ("cert", "key", "chain")

    chain_file: FileName | None = None
    chain_file_mode: FileMode = Field(default="0644", validate_default=True)
    chain_file_owner: Account | None = None
    chain_file_group: Account | None = None
    sds_config: bool = False
    sds_file: FileName = "sds.json"
    reload_command: CommandLine | None = None


class Envoy(CertDir[EnvoyConfig]):
    target_type = TargetType.ENVOY
    schema = EnvoyConfig

    def files(self, material: Material) -> tuple[File, ...]:
        config = self.config
        files = list(super().files(material))
        if config.chain_file is not None and material.chain:
            files.append(
                config.file("chain", self.path(config.chain_file), material.chain, FileRole.CHAIN)
            )
        if config.sds_config:
            files.append(
                config.file("cert", self.path(config.sds_file), self.sds_json(), FileRole.OTHER)
            )
        return tuple(files)

    def sds_json(self) -> bytes:
        config = self.config
        resource = {
            "@type": SDS_RESOURCE_TYPE,
            "name": SDS_RESOURCE_NAME,
            "tls_certificate": {
                "certificate_chain": {"filename": self.path(config.cert_file)},
                "private_key": {"filename": self.path(config.key_file)},
                "watched_directory": {"path": config.cert_dir},
            },
        }
        return json.dumps({"resources": [resource]}, indent=2).encode() + b"\n"

    def reload_command(self) -> Command | None:
        return self.config.reload_command
