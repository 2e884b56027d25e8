"""List filters and keyset cursors, written once for both stores.

A query object becomes a list of ``Condition`` values over encoded columns. PostgresStore
renders them as SQL, MemoryStore evaluates them on its rows; SQL's rule that NULL matches
nothing is kept in the evaluator, so both select the same rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from certctl.store.base import (
    MAX_PAGE_SIZE,
    AuditQuery,
    CertificateQuery,
    JobQuery,
    Page,
)
from certctl.store.errors import InvalidCursor
from certctl.store.rows import scalar

Op = Literal["=", "in", "<", "<=", ">="]
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Condition:
    column: str
    op: Op
    value: Any

    def matches(self, row: Mapping[str, Any]) -> bool:
        actual = row[self.column]
        if actual is None:
            return False
        match self.op:
            case "=":
                return bool(actual == self.value)
            case "in":
                return actual in self.value
            case "<":
                return bool(actual < self.value)
            case "<=":
                return bool(actual <= self.value)
            case ">=":
                return bool(actual >= self.value)


def _equal(column: str, label: str, value: Any) -> list[Condition]:
    return [] if value is None else [Condition(column, "=", scalar(label, value))]


def _among(column: str, values: Iterable[str] | None) -> list[Condition]:
    return [] if values is None else [Condition(column, "in", sorted(str(v) for v in values))]


def certificate_conditions(query: CertificateQuery) -> list[Condition]:
    expiring = query.expiring_before
    return [
        *_among("status", query.statuses),
        *_equal("owner_id", "CertificateQuery.owner_id", query.owner_id),
        *_equal("team_id", "CertificateQuery.team_id", query.team_id),
        *_equal("environment", "CertificateQuery.environment", query.environment),
        *_equal("issuer_id", "CertificateQuery.issuer_id", query.issuer_id),
        *(
            []
            if expiring is None
            else [
                Condition("expires_at", "<", scalar("CertificateQuery.expiring_before", expiring))
            ]
        ),
    ]


def job_conditions(query: JobQuery) -> list[Condition]:
    return [
        *_among("status", query.statuses),
        *_among("type", query.types),
        *_equal("certificate_id", "JobQuery.certificate_id", query.certificate_id),
        *_equal("agent_id", "JobQuery.agent_id", query.agent_id),
    ]


def audit_conditions(query: AuditQuery) -> list[Condition]:
    since, until = query.since, query.until
    return [
        *_equal("actor", "AuditQuery.actor", query.actor),
        *_equal("actor_type", "AuditQuery.actor_type", query.actor_type),
        *_equal("action", "AuditQuery.action", query.action),
        *_equal("resource_type", "AuditQuery.resource_type", query.resource_type),
        *_equal("resource_id", "AuditQuery.resource_id", query.resource_id),
        *(
            []
            if since is None
            else [Condition("timestamp", ">=", scalar("AuditQuery.since", since))]
        ),
        *(
            []
            if until is None
            else [Condition("timestamp", "<", scalar("AuditQuery.until", until))]
        ),
    ]


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit is {limit!r}; pass a whole number from 1 to {MAX_PAGE_SIZE}.")
    return limit


def encode_cursor(position: datetime, row_id: str) -> str:
    """An opaque token for "after (position, row_id)" in a keyset order."""
    raw = json.dumps([position.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    invalid = InvalidCursor(
        "cursor is not one this API issued; pass the next_cursor of the previous page "
        "unchanged, or omit it to start from the beginning."
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position, row_id = json.loads(raw)
        when = datetime.fromisoformat(position)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid from None
    if when.tzinfo is None or not isinstance(row_id, str):
        raise invalid
    return when, row_id


def paged(
    rows: Sequence[Mapping[str, Any]], limit: int, position: str, build: Callable[[Any], E]
) -> Page[E]:
    """The page of ``rows``, fetched in ``(position, id)`` order with one row more than
    ``limit`` when another page follows: that extra row only says so, the cursor points
    at the last row shown."""
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return Page(
        tuple(build(r) for r in rows),
        None if last is None else encode_cursor(last[position], last["id"]),
    )
