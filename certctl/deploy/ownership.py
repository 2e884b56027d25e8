"""Mode and owner of a deployed file: explicit beats existing beats defaults.

Owner and group travel as a pair, so a half-specified owner can never combine with the
other half from a different source. ``resolve_ownership`` is a pure decision; names are
looked up once per plan, before any file is touched, so an unknown user fails the plan.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from certctl.deploy.errors import PlanInvalid
from certctl.deploy.fs import FileSystem, Stat

Ids = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Ownership:
    """``mode`` ``None`` keeps the fresh file's 0600; ``ids`` ``None`` keeps the creator's."""

    mode: int | None
    ids: Ids | None


def lookup_ids(owner: str | None, group: str | None, path: str) -> Ids | None:
    """Numeric strings pass through unchanged, so hosts without the names still work."""
    if owner is None or group is None:
        return None
    try:
        uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise PlanInvalid(
            f"owner {owner!r} for {path} is not a user on this host; create it or fix the owner."
        ) from None
    try:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise PlanInvalid(
            f"group {group!r} for {path} is not a group on this host; create it or fix the group."
        ) from None
    return uid, gid


def resolve_ownership(
    mode: int | None,
    ids: Ids | None,
    default_mode: int | None,
    default_ids: Ids | None,
    existing: Stat | None,
) -> Ownership:
    if mode is None:
        mode = existing.mode if existing is not None else default_mode
    if ids is None:
        ids = (existing.uid, existing.gid) if existing is not None else default_ids
    return Ownership(mode=mode, ids=ids)


def apply_ownership(
    fs: FileSystem, path: str, ownership: Ownership, privileged: bool
) -> str | None:
    """chmod (always fatal) then chown (fatal only when privileged); returns a warning.

    An unprivileged agent cannot give files away, so there a failed chown leaves the file
    owned by the agent's user and is reported rather than failing the deploy.
    """
    if ownership.mode is not None:
        fs.chmod(path, ownership.mode)
    if ownership.ids is not None:
        try:
            fs.chown(path, *ownership.ids)
        except PermissionError as exc:
            if privileged:
                raise
            uid, gid = ownership.ids
            return f"could not chown {path} to {uid}:{gid} ({exc.strerror}); run the agent as root."
    return None
