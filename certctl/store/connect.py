"""``open_store``: the store a certctl process uses, from its settings.

``CERTCTL_DATABASE_URL`` set: that PostgreSQL. Unset: the embedded one in the data dir,
started here and stopped when the store closes. The pool holds at most
``CERTCTL_DATABASE_MAX_CONNS`` connections. Migrations run on open by default: they are
idempotent and serialised by an advisory lock, so every replica may do it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from certctl.config import Settings
from certctl.store.embedded import EmbeddedPostgres
from certctl.store.postgres import PostgresStore, open_postgres_store


async def _stop(embedded: EmbeddedPostgres) -> None:
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(embedded.stop)


@asynccontextmanager
async def open_store(settings: Settings, *, migrate: bool = True) -> AsyncIterator[PostgresStore]:
    async with AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:
            embedded = await trio.to_thread.run_sync(
                EmbeddedPostgres.start, settings.effective_data_dir
            )
            stack.push_async_callback(_stop, embedded)
            dsn = embedded.dsn()
        store = await stack.enter_async_context(
            open_postgres_store(
                dsn,
                max_size=settings.database_max_conns,
                encryption_key=settings.config_encryption_key,
            )
        )
        if migrate:
            await store.migrate()
        yield store
