"""The two file layouts most connectors share, so no connector spells out its files by hand.

``LocalFiles``: explicit cert/key/chain paths, a reload and a validate command (NGINX,
Apache, Postfix, Dovecot). Without a separate chain file the chain is appended to the
certificate, because a server given only the leaf serves an incomplete chain.

``CertDir``: one directory and bare file names, the certificate always followed by its
chain (Traefik, Caddy, Envoy), since those servers take a full chain in one file.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Self, TypeVar

from pydantic import Field, model_validator

from certctl.connectors.targets.base import Connector, Material, TargetConfig, service_defaults
from certctl.connectors.targets.fields import (
    AbsolutePath,
    Account,
    CommandLine,
    FileMode,
    FileName,
)
from certctl.deploy import Command, File, FileDefaults, FileRole


class OwnedFiles(TargetConfig):
    """``<name>_file_mode``/``_owner``/``_group`` overrides for each of ``owned_files``.

    A mode or owner left unset keeps the existing file's; a new file gets the connector's
    default. Owner and group go together: one without the other is refused.
    """

    owned_files: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _owner_pairs(self) -> Self:
        for name in self.owned_files:
            owner, group = getattr(self, f"{name}_file_owner"), getattr(self, f"{name}_file_group")
            if (owner is None) != (group is None):
                raise ValueError(
                    f"{name}_file_owner and {name}_file_group must be set together; "
                    "set both or neither"
                )
        return self

    def file(
        self, name: str, path: str, data: bytes, role: FileRole, mode: int | None = None
    ) -> File:
        """The ``name`` file at ``path``; a configured mode beats the connector's ``mode``."""
        configured: Any = getattr(self, f"{name}_file_mode")
        return File(
            path=path,
            data=data,
            role=role,
            mode=mode if configured is None else configured,
            owner=getattr(self, f"{name}_file_owner"),
            group=getattr(self, f"{name}_file_group"),
        )


class FileSettings(OwnedFiles):
    owned_files: ClassVar[tuple[str, ...]] = ("cert", "key")

    cert_file_mode: FileMode | None = None
    cert_file_owner: Account | None = None
    cert_file_group: Account | None = None
    key_file_mode: FileMode | None = None
    key_file_owner: Account | None = None
    key_file_group: Account | None = None


def leaf_file(settings: FileSettings, path: str, material: Material, with_chain: bool) -> File:
    """The certificate file: the leaf, followed by its chain when ``with_chain``."""
    if with_chain and material.chain:
        return settings.file("cert", path, material.fullchain, FileRole.FULLCHAIN)
    return settings.file("cert", path, material.cert, FileRole.CERT)


class LocalFilesConfig(FileSettings):
    owned_files: ClassVar[tuple[str, ...]] = ("cert", "key", "chain")

    cert_path: AbsolutePath
    key_path: AbsolutePath
    chain_path: AbsolutePath | None = None
    chain_file_mode: FileMode | None = None
    chain_file_owner: Account | None = None
    chain_file_group: Account | None = None
    reload_command: CommandLine
    validate_command: CommandLine


def conventional(directory: str, reload: str, validate: str) -> dict[str, str]:
    """``config_defaults`` of a service with ``cert.pem`` and ``key.pem`` in ``directory``."""
    return {
        "cert_path": f"{directory}/cert.pem",
        "key_path": f"{directory}/key.pem",
        "reload_command": reload,
        "validate_command": validate,
    }


LC = TypeVar("LC", bound=LocalFilesConfig)


class LocalFiles(Connector[LC]):
    """Cert, key and optional chain at configured paths; reload and validate commands.

    ``key_mode`` is always applied to the key (an existing key's looser mode is not kept);
    certificates keep an existing file's mode and get ``defaults_mode`` when new, owned by
    the first of ``owners`` that exists on the host.
    """

    key_mode: ClassVar[int]
    owners: ClassVar[tuple[str, ...]]
    defaults_mode: ClassVar[int] = 0o644

    def files(self, material: Material) -> tuple[File, ...]:
        config = self.config
        separate_chain = config.chain_path is not None and bool(material.chain)
        files = [
            leaf_file(config, config.cert_path, material, with_chain=not separate_chain),
            config.file("key", config.key_path, material.key, FileRole.KEY, self.key_mode),
        ]
        if separate_chain and config.chain_path is not None:
            files.append(config.file("chain", config.chain_path, material.chain, FileRole.CHAIN))
        return tuple(files)

    def defaults(self) -> FileDefaults:
        return service_defaults(self.defaults_mode, self.owners)

    def validate_command(self) -> Command:
        return self.config.validate_command

    def reload_command(self) -> Command:
        return self.config.reload_command


class CertDirConfig(FileSettings):
    """Explicit modes by default (the earlier implementation's): 0644 certificate, 0600 key."""

    cert_dir: AbsolutePath
    cert_file: FileName = "cert.pem"
    key_file: FileName = "key.pem"
    cert_file_mode: FileMode = Field(default="0644", validate_default=True)
    key_file_mode: FileMode = Field(default="0600", validate_default=True)


DC = TypeVar("DC", bound=CertDirConfig)


class CertDir(Connector[DC]):
    """Full chain and key as two files in ``cert_dir``."""

    def files(self, material: Material) -> tuple[File, ...]:
        config = self.config
        return (
            leaf_file(config, self.path(config.cert_file), material, with_chain=True),
            config.file("key", self.path(config.key_file), material.key, FileRole.KEY),
        )

    def path(self, name: str) -> str:
        return os.path.join(self.config.cert_dir, name)
