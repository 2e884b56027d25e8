"""``Store.publish`` and ``Store.subscribe``: one channel's messages reach every
subscriber on the database (PostgreSQL ``LISTEN/NOTIFY``, and MemoryStore's model of it),
and a subscriber whose session ends is told, so that it resubscribes and assumes it
missed messages."""

from __future__ import annotations

import pytest
import trio
from conftest_store import sql

from certctl.services.rules import DOMAIN_RULES
from certctl.store.base import MESSAGE_BYTES, Store
from certctl.store.errors import StoreUnavailable
from certctl.store.memory import MemoryStore
from certctl.store.postgres import PostgresStore

_TERMINATE_LISTENERS = (
    "SELECT pg_terminate_backend(pid, 5000) AS gone FROM pg_stat_activity "
    "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
)


async def test_what_is_published_reaches_every_subscriber_of_the_channel(store: Store) -> None:
    async with store.subscribe("work") as first, store.subscribe("work") as second:
        async with store.subscribe("other") as elsewhere:
            await store.publish("work", ["a:agent-1", "a:agent-2,agent-3"])
            await store.publish("other", ["b:agent-4"])
            for subscription in (first, second):
                assert [await subscription.receive() for _ in range(2)] == [
                    "a:agent-1",
                    "a:agent-2,agent-3",
                ]
            assert await elsewhere.receive() == "b:agent-4"
        await store.publish("work", ["a:agent-5"])
        assert await first.receive() == "a:agent-5"  # nothing of "other" came in between
    async with store.subscribe("work") as late:
        await store.publish("work", ["a:agent-6"])
        assert await late.receive() == "a:agent-6"  # only what was published after it came


async def test_a_message_over_the_limit_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match=f"at most {MESSAGE_BYTES} bytes"):
        await store.publish("work", ["x" * (MESSAGE_BYTES + 1)])


async def test_a_memory_subscriber_hears_its_session_break() -> None:
    store = MemoryStore(DOMAIN_RULES)
    async with store.subscribe("work") as subscription:
        store.break_subscriptions("work")
        with pytest.raises(StoreUnavailable, match="subscribe again"):
            await subscription.receive()


async def test_a_postgres_subscriber_hears_its_session_killed(
    pg_store: PostgresStore, pg_dsn: str
) -> None:
    async with pg_store.subscribe("work") as subscription:
        ((killed,),) = await sql(pg_dsn, _TERMINATE_LISTENERS)
        assert killed["gone"]
        with trio.fail_after(60):  # a bound on a hang, not a timing assertion
            with pytest.raises(StoreUnavailable, match="subscribe again"):
                await subscription.receive()
    # The pool was not involved: requests still run.
    assert await pg_store.list_teams() == ()
