"""File: certificate, key, and optionally chain and full chain at paths the operator names.

For software that reads PEM files but has no connector of its own (a Java keystore
converter, a load balancer's watch directory, a mail gateway). Both commands are optional
because many such consumers reload on their own or are restarted elsewhere. Key mode 0600
always, new certificate files 0644, owned by the agent's user unless configured.

Verification is opt-in here, unlike every other connector: a generic file consumer has no
conventional TLS port, and handshaking with 127.0.0.1:443 by default would roll back every
deploy to a host where something else (or nothing) listens there. Setting
``post_deploy_verify.endpoint`` turns it on.

Like ``LocalFiles``, the chain follows the certificate in ``cert_path`` unless it has a
file of its own (``chain_path`` or ``fullchain_path``), since a server given only the leaf
serves an incomplete chain.
"""

from __future__ import annotations

from typing import ClassVar, Self

from cryptography import x509
from pydantic import model_validator

from certctl.connectors.targets.base import Connector, Material
from certctl.connectors.targets.fields import AbsolutePath, Account, CommandLine, FileMode
from certctl.connectors.targets.local import FileSettings, leaf_file
from certctl.core.model import TargetType
from certctl.deploy import Command, Endpoint, File, FileDefaults, FileRole

KEY_MODE = 0o600
CERT_MODE = 0o644

_PATH_FIELDS = ("cert_path", "key_path", "chain_path", "fullchain_path")


class FileConfig(FileSettings):
    owned_files: ClassVar[tuple[str, ...]] = ("cert", "key", "chain", "fullchain")

    cert_path: AbsolutePath
    key_path: AbsolutePath
    chain_path: AbsolutePath | None = None
    chain_file_mode: FileMode | None = None
    chain_file_owner: Account | None = None
    chain_file_group: Account | None = None
    fullchain_path: AbsolutePath | None = None
    fullchain_file_mode: FileMode | None = None
    fullchain_file_owner: Account | None = None
    fullchain_file_group: Account | None = None
    reload_command: CommandLine | None = None
    validate_command: CommandLine | None = None

    @model_validator(mode="after")
    def _distinct_paths(self) -> Self:
        """Caught here so the target is refused when it is created, not at its first deploy."""
        seen: dict[str, str] = {}
        for name in _PATH_FIELDS:
            path = getattr(self, name)
            if path is None:
                continue
            if path in seen:
                raise ValueError(f"{name} is the same file as {seen[path]}; give each its own path")
            seen[path] = name
        return self


class FileTarget(Connector[FileConfig]):
    target_type = TargetType.FILE
    schema = FileConfig

    def files(self, material: Material) -> tuple[File, ...]:
        config = self.config
        chain_elsewhere = config.chain_path is not None or config.fullchain_path is not None
        files = [
            leaf_file(config, config.cert_path, material, with_chain=not chain_elsewhere),
            config.file("key", config.key_path, material.key, FileRole.KEY, KEY_MODE),
        ]
        if config.chain_path is not None and material.chain:
            files.append(config.file("chain", config.chain_path, material.chain, FileRole.CHAIN))
        if config.fullchain_path is not None:
            role = FileRole.FULLCHAIN if material.chain else FileRole.CERT
            files.append(config.file("fullchain", config.fullchain_path, material.fullchain, role))
        return tuple(files)

    def defaults(self) -> FileDefaults:
        return FileDefaults(mode=CERT_MODE)

    def validate_command(self) -> Command | None:
        return self.config.validate_command

    def reload_command(self) -> Command | None:
        return self.config.reload_command

    def endpoint(self, leaf: x509.Certificate) -> Endpoint | None:
        if self.config.post_deploy_verify.endpoint is None:
            return None
        return super().endpoint(leaf)
