"""The leadership lock of PostgresStore: a session advisory lock on a connection of its own.

The lock lives outside the pool: the pool never holds session state, a replica whose pool
has one connection cannot starve itself, and losing the session is losing the lock. See
``certctl.store.base.Leadership`` for what a holder may assume.
"""

from __future__ import annotations

import hashlib
from typing import Final

import asyncpg
import trio

from certctl.store._bridge import UNAVAILABLE, Bridge, Conn

SESSION_TIMEOUT: Final = 5.0
"""Seconds a leadership session may take to answer a check or to unlock and close."""

_SESSION_LOST: Final = (*UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What a leadership session raises once it is dead, killed or unanswerable."""


def lock_key(name: str) -> int:
    """The advisory lock id of a leadership ``name``, derived like the migrations' lock id
    so it cannot collide with another tool's locks by accident."""
    digest = hashlib.sha256(f"certctl leadership {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLeadership:
    """A claim whose lock lives exactly as long as its session; ``_conn`` is ``None``
    when the claim holds nothing."""

    def __init__(self, name: str, bridge: Bridge) -> None:
        self._conn: Conn | None = None
        self._key = lock_key(name)
        self._bridge = bridge

    async def try_lock(self, dsn: str, connect_timeout: float) -> None:
        """Open a session and keep it if it gets the lock. The session is stored here, not
        returned, so that a caller cancelled just as the lock was granted still finds it to
        release."""

        async def lock() -> None:
            conn = await asyncpg.connect(dsn, timeout=connect_timeout)
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
            except BaseException:
                conn.terminate()
                raise
            if got:
                self._conn = conn
            else:
                await conn.close(timeout=SESSION_TIMEOUT)

        await self._bridge.cross(lock)

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def check(self) -> bool:
        conn = self._conn
        if conn is None:
            return False

        async def alive() -> bool:
            # A live session still holds its lock: only an unlock or the session's end
            # releases a session-level advisory lock.
            try:
                await conn.fetchval("SELECT 1", timeout=SESSION_TIMEOUT)
            except _SESSION_LOST:
                # Dead, or silent past the timeout: closing our end makes a session that
                # is merely slow let go as well, so "unknown" becomes "lost" for everyone.
                conn.terminate()
                return False
            return True

        if not await self._bridge.cross(alive):
            self._conn = None
        return self._conn is not None

    async def release(self) -> None:
        """Unlock and close, shielded: shutdown is cancellation, and a lock left behind
        would keep every other replica from leading until PostgreSQL noticed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return

        async def unlock() -> None:
            # Unlocking first makes the lock free when this returns; closing alone frees
            # it only once the server has processed the disconnect.
            try:
                await conn.execute(
                    "SELECT pg_advisory_unlock($1)", self._key, timeout=SESSION_TIMEOUT
                )
                await conn.close(timeout=SESSION_TIMEOUT)
            except _SESSION_LOST:
                conn.terminate()

        with trio.CancelScope(shield=True):
            await self._bridge.cross(unlock)
