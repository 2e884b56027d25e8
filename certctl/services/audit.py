"""Audit events: built here, stored with the change they describe, redacted on the way in.

Redaction runs on every ``details`` mapping, recursively, by key name: a credential or a
PEM that slips into a details dict (an issuer config echoed back, a request body) is
replaced before it reaches the append-only table, where it could never be removed again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from certctl.core.jobs import AuditRecord
from certctl.core.model import AuditEvent, JSONValue
from certctl.services.context import Actor, Services
from certctl.store.base import AuditQuery, Page

CREDENTIAL_KEYS: Final = frozenset(
    {
        "api_key",
        "agent_key",
        "authorization",
        "bearer",
        "key_pem",
        "passphrase",
        "password",
        "private_key",
        "secret",
        "token",
    }
)
REDACTED: Final = "[REDACTED]"


def redact_mapping(value: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    return {key: REDACTED if _is_credential(key) else redact(item) for key, item in value.items()}


def redact(value: JSONValue) -> JSONValue:
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str) and "PRIVATE KEY-----" in value:
        return REDACTED
    return value


def _is_credential(key: str) -> bool:
    """By name, ignoring case and separators: ``privateKey``, ``private-key`` and
    ``PRIVATE_KEY`` are the same credential."""
    squashed = "".join(c for c in key.lower() if c.isalnum())
    return squashed in _SQUASHED or squashed.endswith(("secret", "token", "password"))


_SQUASHED: Final = frozenset(k.replace("_", "") for k in CREDENTIAL_KEYS)


def event(
    services: Services,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str,
    *,
    details: Mapping[str, JSONValue] | None = None,
) -> AuditEvent:
    return AuditEvent(
        id=services.new_id("audit"),
        actor=actor.name,
        actor_type=actor.type,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        timestamp=services.now(),
        details=redact_mapping(details or {}),
    )


def job_events(
    services: Services, actor: Actor, records: Sequence[AuditRecord], certificate_id: str
) -> list[AuditEvent]:
    """The audit rows of the core's ``AuditRecord`` effects, attributed to ``actor``."""
    return [
        event(
            services,
            actor,
            record.action,
            "job",
            record.job_id,
            details={
                "from": record.from_status.value,
                "to": record.to_status.value,
                "detail": record.detail,
                "certificate_id": certificate_id,
            },
        )
        for record in records
    ]


async def list_events(
    services: Services,
    *,
    actor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[AuditEvent]:
    """One page of audit events, oldest first; ``since`` inclusive, ``until`` exclusive."""
    query = AuditQuery(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
    )
    return await services.store.list_audit(query, limit=limit, cursor=cursor)
