"""``open_store``: the store a certctl process uses, from its settings.

``CERTCTL_DATABASE_URL`` set: that PostgreSQL. Unset: the embedded one in the data dir,
started here (or joined) and stopped when the store closes, if this process started it.
The pool holds at most ``CERTCTL_DATABASE_MAX_CONNS`` connections. Migrations run on open
by default: they are idempotent and serialised by an advisory lock, so every replica may
do it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from certctl.config import Settings
from certctl.store.base import DomainRules
from certctl.store.embedded import EmbeddedPostgres
from certctl.store.errors import StoreUnavailable
from certctl.store.postgres import PostgresStore, open_postgres_store

WATCH_EVERY = 1.0
"""Seconds between the watchdog's looks at the embedded postmaster (a file read, no query)."""


class PostmasterRestarted(StoreUnavailable):
    """The embedded postmaster had died and was started again (the watchdog's report)."""


@dataclass(frozen=True, slots=True)
class Database:
    """An open store and, when it is the embedded one, the cluster under it."""

    store: PostgresStore
    embedded: EmbeddedPostgres | None

    async def watch(self) -> None:
        """One look at the embedded postmaster: start it again if it is gone.

        The server runs this every ``WATCH_EVERY`` seconds under its supervisor; a restart
        is raised as ``PostmasterRestarted`` once done, so it is logged and counted like
        any outage. Cancelled mid-restart, the worker thread is told to give up.
        """
        if self.embedded is None:
            return
        stop = threading.Event()
        try:
            restarted = await trio.to_thread.run_sync(
                self.embedded.ensure_running, stop, abandon_on_cancel=True
            )
        finally:
            stop.set()
        if restarted:
            raise PostmasterRestarted(
                "the embedded PostgreSQL's postmaster had died and was started again."
            )


async def _stop(embedded: EmbeddedPostgres) -> None:
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(embedded.stop)


@asynccontextmanager
async def open_database(
    settings: Settings, rules: DomainRules, *, migrate: bool = True
) -> AsyncIterator[Database]:
    async with AsyncExitStack() as stack:
        dsn = settings.database_url
        embedded = None
        if dsn is None:
            embedded = await trio.to_thread.run_sync(
                EmbeddedPostgres.start, settings.effective_data_dir
            )
            stack.push_async_callback(_stop, embedded)
            dsn = embedded.dsn()
        store = await stack.enter_async_context(
            open_postgres_store(
                dsn,
                rules,
                max_size=settings.database_max_conns,
                encryption_key=settings.config_encryption_key,
            )
        )
        if migrate:
            await store.migrate()
        yield Database(store, embedded)


@asynccontextmanager
async def open_store(
    settings: Settings, rules: DomainRules, *, migrate: bool = True
) -> AsyncIterator[PostgresStore]:
    async with open_database(settings, rules, migrate=migrate) as database:
        yield database.store
