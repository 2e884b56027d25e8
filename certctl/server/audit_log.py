"""The API call audit: one event per request, buffered and written in batches.

Writing each call's audit row inside the request would add a database round trip to
every request; a buffer flushed every half second (or at 200 events) costs one. The
buffer is flushed on shutdown within ``CERTCTL_AUDIT_FLUSH_TIMEOUT``; events still
unwritten then are logged as lost with their count, never silently dropped.
"""

from __future__ import annotations

import trio

from certctl.core.model import AuditEvent
from certctl.logging import get_logger
from certctl.store.base import Store
from certctl.store.errors import StoreError

log = get_logger(__name__)

FLUSH_EVERY = 0.5
FLUSH_AT = 200
MAX_PENDING = 50_000


class AuditBuffer:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[AuditEvent] = []
        self._wake = trio.Event()
        self._lock = trio.Lock()

    def add(self, event: AuditEvent) -> None:
        if len(self._pending) >= MAX_PENDING:
            log.error("audit_buffer_full", dropped=1, pending=len(self._pending))
            return
        self._pending.append(event)
        if len(self._pending) >= FLUSH_AT:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        while True:
            with trio.move_on_after(FLUSH_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending[:FLUSH_AT], self._pending[FLUSH_AT:]
                try:
                    await self._store.append_audit(batch)
                except StoreError as exc:
                    self._pending[:0] = batch
                    log.warning("audit_flush_failed", error=str(exc), pending=len(self._pending))
                    return

    async def close(self, timeout: float) -> None:
        """Flush what is left, shielded from the shutdown's cancellation, within ``timeout``."""
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            await self.flush()
        if self._pending:
            log.error("audit_events_lost_at_shutdown", count=len(self._pending))
