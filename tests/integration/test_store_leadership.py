"""``Store.leadership``: one holder per name across every claimant of one database, on
both stores, and what losing the holder's session does (PostgreSQL, and MemoryStore's
model of it)."""

from __future__ import annotations

import trio
from conftest_store import sql

from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import Store
from certctl.store.memory import MemoryStore
from certctl.store.postgres import PostgresStore, open_postgres_store

NAME = "scheduler"

_TERMINATE_HOLDERS = (
    "SELECT pg_terminate_backend(pid, 5000) AS gone FROM pg_locks "
    "WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
"""Kill the sessions holding advisory locks in the test's database, waiting (up to 5 s)
until they are gone, so their locks are free when this returns."""


async def test_one_claim_holds_a_name_until_it_leaves(store: Store) -> None:
    async with store.leadership(NAME) as first:
        assert first.held
        assert await first.check()
        async with store.leadership(NAME) as second:
            assert not second.held
            assert not await second.check()
        async with store.leadership("another name") as other:
            assert other.held
        assert await first.check()
    async with store.leadership(NAME) as third:
        assert third.held


async def test_a_cancelled_holder_releases_the_lock(store: Store) -> None:
    with trio.CancelScope() as scope:
        async with store.leadership(NAME) as claim:
            assert claim.held
            scope.cancel()
            await trio.sleep_forever()
    async with store.leadership(NAME) as again:
        assert again.held


async def test_memory_holder_notices_a_broken_lock() -> None:
    store = MemoryStore(DOMAIN_RULES)
    async with store.leadership(NAME) as first:
        store.break_leadership(NAME)
        assert first.held  # nothing tells the holder until it asks
        assert not await first.check()
        assert not first.held
        async with store.leadership(NAME) as second:
            assert second.held
        assert not await first.check()
    async with store.leadership(NAME) as third:
        assert third.held


async def test_postgres_holder_notices_its_session_was_killed(
    pg_store: PostgresStore, pg_dsn: str
) -> None:
    async with pg_store.leadership(NAME) as first:
        ((killed,),) = await sql(pg_dsn, _TERMINATE_HOLDERS)
        assert killed["gone"]
        async with pg_store.leadership(NAME) as second:
            assert second.held
            assert not await first.check()
            assert not first.held
        # The dead holder leaving must not touch a lock it no longer has.
        async with pg_store.leadership(NAME) as third:
            assert third.held
    assert await pg_store.list_teams() == ()


async def test_postgres_lock_lives_outside_the_pool(pg_dsn: str) -> None:
    """A one-connection pool keeps serving while its replica leads."""
    async with (
        open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=1) as first,
        open_postgres_store(pg_dsn, DOMAIN_RULES, max_size=1) as second,
        first.leadership(NAME) as claim,
    ):
        assert claim.held
        with trio.fail_after(60):  # the lock's session must not block the store's queries
            assert await first.list_teams() == ()
        async with second.leadership(NAME) as rival:
            assert not rival.held
