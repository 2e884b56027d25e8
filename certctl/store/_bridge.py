"""The trio-asyncio bridge and the connection pool under PostgresStore.

asyncpg speaks asyncio and the rest of certctl speaks trio; trio-asyncio runs an asyncio
loop inside trio. Each crossing costs about as much as a query round trip, so every store
operation crosses exactly once: the whole transaction (acquire a connection, BEGIN, its
statements, COMMIT) is one asyncio coroutine called through ``aio_as_trio``.

Recovery. The pool is never rebuilt: asyncpg discards a connection whose socket closed and
opens a new one on the next acquire. While PostgreSQL is down that open fails, and every
connection-level failure (refused or missing socket, server shutting down or starting up,
connection lost mid-query, pool closed) is raised as ``StoreUnavailable``; once the server
is back, the next operation simply works. No asyncpg exception leaves a crossing: anything
that is not an outage becomes a ``StoreError``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import asyncpg
import trio
import trio_asyncio

from certctl.store.errors import StoreError, StoreUnavailable

T = TypeVar("T")
Conn = Any
"""An ``asyncpg.Connection`` (asyncpg ships no type information)."""

UNAVAILABLE: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
"""Failures that say "the database is not there right now", not "this call is wrong":
refused or missing socket, connection lost, server shutting down or starting up
(``CannotConnectNowError``), too many connections."""


async def _keep_session(conn: Conn) -> None:
    """The pool's per-release reset. Operations leave no session state behind (no SET,
    no session advisory locks, no LISTEN), so asyncpg's default reset query, a round trip
    on every release, would buy nothing; an unfinished transaction is still rolled back by
    asyncpg before this is called."""


async def _init_connection(conn: Conn) -> None:
    """Every pooled connection exchanges ``jsonb`` as Python values."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
    )


class _Refused(Exception):
    """PostgreSQL refused to open a session for the pool; carries its error across the
    bridge so that it is told apart from an error in a statement."""

    def __init__(self, refusal: BaseException) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE):
        return True
    # The pool raises a bare InterfaceError once closed, or when a connection it handed
    # out was closed underneath it; other InterfaceErrors are misuse, i.e. our bugs.
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return True
    # A connection the server dropped in the middle of an operation (its postmaster was
    # killed) can leave asyncpg's protocol between states: "cannot switch to state 15;
    # another operation (2) is in progress". Seen only then; the next connection is fine.
    return isinstance(exc, asyncpg.exceptions.InternalClientError) and (
        "cannot switch to state" in str(exc)
    )


def _down(exc: BaseException) -> str:
    return (
        f"PostgreSQL is unreachable ({type(exc).__name__}: {exc}); the operation can be "
        "retried once the database is back."
    )


class Bridge:
    """A pool on a trio-asyncio loop, and the one way across to it; open with ``connect``."""

    def __init__(self, pool: Any, loop: Any, *, command_timeout: float) -> None:
        self._pool = pool
        self._loop = loop
        self._command_timeout = command_timeout

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        loop: Any,
        max_size: int,
        min_size: int,
        connect_timeout: float,
        command_timeout: float,
    ) -> Bridge:
        """A new pool of ``min_size``..``max_size`` connections on the trio-asyncio
        ``loop``. ``StoreUnavailable`` if PostgreSQL cannot be reached."""
        if not 1 <= min_size <= max_size:
            raise ValueError(
                f"min_size is {min_size} and max_size {max_size}; CERTCTL_DATABASE_MAX_CONNS "
                "must be 1 or more and at least the minimum pool size."
            )
        create = trio_asyncio.aio_as_trio(asyncpg.create_pool, loop=loop)
        try:
            pool = await create(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_keep_session,
                timeout=connect_timeout,
                # Both would arm an asyncio timer per query or release; trio-asyncio keeps
                # cancelled timers (and the request context they hold) until they would
                # have fired, which grew the heap and the GC pauses with the request rate.
                # The operation deadline lives in ``cross`` instead, as a trio deadline.
                command_timeout=None,
                max_inactive_connection_lifetime=0,
            )
        except Exception as exc:
            # At connect time a refused login or a missing database is as fatal for the
            # caller as a missing server: nothing can be served until the operator acts.
            if _unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                raise StoreUnavailable(_down(exc)) from None
            raise
        return cls(pool, loop, command_timeout=command_timeout)

    @property
    def pool_size(self) -> tuple[int, int]:
        """``(min, max)`` connections of the pool, as configured."""
        return self._pool.get_min_size(), self._pool.get_max_size()

    async def aclose(self) -> None:
        """Close the pool, waiting a few seconds for operations in flight, even when the
        caller is being cancelled (shutdown is cancellation)."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await trio_asyncio.aio_as_trio(self._pool.close, loop=self._loop)()
                return
            self._pool.terminate()

    async def run(self, op: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T:
        """Run ``op`` on one pooled connection (in one transaction when ``write``),
        crossing the bridge once."""
        pool = self._pool

        async def run() -> T:
            try:
                conn = await pool.acquire()
            except asyncpg.PostgresError as exc:
                # The pool opens connections lazily: a database that refuses new sessions
                # (dropped, closed to connections, login revoked) is an outage, not a bug.
                raise _Refused(exc) from exc
            try:
                if not write:
                    return await op(conn)
                async with conn.transaction():
                    return await op(conn)
            finally:
                await pool.release(conn)

        return await self.cross(run)

    async def cross(self, call: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        """Await the asyncio coroutine function ``call`` from trio within the command
        timeout (without one if not ``bounded``: a wait for the next notification); only
        store errors (and ``ValueError``) come out."""
        try:
            with trio.fail_after(self._command_timeout if bounded else math.inf):
                result: T = await trio_asyncio.aio_as_trio(call, loop=self._loop)()
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"the database did not finish an operation within {self._command_timeout:g} s; "
                "check its load and the network, then retry."
            ) from None
        except (StoreError, ValueError):
            raise
        except _Refused as exc:
            raise StoreUnavailable(_down(exc.refusal)) from None
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailable(_down(exc)) from None
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
                raise StoreError(
                    f"database error {type(exc).__name__}: {exc}; report this as a certctl bug."
                ) from None
            raise
        return result


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[Any]:
    """trio-asyncio's loop, minus the exception groups its nested nurseries wrap a lone
    error in under strict exception groups (trio >= 0.25): callers of the store catch
    ``StoreError``, not a group holding one."""
    try:
        async with trio_asyncio.open_loop() as loop:
            yield loop
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if isinstance(error, BaseExceptionGroup):
            raise
        raise error from error.__cause__
