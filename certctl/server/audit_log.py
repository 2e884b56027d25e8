"""The API call audit: one event per request, buffered and written in batches.

Writing each call's audit row inside the request would add a database round trip to
every request; a buffer flushed every half second (or at 200 events) costs one. The
flusher is a supervised loop (``certctl.server.supervisor``): a failed write keeps the
events, raises so the failure is logged, counted and retried with backoff, and a flusher
that keeps failing turns ``/ready`` to 503.

Nothing is dropped silently. While ``MAX_PENDING`` events wait, ``accepting`` is false and
the app answers audited calls with 503 and ``Retry-After`` before doing their work, instead
of doing work whose audit row it could not keep. Strings are escaped on the way in
(``certctl.core.text``), so no request can produce a row the database refuses; should a
batch still be refused, its events are written one by one: any that cannot be stored
while others can is logged whole and counted, and if none can, all are kept. On
shutdown the buffer is flushed within ``CERTCTL_AUDIT_FLUSH_TIMEOUT``; events still
unwritten then are logged as lost with their count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final

import trio

from certctl.core.model import AuditEvent, JSONValue
from certctl.core.text import escape_hostile
from certctl.logging import get_logger
from certctl.server.metrics import AUDIT_PENDING
from certctl.store.base import Store
from certctl.store.errors import StoreError, StoreUnavailable

log = get_logger(__name__)

FLUSH_EVERY: Final = 0.5
FLUSH_AT: Final = 200
MAX_PENDING: Final = 50_000
LOOP: Final = "audit_flush"
"""The flusher's name in the supervisor, in metrics and in ``/ready``."""


class AuditUnwritable(StoreError):
    """Events the database refused for their content (logged whole, then set aside)."""


class AuditBuffer:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[AuditEvent] = []
        self._wake = trio.Event()
        self._lock = trio.Lock()

    @property
    def accepting(self) -> bool:
        """Whether another audited call may start (the app answers 503 otherwise)."""
        return len(self._pending) < MAX_PENDING

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, event: AuditEvent) -> None:
        """Queue ``event``. Never refuses: calls are admitted only while ``accepting``, so
        the overshoot is bounded by the requests already in flight."""
        self._pending.append(_escaped(event))
        AUDIT_PENDING.set(len(self._pending))
        if len(self._pending) >= FLUSH_AT:
            self._wake.set()

    async def step(self) -> None:
        """One flusher tick: wait for a batch or half a second, then write what is queued."""
        with trio.move_on_after(FLUSH_EVERY):
            await self._wake.wait()
        self._wake = trio.Event()
        await self.flush()

    async def flush(self) -> None:
        """Write every queued event; raises (keeping the unwritten ones) if the store fails."""
        refused = 0
        async with self._lock:
            try:
                while self._pending:
                    batch = self._pending[:FLUSH_AT]
                    refused += await self._write(batch)
                    del self._pending[: len(batch)]
            finally:
                AUDIT_PENDING.set(len(self._pending))
        if refused:
            raise AuditUnwritable(
                f"{refused} audit events were refused by the database; each is in the log "
                "as audit_event_unwritable"
            )

    async def _write(self, batch: list[AuditEvent]) -> int:
        """Write ``batch``; how many of its events the database refused for their content.

        A refused batch is written one event at a time, so one bad event does not hold up
        the rest. If every event is refused, the store itself is failing (a revoked grant,
        a full disk) and they are all kept for the next attempt.
        """
        try:
            await self._store.append_audit(batch)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if len(batch) == 1:
                raise
            refused: list[tuple[AuditEvent, StoreError]] = []
            for event in batch:
                try:
                    await self._store.append_audit([event])
                except StoreUnavailable:
                    raise
                except StoreError as one:
                    refused.append((event, one))
            if len(refused) == len(batch):
                raise exc from None
            for event, error in refused:
                log.error(  # noqa: TRY400 - the refusal is the content, not a bug
                    "audit_event_unwritable", audit_event=repr(event), error=str(error)
                )
            return len(refused)
        return 0

    async def close(self, timeout: float) -> None:
        """Flush what is left, shielded from the shutdown's cancellation, within ``timeout``."""
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            try:
                await self.flush()
            except StoreError as exc:
                log.error("audit_flush_failed_at_shutdown", error=str(exc))  # noqa: TRY400
        if self._pending:
            log.error("audit_events_lost_at_shutdown", count=len(self._pending))


def _escaped(event: AuditEvent) -> AuditEvent:
    return replace(
        event,
        actor=escape_hostile(event.actor),
        resource_id=escape_hostile(event.resource_id),
        details=_escape_values(event.details),
    )


def _escape_values(details: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    return {escape_hostile(k): _escape_value(v) for k, v in details.items()}


def _escape_value(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        return escape_hostile(value, free_text=True)
    if isinstance(value, Mapping):
        return _escape_values(value)
    if isinstance(value, list | tuple):
        return [_escape_value(v) for v in value]
    return value
