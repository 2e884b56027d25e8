"""``Store.subscribe`` on PostgreSQL: ``LISTEN`` on a connection of its own.

The listening session lives outside the pool, like the leadership lock: it holds session
state (the ``LISTEN``), and request handling never waits behind it nor it behind requests.
asyncpg delivers notifications to a callback on the asyncio side; they queue there until
the trio side asks. Three things end a subscription with ``StoreUnavailable``, so that the
subscriber resubscribes and assumes it missed messages: the session closing, a probe query
on a quiet session going unanswered (a connection dropped without a FIN says nothing), and
the queue overflowing because the subscriber fell behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
import trio

from certctl.store._bridge import Bridge, Conn
from certctl.store.errors import StoreUnavailable

PROBE_AFTER: Final = 30.0
"""Seconds without a notification after which the session is asked whether it is alive."""
QUEUE_LIMIT: Final = 10_000
"""Notifications held for a subscriber that is not reading; past this it is resubscribed."""


class PostgresSubscription:
    def __init__(self, bridge: Bridge, conn: Conn) -> None:
        self._bridge = bridge
        self._conn = conn
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._lost = ""

    def deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """asyncpg's listener callback (asyncio side)."""
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._lost = f"more than {QUEUE_LIMIT} notifications were waiting"
            return
        self._queue.put_nowait(payload)

    def terminated(self, _conn: Any) -> None:
        """asyncpg's termination callback: the session is gone."""
        self._lost = "the listening session closed"
        self._queue.put_nowait(None)

    async def receive(self) -> str:
        while True:
            if self._lost:
                raise StoreUnavailable(f"{self._lost}; subscribe again.")
            message: str | None = None
            with trio.move_on_after(PROBE_AFTER) as quiet:
                message = await self._bridge.cross(self._queue.get, bounded=False)
            if quiet.cancelled_caught:
                await self._bridge.cross(lambda: self._conn.fetchval("SELECT 1"))
                continue
            if message is not None:
                return message


@asynccontextmanager
async def subscribe(
    bridge: Bridge, dsn: str, channel: str, *, connect_timeout: float
) -> AsyncIterator[PostgresSubscription]:
    """A ``LISTEN`` on ``channel`` in a new session, closed when the block ends."""
    subscription: PostgresSubscription | None = None

    async def listen() -> Conn:
        nonlocal subscription
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
        try:
            subscription = PostgresSubscription(bridge, conn)
            conn.add_termination_listener(subscription.terminated)
            await conn.add_listener(channel, subscription.deliver)
        except BaseException:
            conn.terminate()
            raise
        return conn

    conn = await bridge.cross(listen)
    assert subscription is not None
    try:
        yield subscription
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(connect_timeout):
            try:
                await bridge.cross(conn.close)
            except StoreUnavailable:
                conn.terminate()
