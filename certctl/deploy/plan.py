"""What a deploy writes (``Plan``) and what happened (``Result``).

Plans are plain data so connectors can build them without touching the disk and tests can
generate them. ``check_plan`` rejects, before any I/O, everything that would otherwise
fail halfway through or silently do something other than what the target config says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from certctl.deploy.errors import PlanInvalid
from certctl.deploy.names import BACKUP_MARK, TEMP_MARK
from certctl.deploy.run import Command

DEFAULT_BACKUP_RETENTION = 3
DEFAULT_HOOK_TIMEOUT = 60.0


class FileRole(StrEnum):
    """What a file holds, so the staged material can be checked before anything goes live."""

    CERT = "cert"  # the leaf certificate alone
    CHAIN = "chain"  # intermediates, each followed by its issuer
    FULLCHAIN = "fullchain"  # the leaf, then its chain
    KEY = "key"  # the leaf's private key
    COMBINED = "combined"  # leaf, chain and key in one file (HAProxy, Postfix)
    OTHER = "other"  # opaque bytes; not checked


@dataclass(frozen=True, slots=True)
class FileDefaults:
    """Used for a new file when the plan gives no explicit mode or owner."""

    mode: int | None = None
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class File:
    """One destination. ``mode``/``owner``/``group`` left ``None`` keep the existing file's."""

    path: str
    data: bytes
    role: FileRole = FileRole.OTHER
    mode: int | None = None
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """All files of one target, written all-or-nothing.

    ``backup_retention``: backups kept per file after a successful deploy; 0 means the
    default (3) and -1 keeps none. Backups are always taken during the deploy because
    rollback and crash recovery need them; retention only decides what survives success.
    """

    files: tuple[File, ...]
    defaults: FileDefaults = FileDefaults()
    validate: Command | None = None
    reload: Command | None = None
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    backup_retention: int = 0
    skip_idempotent: bool = False
    target_type: str = "file"

    @property
    def backups_to_keep(self) -> int:
        if self.backup_retention == 0:
            return DEFAULT_BACKUP_RETENTION
        return max(self.backup_retention, 0)


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the endpoint served after the deploy: the post-deploy TLS handshake. The agent
    reports it to the control plane as ``certctl.protocol.Verification``."""

    endpoint: str
    server_name: str | None
    tls_version: str
    fingerprint: str
    subject: str
    not_after: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class Result:
    """``backup_paths``: each destination's backup from this deploy (``None``: the file was new).

    A listed backup is gone again if the deploy failed cleanly (it duplicated the restored
    file) or retention is -1.
    """

    target_type: str
    skipped_as_idempotent: bool = False
    backup_paths: Mapping[str, str | None] = field(default_factory=dict)
    validated: bool = False
    reloaded: bool = False
    rolled_back: bool = False
    verification: Handshake | None = None
    warnings: tuple[str, ...] = ()
    duration: float = 0.0


def check_plan(plan: Plan) -> None:
    """Raise ``PlanInvalid`` naming the first field at fault."""
    if not plan.files:
        raise PlanInvalid("plan has no files; a deploy must write at least one file.")
    seen: set[str] = set()
    for index, item in enumerate(plan.files):
        where = f"file {index + 1} ({item.path!r})"
        if not os.path.isabs(item.path) or os.path.normpath(item.path) != item.path:
            raise PlanInvalid(f"{where} path must be absolute and normalized; give the full path.")
        name = os.path.basename(item.path)
        if TEMP_MARK in name or BACKUP_MARK in name:
            raise PlanInvalid(
                f"{where} path uses the engine's temp/backup naming; choose another file name."
            )
        if item.path in seen:
            raise PlanInvalid(f"{where} path appears twice; each destination must be unique.")
        seen.add(item.path)
        _check_ownership(where, item.mode, item.owner, item.group)
    _check_ownership("defaults", plan.defaults.mode, plan.defaults.owner, plan.defaults.group)
    for label, command in (("validate", plan.validate), ("reload", plan.reload)):
        if command is not None and (not command or not command[0]):
            raise PlanInvalid(f"{label} command is empty; give argv, or None to skip the step.")
    if plan.hook_timeout <= 0:
        raise PlanInvalid(
            f"hook_timeout is {plan.hook_timeout}; give a positive number of seconds."
        )
    if plan.backup_retention < -1:
        raise PlanInvalid(
            f"backup_retention is {plan.backup_retention}; use -1 (keep none), 0 (default 3) or N."
        )
    if not plan.target_type:
        raise PlanInvalid("target_type is empty; name the target type (it labels metrics).")


def _check_ownership(where: str, mode: int | None, owner: str | None, group: str | None) -> None:
    if mode is not None and not 0 <= mode <= 0o7777:
        raise PlanInvalid(
            f"{where} mode {mode:#o} is out of range; give permission bits like 0o640."
        )
    if (owner is None) != (group is None) or owner == "" or group == "":
        raise PlanInvalid(
            f"{where} sets owner {owner!r} and group {group!r}; set both or neither, since they "
            "are applied as a pair."
        )
