"""``PostgresStore``: the ``Store`` protocol on PostgreSQL, through asyncpg and trio-asyncio.

Each operation is one crossing of the trio-asyncio bridge (``certctl.store._bridge``): the
whole transaction is one asyncio coroutine. The statements come from
``certctl.store._sql``, the table operations shared with MemoryStore from
``certctl.store._crud``, the leadership lock from ``certctl.store._lock``. Sealing and
unsealing secrets (slow key derivation on first use) happens on the trio side in a worker
thread, before or after the crossing, so it never stalls the loop.

Reads that are a single statement skip BEGIN/COMMIT (one statement is atomic on its own),
which saves two round trips on the hottest paths.
"""

# SQL in this module is assembled only from the table metadata of certctl.store.rows and
# from constants; every value travels as a bind parameter.

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import trio

from certctl.core.model import (
    CLOSED_CERTIFICATE_STATUSES,
    Agent,
    CertificateStatus,
    CertificateVersion,
    Issuer,
    Job,
    JSONValue,
    ManagedCertificate,
    RenewalPolicy,
    Target,
)
from certctl.store import _notify
from certctl.store._bridge import Bridge, Conn, asyncio_loop
from certctl.store._crud import Audit, Cursor, Order, StoreOperations
from certctl.store._lock import PostgresLeadership
from certctl.store._sql import (
    AGENT_BY_KEY_HASH,
    AWAITING_CSR,
    BEFORE_ALL,
    CLAIM,
    DUE_RENEWALS,
    GOVERNED,
    HEARTBEAT,
    JOB_WRITE,
    LATEST_VALIDITY,
    LIST_TARGETS,
    LOST_AGENTS,
    PUBLISH,
    RECORD_DEPLOYMENT,
    RETIRE_TARGETS,
    RETRY_DUE,
    SEEN,
    SET_DUE,
    TIMED_OUT,
    Record,
    count_inventory,
    delete_row,
    dependencies,
    fetch_entity,
    fetch_versions,
    insert_audit,
    insert_row,
    job_args,
    list_query,
    live_agent_error,
    map_targets,
    page_query,
    prefixed,
    require_row,
    sealed_blob,
    update_row,
)
from certctl.store.base import (
    SIGHTING_FACTS,
    AgentDependencies,
    DomainRules,
    DueRenewal,
    InventoryCounts,
    Leadership,
    LostAgentJob,
    Page,
    Subscription,
)
from certctl.store.errors import Conflict, NotFound, SchemaMismatch, StoreUnavailable
from certctl.store.migrate import Migration, MigrationState, apply_migrations, migration_states
from certctl.store.query import Condition, check_limit, decode_cursor, paged
from certctl.store.rows import (
    AGENTS,
    CERTIFICATES,
    JOBS,
    POLICIES,
    REVOCATIONS,
    TARGETS,
    UNKNOWN_AGENT_KEY,
    VERSIONS,
    Table,
    already_archived,
    already_revoked,
    certificate_closed,
    job_moved,
    not_found,
    retirement_blocked,
    status_changed,
)
from certctl.store.secrets import open_secret, sealed_row

T = TypeVar("T")
E = TypeVar("E")
Row = dict[str, Any]

CONNECT_TIMEOUT: Final = 10.0
"""Seconds to open a connection (of the pool, or a leadership session)."""
COMMAND_TIMEOUT: Final = 60.0
"""Seconds one operation may take, round trips included."""


class PostgresStore(StoreOperations):
    """See the module docstring; open one with ``open_postgres_store``."""

    def __init__(
        self,
        bridge: Bridge,
        rules: DomainRules,
        *,
        encryption_key: str,
        dsn: str,
        connect_timeout: float,
    ) -> None:
        self._bridge = bridge
        self._rules = rules
        self._encryption_key = encryption_key
        self._dsn = dsn
        self._connect_timeout = connect_timeout

    @property
    def pool_size(self) -> tuple[int, int]:
        """``(min, max)`` connections of the pool, as configured."""
        return self._bridge.pool_size

    async def aclose(self) -> None:
        """Close the pool (see ``Bridge.aclose``)."""
        await self._bridge.aclose()

    async def _run(self, op: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T:
        """Run ``op`` on one pooled connection (in one transaction when ``write``)."""
        return await self._bridge.run(op, write=write)

    # -- schema and leadership -----------------------------------------------------------

    async def migrate(self) -> tuple[Migration, ...]:
        """Apply pending migrations (safe to run from several replicas at once)."""
        return await self._run(apply_migrations, write=False)

    async def migration_status(self) -> tuple[MigrationState, ...]:
        return await self._run(migration_states, write=False)

    async def ready(self) -> None:
        try:
            states = await self.migration_status()
        except SchemaMismatch as exc:
            raise StoreUnavailable(str(exc)) from None
        pending = [s for s in states if s.applied_at is None]
        if pending:
            raise StoreUnavailable(
                f"the database schema lacks {len(pending)} migration(s) this build needs; "
                "run `certctl db migrate`."
            )

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[Leadership]:
        """A session advisory lock on a connection of its own (see ``certctl.store._lock``)."""
        claim = PostgresLeadership(name, self._bridge)
        try:
            await claim.try_lock(self._dsn, self._connect_timeout)
            yield claim
        finally:
            await claim.release()

    async def _publish(self, channel: str, messages: list[str]) -> None:
        """``pg_notify`` for each message, in one statement after the caller's writes
        committed, so a replica woken by it finds what was written."""
        await self._run(lambda conn: conn.execute(PUBLISH, channel, messages))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """``LISTEN`` on a session of its own (see ``certctl.store._notify``)."""
        async with _notify.subscribe(
            self._bridge, self._dsn, channel, connect_timeout=self._connect_timeout
        ) as subscription:
            yield subscription

    # -- generic primitives ------------------------------------------------------------

    async def _insert_row(self, table: Table[E], row: Row, audit: Audit) -> E:
        async def op(conn: Conn) -> E:
            await insert_row(conn, table, row)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, table, row["id"])

        return await self._run(op)

    async def _insert_rows(self, table: Table[Any], rows: Sequence[Row], audit: Audit) -> None:
        async def op(conn: Conn) -> None:
            for row in rows:
                await insert_row(conn, table, row)
            await insert_audit(conn, audit)

        await self._run(op)

    async def _get(self, table: Table[E], row_id: str) -> E:
        return await self._run(lambda conn: fetch_entity(conn, table, row_id), write=False)

    async def _all(
        self, table: Table[E], conditions: Sequence[Condition] = (), *, order: Order = ("id",)
    ) -> tuple[E, ...]:
        sql, args = list_query(table, conditions, order)

        async def op(conn: Conn) -> tuple[E, ...]:
            return tuple(table.decode(r) for r in await conn.fetch(sql, *args))

        return await self._run(op, write=False)

    async def _patch(self, table: Table[E], row_id: str, changes: Row, audit: Audit = ()) -> E:
        async def op(conn: Conn) -> E:
            stored = await update_row(conn, table, row_id, changes)
            if stored is None:
                raise NotFound(not_found(table, row_id))
            await insert_audit(conn, audit)
            return table.decode(stored)

        return await self._run(op)

    async def _remove(self, table: Table[Any], row_id: str, audit: Audit) -> None:
        async def op(conn: Conn) -> None:
            await delete_row(conn, table, row_id)
            await insert_audit(conn, audit)

        await self._run(op)

    async def _page(
        self, table: Table[E], where: Sequence[Condition], position: str, limit: int, cursor: Cursor
    ) -> Page[E]:
        sql, args = page_query(table, where, position, check_limit(limit), cursor)

        async def op(conn: Conn) -> list[Record]:
            return list(await conn.fetch(sql, *args))

        rows = await self._run(op, write=False)
        return paged(rows, limit, position, table.decode)

    async def _seal(self, table: Table[Any], entity: Issuer | Target, *, keep: bool) -> Row:
        # Key derivation is slow on first use: a worker thread keeps it off the loop.
        row: Row = await trio.to_thread.run_sync(
            lambda: sealed_row(table, entity, self._encryption_key, keep=keep)
        )
        return row

    async def _secret(self, table: Table[Any], row_id: str) -> Mapping[str, JSONValue]:
        blob = await self._run(lambda conn: sealed_blob(conn, table, row_id), write=False)
        secret: Mapping[str, JSONValue] = await trio.to_thread.run_sync(
            lambda: open_secret(table.name, row_id, blob, self._encryption_key)
        )
        return secret

    # -- policies and targets ----------------------------------------------------------

    async def _update_policy(self, row: Row, audit: Audit) -> RenewalPolicy:
        async def op(conn: Conn) -> RenewalPolicy:
            stored = await update_row(conn, POLICIES, row["id"], row)
            if stored is None:
                raise NotFound(not_found(POLICIES, row["id"]))
            saved = POLICIES.decode(stored)
            due = [
                (r["id"], self._rules.renewal_due_at(r["not_before"], r["not_after"], saved))
                for r in await conn.fetch(GOVERNED, row["id"])
            ]
            await conn.executemany(SET_DUE, due)
            await insert_audit(conn, audit)
            return saved

        return await self._run(op)

    async def _list_targets(self, agent_id: str | None, cert_id: str | None) -> tuple[Target, ...]:
        async def op(conn: Conn) -> tuple[Target, ...]:
            rows = await conn.fetch(LIST_TARGETS, agent_id, cert_id)
            return tuple(TARGETS.decode(r) for r in rows)

        return await self._run(op, write=False)

    # -- agents ------------------------------------------------------------------------

    async def _agent_by_key_hash(self, digest: str) -> Agent:
        async def op(conn: Conn) -> Agent:
            row = await conn.fetchrow(AGENT_BY_KEY_HASH, digest)
            if row is None:
                raise NotFound(UNKNOWN_AGENT_KEY)
            return AGENTS.decode(row)

        return await self._run(op, write=False)

    async def _inventory_counts(self, expiring_before: datetime) -> InventoryCounts:
        return await self._run(lambda conn: count_inventory(conn, expiring_before))

    async def _record_heartbeat(self, agent_id: str, at: datetime, metadata: Row) -> Agent:
        async def op(conn: Conn) -> Agent:
            row = await conn.fetchrow(HEARTBEAT, agent_id, at, *metadata.values())
            if row is None:
                raise await live_agent_error(conn, agent_id)
            return AGENTS.decode(row)

        # One statement: its own implicit transaction; BEGIN/COMMIT would double the
        # round trips of the call every agent makes every minute.
        return await self._run(op, write=False)

    async def _record_seen(self, rows: list[Row]) -> int:
        columns = [[row[name] for row in rows] for name in ("id", "at", *SIGHTING_FACTS)]

        async def op(conn: Conn) -> int:
            status: str = await conn.execute(SEEN, *columns)
            return int(status.rsplit(" ", 1)[-1])

        return await self._run(op, write=False)

    async def _set_agent_status(self, agent_id: str, status: str, seen: datetime | None) -> Agent:
        guard = "t.retired_at IS NULL AND t.last_heartbeat_at IS NOT DISTINCT FROM $2"

        async def op(conn: Conn) -> Agent:
            row = await update_row(conn, AGENTS, agent_id, {"status": status}, seen, guard=guard)
            if row is None:
                raise await live_agent_error(conn, agent_id)
            return AGENTS.decode(row)

        return await self._run(op)

    async def _agent_dependencies(self, agent_id: str) -> AgentDependencies:
        return await self._run(lambda conn: dependencies(conn, agent_id), write=False)

    async def _retire_agent(
        self, agent_id: str, retired: Row, cascade: bool, audit: Audit
    ) -> Agent:
        async def op(conn: Conn) -> Agent:
            row = await require_row(conn, AGENTS, agent_id, lock=True)
            if row["retired_at"] is None:
                deps = await dependencies(conn, agent_id)
                if deps.total and not cascade:
                    raise Conflict(retirement_blocked(agent_id, deps))
                await conn.execute(
                    RETIRE_TARGETS, agent_id, retired["retired_at"], retired["retired_reason"]
                )
                await update_row(conn, AGENTS, agent_id, retired)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, AGENTS, agent_id)

        return await self._run(op)

    # -- certificates and versions -----------------------------------------------------

    async def _create_certificate(
        self, row: Row, targets: list[str], jobs: list[Row], audit: Audit
    ) -> ManagedCertificate:
        async def op(conn: Conn) -> ManagedCertificate:
            await insert_row(conn, CERTIFICATES, row)
            await map_targets(conn, row["id"], targets)
            for job_row in jobs:
                await insert_row(conn, JOBS, job_row)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, CERTIFICATES, row["id"])

        return await self._run(op)

    async def _update_certificate(
        self, cert_id: str, changes: Row, targets: list[str], audit: Audit
    ) -> ManagedCertificate:
        async def op(conn: Conn) -> ManagedCertificate:
            old = await require_row(conn, CERTIFICATES, cert_id, lock=True)
            await update_row(conn, CERTIFICATES, cert_id, changes)
            latest = await conn.fetchrow(LATEST_VALIDITY, cert_id)
            if latest is not None and changes["renewal_policy_id"] != old["renewal_policy_id"]:
                policy = await fetch_entity(conn, POLICIES, changes["renewal_policy_id"])
                due = self._rules.renewal_due_at(latest["not_before"], latest["not_after"], policy)
                await update_row(conn, CERTIFICATES, cert_id, {"renewal_due_at": due})
            await map_targets(conn, cert_id, targets)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def _set_certificate_status(
        self, cert_id: str, changes: Row, expected: CertificateStatus, jobs: list[Row], audit: Audit
    ) -> ManagedCertificate:
        async def op(conn: Conn) -> ManagedCertificate:
            guarded = await update_row(
                conn, CERTIFICATES, cert_id, changes, expected.value, guard="t.status = $2"
            )
            if guarded is None:
                current = await require_row(conn, CERTIFICATES, cert_id)
                raise Conflict(status_changed(cert_id, current["status"], expected))
            for row in jobs:
                await insert_row(conn, JOBS, row)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def _archive_certificate(
        self, cert_id: str, at: datetime, audit: Audit
    ) -> ManagedCertificate:
        archived = CertificateStatus.ARCHIVED.value
        changes = {"status": archived, "updated_at": at}

        async def op(conn: Conn) -> ManagedCertificate:
            guarded = await update_row(
                conn, CERTIFICATES, cert_id, changes, archived, guard="t.status <> $2"
            )
            if guarded is None:
                await require_row(conn, CERTIFICATES, cert_id)
                raise Conflict(already_archived(cert_id))
            await insert_audit(conn, audit)
            return await fetch_entity(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def _add_version(self, row: Row, status: str, audit: Audit) -> ManagedCertificate:
        cert_id = row["certificate_id"]

        async def op(conn: Conn) -> ManagedCertificate:
            await insert_row(conn, VERSIONS, row)
            # Lock the certificate before reading "latest" so concurrent versions of one
            # certificate settle on the newest; NO KEY UPDATE does not conflict with the
            # KEY SHARE lock the version's foreign key already took.
            cert = await require_row(conn, CERTIFICATES, cert_id, lock=True)
            if cert["status"] in CLOSED_CERTIFICATE_STATUSES:
                raise Conflict(certificate_closed(cert_id, cert["status"]))
            latest = await conn.fetchrow(LATEST_VALIDITY, cert_id)
            policy = await fetch_entity(conn, POLICIES, cert["renewal_policy_id"])
            changes = {
                "expires_at": latest["not_after"],
                "renewal_due_at": self._rules.renewal_due_at(
                    latest["not_before"], latest["not_after"], policy
                ),
                "status": status,
                "last_renewal_at": row["created_at"],
                "updated_at": row["created_at"],
            }
            await update_row(conn, CERTIFICATES, cert_id, changes)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def _versions(self, cert_id: str, limit: int | None) -> tuple[CertificateVersion, ...]:
        return await self._run(lambda conn: fetch_versions(conn, cert_id, limit=limit), write=False)

    async def _due_renewals(self, now: datetime, limit: int, cursor: Cursor) -> Page[DueRenewal]:
        after = decode_cursor(cursor) if cursor is not None else (BEFORE_ALL, "")

        async def op(conn: Conn) -> list[Record]:
            return list(await conn.fetch(DUE_RENEWALS, now, *after, limit + 1))

        def build(row: Record) -> DueRenewal:
            latest = VERSIONS.decode(prefixed(row, "v__"))
            return DueRenewal(CERTIFICATES.decode(row), latest, row["renewal_due_at"])

        return paged(await self._run(op, write=False), limit, "renewal_due_at", build)

    # -- jobs ----------------------------------------------------------------------------

    async def _jobs(self, sql: str, *args: Any) -> tuple[Job, ...]:
        async def op(conn: Conn) -> tuple[Job, ...]:
            return tuple(JOBS.decode(r) for r in await conn.fetch(sql, *args))

        return await self._run(op, write=False)

    async def _claim_jobs(self, agent_id: str | None, now: datetime, limit: int) -> tuple[Job, ...]:
        async def op(conn: Conn) -> tuple[Job, ...]:
            rows = await conn.fetch(CLAIM, now, limit, agent_id)
            claimed = [self._rules.claimed(JOBS.decode(r), agent_id, now) for r in rows]
            await conn.executemany(JOB_WRITE, [job_args(job) for job in claimed])
            return tuple(claimed)

        return await self._run(op)

    async def _transition_job(
        self, seen: Row, row: Row, create: list[Row], deployed_at: datetime | None, audit: Audit
    ) -> Job:
        job_id = row["id"]
        guard = "t.status = $2 AND t.status_changed_at = $3"

        async def op(conn: Conn) -> Job:
            previous = seen["status"], seen["status_changed_at"]
            stored = await update_row(conn, JOBS, job_id, row, *previous, guard=guard)
            if stored is None:
                current = await require_row(conn, JOBS, job_id)
                raise Conflict(job_moved(job_id, current["status"]))
            for job_row in create:
                await insert_row(conn, JOBS, job_row)
            if deployed_at is not None:
                await conn.execute(RECORD_DEPLOYMENT, row["certificate_id"], deployed_at)
            await insert_audit(conn, audit)
            return JOBS.decode(stored)

        return await self._run(op)

    async def _awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
        return await self._jobs(AWAITING_CSR, agent_id)

    async def _jobs_due_for_retry(self, now: datetime, limit: int) -> tuple[Job, ...]:
        return await self._jobs(RETRY_DUE, now, limit)

    async def _timed_out_jobs(
        self, now: datetime, waits: tuple[timedelta, timedelta], limit: int
    ) -> tuple[Job, ...]:
        csr, approval = waits
        return await self._jobs(TIMED_OUT, now - csr, now - approval, limit)

    async def _jobs_on_lost_agents(
        self, now: datetime, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        async def op(conn: Conn) -> tuple[LostAgentJob, ...]:
            rows = await conn.fetch(LOST_AGENTS, now - offline_after, limit)
            return tuple(
                LostAgentJob(JOBS.decode(r), AGENTS.decode(prefixed(r, "a__"))) for r in rows
            )

        return await self._run(op, write=False)

    # -- revocations -----------------------------------------------------------------------

    async def _revoke_certificate(self, row: Row, audit: Audit) -> ManagedCertificate:
        cert_id = row["certificate_id"]
        revoked = CertificateStatus.REVOKED.value
        changes = {
            "status": revoked,
            "revoked_at": row["revoked_at"],
            "revocation_reason": row["reason"],
            "updated_at": row["revoked_at"],
        }

        async def op(conn: Conn) -> ManagedCertificate:
            cert = await require_row(conn, CERTIFICATES, cert_id, lock=True)
            if cert["status"] == revoked:
                raise Conflict(already_revoked(cert_id))
            await insert_row(conn, REVOCATIONS, row)
            await update_row(conn, CERTIFICATES, cert_id, changes)
            await insert_audit(conn, audit)
            return await fetch_entity(conn, CERTIFICATES, cert_id)

        return await self._run(op)


@asynccontextmanager
async def open_postgres_store(
    dsn: str, rules: DomainRules, *, max_size: int, min_size: int = 1, encryption_key: str = ""
) -> AsyncIterator[PostgresStore]:
    """A PostgresStore applying ``rules`` on a new pool of ``min_size``..``max_size``
    connections with its own trio-asyncio loop, closed on exit. ``StoreUnavailable`` if
    PostgreSQL cannot be reached."""
    async with asyncio_loop() as loop:
        bridge = await Bridge.connect(
            dsn,
            loop=loop,
            max_size=max_size,
            min_size=min_size,
            connect_timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
        )
        store = PostgresStore(
            bridge, rules, encryption_key=encryption_key, dsn=dsn, connect_timeout=CONNECT_TIMEOUT
        )
        try:
            yield store
        finally:
            await store.aclose()
