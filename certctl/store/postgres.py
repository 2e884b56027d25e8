"""``PostgresStore``: the ``Store`` protocol on PostgreSQL, through asyncpg and trio-asyncio.

The bridge. asyncpg speaks asyncio and the rest of certctl speaks trio; trio-asyncio runs
an asyncio loop inside trio. Each crossing costs about as much as a query round trip, so
every operation crosses exactly once: the whole transaction (acquire a connection, BEGIN,
its statements, COMMIT) is one asyncio coroutine called through ``aio_as_trio``. Sealing
and unsealing secrets (slow key derivation on first use) happens on the trio side in a
worker thread, before or after the crossing, so it never stalls the loop.

Recovery. The pool is never rebuilt: asyncpg discards a connection whose socket closed and
opens a new one on the next acquire. While PostgreSQL is down that open fails, and every
connection-level failure (refused or missing socket, server shutting down or starting up,
connection lost mid-query, pool closed) is raised as ``StoreUnavailable``; once the server
is back, the next operation simply works. No asyncpg exception leaves this module: unique
and foreign-key violations become ``Conflict``/``NotFound`` with the same messages as
MemoryStore, anything else a ``StoreError``.

Reads that are a single statement skip BEGIN/COMMIT (one statement is atomic on its own),
which saves two round trips on the hottest paths.
"""

# SQL in this module is assembled only from the table metadata of certctl.store.rows and
# from constants; every value travels as a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import asyncpg
import trio
import trio_asyncio

from certctl.core.jobs import ACTIVE_STATES, Claimed, transition
from certctl.core.model import (
    Agent,
    AgentStatus,
    AuditEvent,
    CertificateProfile,
    CertificateStatus,
    CertificateVersion,
    Issuer,
    Job,
    JobStatus,
    JobType,
    JSONValue,
    ManagedCertificate,
    Owner,
    RenewalPolicy,
    Revocation,
    Target,
    Team,
)
from certctl.core.renewal import renewal_due_at
from certctl.store import checks
from certctl.store.base import (
    ANY_AUDIT,
    ANY_CERTIFICATE,
    ANY_JOB,
    DEFAULT_PAGE_SIZE,
    DUE_STATUSES,
    EDITABLE_CERTIFICATE_FIELDS,
    AgentDependencies,
    AuditQuery,
    CertificateQuery,
    DueRenewal,
    InventoryCounts,
    JobQuery,
    Leadership,
    LostAgentJob,
    Page,
)
from certctl.store.errors import (
    Conflict,
    NotFound,
    SchemaMismatch,
    StoreError,
    StoreUnavailable,
)
from certctl.store.migrate import Migration, MigrationState, apply_migrations, migration_states
from certctl.store.query import (
    Condition,
    audit_conditions,
    certificate_conditions,
    check_limit,
    decode_cursor,
    encode_cursor,
    job_conditions,
)
from certctl.store.rows import (
    AGENTS,
    AUDIT,
    CERTIFICATES,
    CLOSED_STATUSES,
    ISSUERS,
    JOBS,
    OWNERS,
    POLICIES,
    PROFILES,
    REVOCATIONS,
    TABLES,
    TARGETS,
    TEAMS,
    UNKNOWN_AGENT_KEY,
    VERSIONS,
    Reference,
    Table,
    agent_retired,
    already_archived,
    already_revoked,
    certificate_closed,
    duplicate,
    heartbeat_moved,
    job_moved,
    missing_reference,
    not_found,
    retirement_blocked,
    scalar,
    status_changed,
    still_referenced,
)
from certctl.store.secrets import open_secret, sealed_row

T = TypeVar("T")
E = TypeVar("E")
Conn = Any
"""An ``asyncpg.Connection`` (asyncpg ships no type information)."""
Record = Mapping[str, Any]

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

SESSION_TIMEOUT: Final = 5.0
"""Seconds a leadership session may take to answer a check or to unlock and close."""

# -- SQL building blocks (column lists come from certctl.store.rows, never from input) ----


def _q(name: str) -> str:
    return f'"{name}"'


def _columns(table: Table[Any], alias: str, *, prefix: str = "") -> str:
    return ", ".join(f"{alias}.{_q(c)} AS {_q(prefix + c)}" for c in table.stored)


_TARGET_IDS: Final = (
    "ARRAY(SELECT m.target_id FROM certificate_target_mappings m "
    "WHERE m.certificate_id = c.id ORDER BY m.target_id) AS target_ids"
)
_CERT_SELECT: Final = (
    f"SELECT {_columns(CERTIFICATES, 'c')}, c.renewal_due_at, {_TARGET_IDS} "
    "FROM managed_certificates c"
)
_LATEST_VERSION: Final = (
    "SELECT * FROM certificate_versions lv WHERE lv.certificate_id = c.id "
    "ORDER BY lv.created_at DESC, lv.id DESC LIMIT 1"
)


def _select(table: Table[Any]) -> str:
    if table is CERTIFICATES:
        return _CERT_SELECT
    return f"SELECT {_columns(table, 't')} FROM {table.name} t"


def _alias(table: Table[Any]) -> str:
    return "c" if table is CERTIFICATES else "t"


def _where(conditions: Sequence[Condition], alias: str, args: list[Any]) -> str:
    """SQL for ``conditions``, appending their values to ``args``."""
    parts = []
    for cond in conditions:
        args.append(cond.value)
        column, placeholder = f"{alias}.{_q(cond.column)}", f"${len(args)}"
        if cond.op == "in":
            parts.append(f"{column} = ANY({placeholder}::text[])")
        else:
            parts.append(f"{column} {cond.op} {placeholder}")
    return " AND ".join(parts) or "TRUE"


def _unique_constraints() -> dict[str, tuple[Table[Any], tuple[str, ...]]]:
    found: dict[str, tuple[Table[Any], tuple[str, ...]]] = {}
    for table in TABLES.values():
        found[f"{table.name}_pkey"] = (table, table.key)
        for cols in table.uniques:
            found[f"{table.name}_{'_'.join(cols)}_key"] = (table, cols)
    return found


def _foreign_keys() -> dict[str, tuple[Table[Any], Reference]]:
    return {
        f"{table.name}_{ref.column}_fkey": (table, ref)
        for table in TABLES.values()
        for ref in table.references
    }


_UNIQUES: Final = _unique_constraints()
_FOREIGN_KEYS: Final = _foreign_keys()


def _constraint_error(exc: Exception, row: Mapping[str, Any]) -> StoreError:
    """The store error for a unique or foreign-key violation while writing ``row``."""
    name = getattr(exc, "constraint_name", None) or ""
    if isinstance(exc, asyncpg.UniqueViolationError) and name in _UNIQUES:
        table, cols = _UNIQUES[name]
        return Conflict(duplicate(table, cols, row))
    if isinstance(exc, asyncpg.ForeignKeyViolationError) and name in _FOREIGN_KEYS:
        return NotFound(missing_reference(*_FOREIGN_KEYS[name]))
    return StoreError(f"database refused the write ({exc}); report this as a certctl bug.")


async def _execute(conn: Conn, row: Mapping[str, Any], sql: str, *args: Any) -> Any:
    """Run a writing statement, turning constraint violations into store errors."""
    try:
        return await conn.fetch(sql, *args)
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _constraint_error(exc, row) from None


async def _insert(conn: Conn, table: Table[Any], row: Mapping[str, Any]) -> None:
    names = list(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    sql = f"INSERT INTO {table.name} ({', '.join(map(_q, names))}) VALUES ({placeholders})"
    await _execute(conn, row, sql, *row.values())


async def _update(
    conn: Conn,
    table: Table[Any],
    row_id: str,
    changes: Mapping[str, Any],
    *guard_args: Any,
    guard: str = "TRUE",
) -> Record | None:
    """UPDATE one row by id, if ``guard`` (a compare-and-set condition over ``$2``, ...
    bound to ``guard_args``) holds; returns the stored columns, or ``None`` when no row
    matched."""
    names = [n for n in changes if n != "id"]
    base = 2 + len(guard_args)
    assignments = ", ".join(f"{_q(n)} = ${base + i}" for i, n in enumerate(names))
    sql = (
        f"UPDATE {table.name} t SET {assignments} WHERE t.id = $1 AND ({guard}) "
        f"RETURNING {_columns(table, 't')}"
    )
    rows = await _execute(conn, changes, sql, row_id, *guard_args, *(changes[n] for n in names))
    return rows[0] if rows else None


async def _require(conn: Conn, table: Table[Any], row_id: str, *, lock: bool = False) -> Record:
    """The row (``lock``: held until commit against concurrent writers), or NotFound."""
    suffix = " FOR NO KEY UPDATE" if lock else ""
    row = await conn.fetchrow(f"SELECT * FROM {table.name} WHERE id = $1{suffix}", row_id)
    if row is None:
        raise NotFound(not_found(table, row_id))
    return row  # type: ignore[no-any-return]


async def _fetch_one(conn: Conn, table: Table[E], row_id: str) -> E:
    row = await conn.fetchrow(f"{_select(table)} WHERE {_alias(table)}.id = $1", row_id)
    if row is None:
        raise NotFound(not_found(table, row_id))
    return table.decode(row)


async def _audit(conn: Conn, events: Sequence[AuditEvent]) -> None:
    for event in events:
        await _insert(conn, AUDIT, AUDIT.encode(event))


def _prefixed(row: Record, prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


# -- statements written once --------------------------------------------------------------

_JOB_COLUMNS: Final = [c for c in JOBS.stored if c != "id"]
_JOB_WRITE: Final = (
    "UPDATE jobs SET "
    + ", ".join(f"{_q(c)} = ${i}" for i, c in enumerate(_JOB_COLUMNS, start=2))
    + " WHERE id = $1"
)
_JOB_SELECT: Final = f"SELECT {_columns(JOBS, 'j')} FROM jobs j"
_CLAIM: Final = (
    f"{_JOB_SELECT} WHERE j.status = 'Pending' AND j.scheduled_at <= $1 AND "
    "CASE WHEN $3::text IS NULL THEN j.type <> 'Deployment' "
    "ELSE j.type = 'Deployment' AND (j.agent_id = $3 OR (j.agent_id IS NULL AND j.target_id IN "
    "(SELECT id FROM deployment_targets WHERE agent_id = $3))) END "
    "ORDER BY j.scheduled_at, j.id LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
)
_AWAITING_CSR: Final = (
    f"{_JOB_SELECT} WHERE j.status = 'AwaitingCSR' AND j.certificate_id IN ("
    "SELECT m.certificate_id FROM certificate_target_mappings m "
    "JOIN deployment_targets t ON t.id = m.target_id "
    "WHERE t.agent_id = $1 AND t.retired_at IS NULL) ORDER BY j.created_at, j.id"
)
_RETRY_DUE: Final = (
    f"{_JOB_SELECT} WHERE j.status = 'Failed' AND j.next_retry_at <= $1 "
    "AND j.attempts < j.max_attempts ORDER BY j.next_retry_at, j.id LIMIT $2"
)
_TIMED_OUT: Final = (
    f"{_JOB_SELECT} WHERE j.status IN ('AwaitingCSR', 'AwaitingApproval') AND "
    "j.status_changed_at < CASE j.status WHEN 'AwaitingCSR' THEN $1::timestamptz "
    "ELSE $2::timestamptz END "
    "ORDER BY j.status_changed_at, j.id LIMIT $3"
)
_LOST_AGENTS: Final = (
    f"SELECT {_columns(JOBS, 'j')}, {_columns(AGENTS, 'a', prefix='a__')} "
    "FROM jobs j JOIN agents a ON a.id = j.agent_id WHERE j.status = 'Running' AND "
    "(a.retired_at IS NOT NULL OR a.last_heartbeat_at IS NULL OR a.last_heartbeat_at < $1) "
    "ORDER BY j.status_changed_at, j.id LIMIT $2"
)
_DUE_STATUS_LIST: Final = ", ".join(f"'{s.value}'" for s in sorted(DUE_STATUSES))
_DUE_RENEWALS: Final = (
    f"SELECT {_columns(CERTIFICATES, 'c')}, c.renewal_due_at, {_TARGET_IDS}, "
    f"{_columns(VERSIONS, 'v', prefix='v__')} "
    f"FROM managed_certificates c CROSS JOIN LATERAL ({_LATEST_VERSION}) v "
    f"WHERE c.status IN ({_DUE_STATUS_LIST}) AND c.renewal_due_at <= $1 "
    "AND (c.renewal_due_at, c.id) > ($2::timestamptz, $3::text) "
    "ORDER BY c.renewal_due_at, c.id LIMIT $4"
)
"""The due-renewal query. The status list is literal so the planner matches it to the
partial index ``managed_certificates_renewal_due_idx``."""
_VERSIONS: Final = (
    f"SELECT c.id AS certificate, {_columns(VERSIONS, 'v')} FROM managed_certificates c "
    "LEFT JOIN certificate_versions v ON v.certificate_id = c.id WHERE c.id = $1 "
    "ORDER BY v.created_at DESC, v.id DESC"
)
_GOVERNED: Final = (
    "SELECT c.id, v.not_before, v.not_after FROM managed_certificates c "
    f"CROSS JOIN LATERAL ({_LATEST_VERSION}) v WHERE c.renewal_policy_id = $1"
)
_LATEST_VALIDITY: Final = (
    "SELECT lv.not_before, lv.not_after FROM certificate_versions lv "
    "WHERE lv.certificate_id = $1 ORDER BY lv.created_at DESC, lv.id DESC LIMIT 1"
)
_ACTIVE_LIST: Final = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATES))
_DEPENDENCIES: Final = (
    "SELECT "
    "(SELECT count(*) FROM deployment_targets WHERE agent_id = a.id AND retired_at IS NULL) "
    "AS targets, "
    "(SELECT count(DISTINCT c.id) FROM managed_certificates c "
    "JOIN certificate_target_mappings m ON m.certificate_id = c.id "
    "JOIN deployment_targets t ON t.id = m.target_id "
    "WHERE t.agent_id = a.id AND t.retired_at IS NULL "
    "AND c.status NOT IN ('Archived', 'Revoked')) AS certificates, "
    f"(SELECT count(*) FROM jobs j WHERE j.status IN ({_ACTIVE_LIST}) AND (j.agent_id = a.id "
    "OR (j.agent_id IS NULL AND j.target_id IN "
    "(SELECT id FROM deployment_targets WHERE agent_id = a.id)))) AS jobs "
    "FROM agents a WHERE a.id = $1"
)
_LIST_TARGETS: Final = (
    f"{_select(TARGETS)} WHERE ($1::text IS NULL OR t.agent_id = $1) AND ($2::text IS NULL "
    "OR t.id IN (SELECT target_id FROM certificate_target_mappings WHERE certificate_id = $2)) "
    "ORDER BY t.id"
)
_MAP_REMOVE: Final = (
    "DELETE FROM certificate_target_mappings WHERE certificate_id = $1 "
    "AND NOT (target_id = ANY($2::text[]))"
)
_MAP_ADD: Final = (
    "INSERT INTO certificate_target_mappings (certificate_id, target_id) "
    "SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING"
)
_HEARTBEAT: Final = (
    "UPDATE agents t SET last_heartbeat_at = $2, status = 'Online', "
    "hostname = COALESCE(NULLIF($3::text, ''), hostname), os = COALESCE(NULLIF($4::text, ''), os), "
    "architecture = COALESCE(NULLIF($5::text, ''), architecture), "
    "ip_address = COALESCE(NULLIF($6::text, ''), ip_address), "
    "version = COALESCE(NULLIF($7::text, ''), version) "
    f"WHERE t.id = $1 AND t.retired_at IS NULL RETURNING {_columns(AGENTS, 't')}"
)


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


class PostgresStore:
    """See the module docstring; open one with ``open_postgres_store`` or ``connect``."""

    def __init__(
        self,
        pool: Any,
        loop: Any,
        *,
        encryption_key: str,
        dsn: str,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
    ) -> None:
        self._pool = pool
        self._loop = loop
        self._encryption_key = encryption_key
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        loop: Any,
        max_size: int,
        min_size: int = 1,
        encryption_key: str = "",
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
    ) -> PostgresStore:
        """A store on a new pool of ``min_size``..``max_size`` connections, running on the
        trio-asyncio ``loop``. ``StoreUnavailable`` if PostgreSQL cannot be reached."""
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
                # The operation deadline lives in _bridge instead, as a trio deadline.
                command_timeout=None,
                max_inactive_connection_lifetime=0,
            )
        except Exception as exc:
            # At connect time a refused login or a missing database is as fatal for the
            # caller as a missing server: nothing can be served until the operator acts.
            if _unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                raise StoreUnavailable(_down(exc)) from None
            raise
        return cls(
            pool,
            loop,
            encryption_key=encryption_key,
            dsn=dsn,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

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

    async def _run(self, op: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T:
        """Run ``op`` on one pooled connection (in one transaction when ``write``),
        crossing the trio-asyncio bridge once."""
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

        return await self._bridge(run)

    async def _bridge(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await the asyncio coroutine function ``call`` from trio within the command
        timeout; only store errors (and ``ValueError``) come out."""
        try:
            with trio.fail_after(self._command_timeout):
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

    # -- schema ---------------------------------------------------------------------------

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

    # -- leadership -----------------------------------------------------------------------

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[Leadership]:
        """A session advisory lock on a connection of its own, outside the pool: the pool
        never holds session state (see ``_keep_session``), a replica whose pool has one
        connection cannot starve itself, and losing the session is losing the lock."""
        claim = _PostgresLeadership(_lock_key(name), self)
        try:
            await self._bridge(lambda: claim.try_lock(self._dsn, self._connect_timeout))
            yield claim
        finally:
            await claim.release()

    # -- generic table operations ---------------------------------------------------------

    async def _create(self, table: Table[E], entity: E, audit: Sequence[AuditEvent]) -> E:
        return await self._insert_row(table, table.encode(entity), audit)

    async def _insert_row(
        self, table: Table[E], row: Mapping[str, Any], audit: Sequence[AuditEvent]
    ) -> E:
        async def op(conn: Conn) -> E:
            await _insert(conn, table, row)
            await _audit(conn, audit)
            return await _fetch_one(conn, table, row["id"])

        return await self._run(op)

    async def _get(self, table: Table[E], row_id: str) -> E:
        return await self._run(lambda conn: _fetch_one(conn, table, row_id), write=False)

    async def _all(self, table: Table[E], conditions: Sequence[Condition] = ()) -> tuple[E, ...]:
        args: list[Any] = []
        alias = _alias(table)
        sql = f"{_select(table)} WHERE {_where(conditions, alias, args)} ORDER BY {alias}.id"

        async def op(conn: Conn) -> tuple[E, ...]:
            return tuple(table.decode(r) for r in await conn.fetch(sql, *args))

        return await self._run(op, write=False)

    async def _replace(
        self, table: Table[E], row: Mapping[str, Any], audit: Sequence[AuditEvent]
    ) -> E:
        async def op(conn: Conn) -> E:
            stored = await _update(conn, table, row["id"], row)
            if stored is None:
                raise NotFound(not_found(table, row["id"]))
            await _audit(conn, audit)
            return table.decode(stored)

        return await self._run(op)

    async def _remove(self, table: Table[Any], row_id: str, audit: Sequence[AuditEvent]) -> None:
        async def op(conn: Conn) -> None:
            try:
                deleted = await conn.fetch(
                    f"DELETE FROM {table.name} WHERE id = $1 RETURNING id", row_id
                )
            except asyncpg.ForeignKeyViolationError as exc:
                other, ref = _FOREIGN_KEYS[exc.constraint_name]
                raise Conflict(still_referenced(table, row_id, other, ref)) from None
            if not deleted:
                raise NotFound(not_found(table, row_id))
            await _audit(conn, audit)

        await self._run(op)

    async def _page(
        self,
        table: Table[Any],
        conditions: Sequence[Condition],
        position: str,
        *,
        limit: int,
        cursor: str | None,
        build: Callable[[Record], E],
    ) -> Page[E]:
        check_limit(limit)
        args: list[Any] = []
        alias = _alias(table)
        where = _where(conditions, alias, args)
        if cursor is not None:
            after_position, after_id = decode_cursor(cursor)
            args += [after_position, after_id]
            where += (
                f" AND ({alias}.{_q(position)}, {alias}.id)"
                f" > (${len(args) - 1}::timestamptz, ${len(args)}::text)"
            )
        args.append(limit + 1)
        sql = (
            f"{_select(table)} WHERE {where} "
            f"ORDER BY {alias}.{_q(position)}, {alias}.id LIMIT ${len(args)}"
        )

        async def op(conn: Conn) -> list[Record]:
            return list(await conn.fetch(sql, *args))

        rows = await self._run(op, write=False)
        return _paged(rows, limit, position, build)

    # -- teams, owners, policies, profiles ------------------------------------------------

    async def create_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team:
        return await self._create(TEAMS, team, audit)

    async def get_team(self, team_id: str) -> Team:
        return await self._get(TEAMS, team_id)

    async def list_teams(self) -> tuple[Team, ...]:
        return await self._all(TEAMS)

    async def update_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team:
        return await self._replace(TEAMS, TEAMS.encode(team), audit)

    async def delete_team(self, team_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(TEAMS, team_id, audit)

    async def create_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner:
        return await self._create(OWNERS, owner, audit)

    async def get_owner(self, owner_id: str) -> Owner:
        return await self._get(OWNERS, owner_id)

    async def list_owners(self, *, team_id: str | None = None) -> tuple[Owner, ...]:
        where = [] if team_id is None else [Condition("team_id", "=", team_id)]
        return await self._all(OWNERS, where)

    async def update_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner:
        return await self._replace(OWNERS, OWNERS.encode(owner), audit)

    async def delete_owner(self, owner_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(OWNERS, owner_id, audit)

    async def create_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        return await self._create(POLICIES, policy, audit)

    async def get_policy(self, policy_id: str) -> RenewalPolicy:
        return await self._get(POLICIES, policy_id)

    async def list_policies(self) -> tuple[RenewalPolicy, ...]:
        return await self._all(POLICIES)

    async def update_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        row = POLICIES.encode(policy)

        async def op(conn: Conn) -> RenewalPolicy:
            stored = await _update(conn, POLICIES, policy.id, row)
            if stored is None:
                raise NotFound(not_found(POLICIES, policy.id))
            saved = POLICIES.decode(stored)
            due = [
                (r["id"], renewal_due_at(r["not_before"], r["not_after"], saved))
                for r in await conn.fetch(_GOVERNED, policy.id)
            ]
            await conn.executemany(
                "UPDATE managed_certificates SET renewal_due_at = $2 WHERE id = $1", due
            )
            await _audit(conn, audit)
            return saved

        return await self._run(op)

    async def delete_policy(self, policy_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(POLICIES, policy_id, audit)

    async def create_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile:
        return await self._create(PROFILES, profile, audit)

    async def get_profile(self, profile_id: str) -> CertificateProfile:
        return await self._get(PROFILES, profile_id)

    async def list_profiles(self) -> tuple[CertificateProfile, ...]:
        return await self._all(PROFILES)

    async def update_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile:
        return await self._replace(PROFILES, PROFILES.encode(profile), audit)

    async def delete_profile(self, profile_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(PROFILES, profile_id, audit)

    # -- issuers and targets --------------------------------------------------------------

    async def _sealed(
        self, table: Table[Any], entity: Issuer | Target, *, keep: bool
    ) -> dict[str, Any]:
        row: dict[str, Any] = await trio.to_thread.run_sync(
            lambda: sealed_row(table, entity, self._encryption_key, keep=keep)
        )
        return row

    async def _secret(self, table: Table[Any], row_id: str) -> Mapping[str, JSONValue]:
        async def op(conn: Conn) -> bytes | None:
            row = await conn.fetchrow(
                f"SELECT encrypted_secret FROM {table.name} WHERE id = $1", row_id
            )
            if row is None:
                raise NotFound(not_found(table, row_id))
            return row["encrypted_secret"]  # type: ignore[no-any-return]

        blob = await self._run(op, write=False)
        secret: Mapping[str, JSONValue] = await trio.to_thread.run_sync(
            lambda: open_secret(table.name, row_id, blob, self._encryption_key)
        )
        return secret

    async def create_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        row = await self._sealed(ISSUERS, issuer, keep=False)
        return await self._insert_row(ISSUERS, row, audit)

    async def get_issuer(self, issuer_id: str) -> Issuer:
        return await self._get(ISSUERS, issuer_id)

    async def list_issuers(self) -> tuple[Issuer, ...]:
        return await self._all(ISSUERS)

    async def update_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        row = await self._sealed(ISSUERS, issuer, keep=True)
        return await self._replace(ISSUERS, row, audit)

    async def delete_issuer(self, issuer_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(ISSUERS, issuer_id, audit)

    async def issuer_secret(self, issuer_id: str) -> Mapping[str, JSONValue]:
        return await self._secret(ISSUERS, issuer_id)

    async def create_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        row = await self._sealed(TARGETS, target, keep=False)
        return await self._insert_row(TARGETS, row, audit)

    async def get_target(self, target_id: str) -> Target:
        return await self._get(TARGETS, target_id)

    async def list_targets(
        self, *, agent_id: str | None = None, certificate_id: str | None = None
    ) -> tuple[Target, ...]:
        async def op(conn: Conn) -> tuple[Target, ...]:
            rows = await conn.fetch(_LIST_TARGETS, agent_id, certificate_id)
            return tuple(TARGETS.decode(r) for r in rows)

        return await self._run(op, write=False)

    async def update_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        row = await self._sealed(TARGETS, target, keep=True)
        return await self._replace(TARGETS, row, audit)

    async def target_secret(self, target_id: str) -> Mapping[str, JSONValue]:
        return await self._secret(TARGETS, target_id)

    # -- agents ---------------------------------------------------------------------------

    async def create_agent(
        self, agent: Agent, key_hash: str, *, audit: Sequence[AuditEvent] = ()
    ) -> Agent:
        row = {**AGENTS.encode(agent), "key_hash": checks.key_hash(key_hash)}
        return await self._insert_row(AGENTS, row, audit)

    async def get_agent(self, agent_id: str) -> Agent:
        return await self._get(AGENTS, agent_id)

    async def agent_by_key_hash(self, key_hash: str) -> Agent:
        digest = checks.key_hash(key_hash)

        async def op(conn: Conn) -> Agent:
            row = await conn.fetchrow(f"{_select(AGENTS)} WHERE t.key_hash = $1", digest)
            if row is None:
                raise NotFound(UNKNOWN_AGENT_KEY)
            return AGENTS.decode(row)

        return await self._run(op, write=False)

    async def list_agents(self) -> tuple[Agent, ...]:
        return await self._all(AGENTS)

    async def inventory_counts(self, *, expiring_before: datetime) -> InventoryCounts:
        async def op(conn: Conn) -> InventoryCounts:
            certs = await conn.fetch(
                "SELECT status, count(*) AS n, count(*) FILTER (WHERE expires_at < $1) AS soon "
                "FROM managed_certificates GROUP BY status",
                expiring_before,
            )
            agents = await conn.fetch(
                "SELECT status, retired_at IS NOT NULL AS retired, count(*) AS n "
                "FROM agents GROUP BY 1, 2"
            )
            jobs = await conn.fetch("SELECT type, status, count(*) AS n FROM jobs GROUP BY 1, 2")
            return InventoryCounts(
                certificates={CertificateStatus(r["status"]): r["n"] for r in certs},
                agents=Counter(
                    {AgentStatus(r["status"]): r["n"] for r in agents if not r["retired"]}
                ),
                retired_agents=sum(r["n"] for r in agents if r["retired"]),
                jobs={(JobType(r["type"]), JobStatus(r["status"])): r["n"] for r in jobs},
                expiring=sum(r["soon"] for r in certs),
            )

        return await self._run(op)

    async def _live_agent_error(self, conn: Conn, agent_id: str) -> StoreError:
        """Why a write guarded by "not retired" matched no row."""
        row = await _require(conn, AGENTS, agent_id)
        if row["retired_at"] is not None:
            return Conflict(agent_retired(agent_id))
        return Conflict(heartbeat_moved(agent_id))

    async def record_heartbeat(
        self,
        agent_id: str,
        at: datetime,
        *,
        hostname: str = "",
        os: str = "",
        architecture: str = "",
        ip_address: str = "",
        version: str = "",
    ) -> Agent:
        metadata = {
            "hostname": hostname,
            "os": os,
            "architecture": architecture,
            "ip_address": ip_address,
            "version": version,
        }
        values = [scalar(f"heartbeat {k}", v) for k, v in metadata.items()]
        when = scalar("heartbeat at", at)

        async def op(conn: Conn) -> Agent:
            row = await conn.fetchrow(_HEARTBEAT, agent_id, when, *values)
            if row is None:
                raise await self._live_agent_error(conn, agent_id)
            return AGENTS.decode(row)

        # One statement: its own implicit transaction; BEGIN/COMMIT would double the
        # round trips of the call every agent makes every minute.
        return await self._run(op, write=False)

    async def set_agent_status(
        self, agent_id: str, status: AgentStatus, *, seen_heartbeat_at: datetime | None
    ) -> Agent:
        seen = scalar("seen_heartbeat_at", seen_heartbeat_at)
        changes = {"status": AgentStatus(status).value}
        guard = "t.retired_at IS NULL AND t.last_heartbeat_at IS NOT DISTINCT FROM $2"

        async def op(conn: Conn) -> Agent:
            row = await _update(conn, AGENTS, agent_id, changes, seen, guard=guard)
            if row is None:
                raise await self._live_agent_error(conn, agent_id)
            return AGENTS.decode(row)

        return await self._run(op)

    async def agent_dependencies(self, agent_id: str) -> AgentDependencies:
        return await self._run(lambda conn: _dependencies(conn, agent_id), write=False)

    async def retire_agent(
        self,
        agent_id: str,
        at: datetime,
        reason: str,
        *,
        cascade: bool = False,
        audit: Sequence[AuditEvent] = (),
    ) -> Agent:
        when, why = scalar("retired at", at), scalar("retired reason", reason)
        retired = {"retired_at": when, "retired_reason": why}

        async def op(conn: Conn) -> Agent:
            row = await _require(conn, AGENTS, agent_id, lock=True)
            if row["retired_at"] is None:
                deps = await _dependencies(conn, agent_id)
                if deps.total and not cascade:
                    raise Conflict(retirement_blocked(agent_id, deps))
                await conn.execute(
                    "UPDATE deployment_targets SET retired_at = $2, retired_reason = $3 "
                    "WHERE agent_id = $1 AND retired_at IS NULL",
                    agent_id,
                    when,
                    why,
                )
                await _update(conn, AGENTS, agent_id, retired)
            await _audit(conn, audit)
            return await _fetch_one(conn, AGENTS, agent_id)

        return await self._run(op)

    # -- certificates ---------------------------------------------------------------------

    async def create_certificate(
        self,
        cert: ManagedCertificate,
        *,
        jobs: Sequence[Job] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        row = {**CERTIFICATES.encode(checks.new_certificate(cert)), "renewal_due_at": None}
        targets = _target_list(cert)
        job_rows = [JOBS.encode(job) for job in jobs]

        async def op(conn: Conn) -> ManagedCertificate:
            await _insert(conn, CERTIFICATES, row)
            await _map(conn, cert.id, targets)
            for job_row in job_rows:
                await _insert(conn, JOBS, job_row)
            await _audit(conn, audit)
            return await _fetch_one(conn, CERTIFICATES, cert.id)

        return await self._run(op)

    async def get_certificate(self, cert_id: str) -> ManagedCertificate:
        return await self._get(CERTIFICATES, cert_id)

    async def list_certificates(
        self,
        query: CertificateQuery = ANY_CERTIFICATE,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[ManagedCertificate]:
        return await self._page(
            CERTIFICATES,
            certificate_conditions(query),
            "created_at",
            limit=limit,
            cursor=cursor,
            build=CERTIFICATES.decode,
        )

    async def update_certificate(
        self, cert: ManagedCertificate, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        encoded = CERTIFICATES.encode(cert)
        changes = {name: encoded[name] for name in EDITABLE_CERTIFICATE_FIELDS}
        targets = _target_list(cert)

        async def op(conn: Conn) -> ManagedCertificate:
            old = await _require(conn, CERTIFICATES, cert.id, lock=True)
            await _update(conn, CERTIFICATES, cert.id, changes)
            latest = await conn.fetchrow(_LATEST_VALIDITY, cert.id)
            if latest is not None and changes["renewal_policy_id"] != old["renewal_policy_id"]:
                policy = await _fetch_one(conn, POLICIES, changes["renewal_policy_id"])
                due = renewal_due_at(latest["not_before"], latest["not_after"], policy)
                await _update(conn, CERTIFICATES, cert.id, {"renewal_due_at": due})
            await _map(conn, cert.id, targets)
            await _audit(conn, audit)
            return await _fetch_one(conn, CERTIFICATES, cert.id)

        return await self._run(op)

    async def set_certificate_status(
        self,
        cert_id: str,
        status: CertificateStatus,
        *,
        expected: CertificateStatus,
        at: datetime,
        audit: Sequence[AuditEvent] = (),
        jobs: Sequence[Job] = (),
    ) -> ManagedCertificate:
        changes = {"status": CertificateStatus(status).value, "updated_at": scalar("at", at)}
        want = CertificateStatus(expected)
        rows = [JOBS.encode(job) for job in jobs]

        async def op(conn: Conn) -> ManagedCertificate:
            guarded = await _update(
                conn, CERTIFICATES, cert_id, changes, want.value, guard="t.status = $2"
            )
            if guarded is None:
                current = await _require(conn, CERTIFICATES, cert_id)
                raise Conflict(status_changed(cert_id, current["status"], want))
            for row in rows:
                await _insert(conn, JOBS, row)
            await _audit(conn, audit)
            return await _fetch_one(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def archive_certificate(
        self, cert_id: str, at: datetime, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        archived = CertificateStatus.ARCHIVED.value
        changes = {"status": archived, "updated_at": scalar("archived at", at)}

        async def op(conn: Conn) -> ManagedCertificate:
            guarded = await _update(
                conn, CERTIFICATES, cert_id, changes, archived, guard="t.status <> $2"
            )
            if guarded is None:
                await _require(conn, CERTIFICATES, cert_id)
                raise Conflict(already_archived(cert_id))
            await _audit(conn, audit)
            return await _fetch_one(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def add_version(
        self,
        version: CertificateVersion,
        *,
        status: CertificateStatus = CertificateStatus.ACTIVE,
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        row = VERSIONS.encode(checks.version(version))
        new_status = CertificateStatus(status).value
        cert_id = version.certificate_id

        async def op(conn: Conn) -> ManagedCertificate:
            await _insert(conn, VERSIONS, row)
            # Lock the certificate before reading "latest" so concurrent versions of one
            # certificate settle on the newest; NO KEY UPDATE does not conflict with the
            # KEY SHARE lock the version's foreign key already took.
            cert = await _require(conn, CERTIFICATES, cert_id, lock=True)
            if cert["status"] in CLOSED_STATUSES:
                raise Conflict(certificate_closed(cert_id, cert["status"]))
            latest = await conn.fetchrow(_LATEST_VALIDITY, cert_id)
            policy = await _fetch_one(conn, POLICIES, cert["renewal_policy_id"])
            changes = {
                "expires_at": latest["not_after"],
                "renewal_due_at": renewal_due_at(latest["not_before"], latest["not_after"], policy),
                "status": new_status,
                "last_renewal_at": row["created_at"],
                "updated_at": row["created_at"],
            }
            await _update(conn, CERTIFICATES, cert_id, changes)
            await _audit(conn, audit)
            return await _fetch_one(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def list_versions(self, cert_id: str) -> tuple[CertificateVersion, ...]:
        return await self._run(lambda conn: _versions(conn, cert_id), write=False)

    async def latest_version(self, cert_id: str) -> CertificateVersion | None:
        versions = await self._run(lambda conn: _versions(conn, cert_id, limit=1), write=False)
        return versions[0] if versions else None

    async def due_renewals(
        self, now: datetime, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[DueRenewal]:
        check_limit(limit)
        moment = scalar("now", now)
        after = decode_cursor(cursor) if cursor is not None else (_BEFORE_ALL, "")

        async def op(conn: Conn) -> list[Record]:
            return list(await conn.fetch(_DUE_RENEWALS, moment, *after, limit + 1))

        def build(row: Record) -> DueRenewal:
            latest = VERSIONS.decode(_prefixed(row, "v__"))
            return DueRenewal(CERTIFICATES.decode(row), latest, row["renewal_due_at"])

        return _paged(await self._run(op, write=False), limit, "renewal_due_at", build)

    # -- jobs -----------------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[Job], *, audit: Sequence[AuditEvent] = ()
    ) -> tuple[Job, ...]:
        rows = [JOBS.encode(job) for job in jobs]

        async def op(conn: Conn) -> tuple[Job, ...]:
            for row in rows:
                await _insert(conn, JOBS, row)
            await _audit(conn, audit)
            return tuple(JOBS.decode(row) for row in rows)

        return await self._run(op)

    async def get_job(self, job_id: str) -> Job:
        return await self._get(JOBS, job_id)

    async def list_jobs(
        self,
        query: JobQuery = ANY_JOB,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Job]:
        return await self._page(
            JOBS, job_conditions(query), "created_at", limit=limit, cursor=cursor, build=JOBS.decode
        )

    async def _jobs(self, sql: str, *args: Any) -> tuple[Job, ...]:
        async def op(conn: Conn) -> tuple[Job, ...]:
            return tuple(JOBS.decode(r) for r in await conn.fetch(sql, *args))

        return await self._run(op, write=False)

    async def claim_jobs(
        self, *, agent_id: str | None, now: datetime, limit: int
    ) -> tuple[Job, ...]:
        check_limit(limit)
        moment = scalar("now", now)

        async def op(conn: Conn) -> tuple[Job, ...]:
            rows = await conn.fetch(_CLAIM, moment, limit, agent_id)
            claimed = [transition(JOBS.decode(r), Claimed(agent_id), moment)[0] for r in rows]
            await conn.executemany(_JOB_WRITE, [_job_args(job) for job in claimed])
            return tuple(claimed)

        return await self._run(op)

    async def transition_job(
        self,
        previous: Job,
        new: Job,
        *,
        create: Sequence[Job] = (),
        deployed_at: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> Job:
        checks.transition(previous, new)
        seen = JOBS.encode(previous)
        row = JOBS.encode(new)
        created = [JOBS.encode(job) for job in create]
        deployed = scalar("deployed_at", deployed_at)

        async def op(conn: Conn) -> Job:
            stored = await _update(
                conn,
                JOBS,
                new.id,
                row,
                seen["status"],
                seen["status_changed_at"],
                guard="t.status = $2 AND t.status_changed_at = $3",
            )
            if stored is None:
                current = await _require(conn, JOBS, new.id)
                raise Conflict(job_moved(new.id, current["status"]))
            for job_row in created:
                await _insert(conn, JOBS, job_row)
            if deployed is not None:
                await conn.execute(
                    "UPDATE managed_certificates SET last_deployment_at = "
                    "GREATEST(last_deployment_at, $2) WHERE id = $1",
                    new.certificate_id,
                    deployed,
                )
            await _audit(conn, audit)
            return JOBS.decode(stored)

        return await self._run(op)

    async def awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
        return await self._jobs(_AWAITING_CSR, agent_id)

    async def jobs_due_for_retry(self, now: datetime, *, limit: int) -> tuple[Job, ...]:
        return await self._jobs(_RETRY_DUE, scalar("now", now), check_limit(limit))

    async def timed_out_jobs(
        self,
        now: datetime,
        *,
        awaiting_csr: timedelta,
        awaiting_approval: timedelta,
        limit: int,
    ) -> tuple[Job, ...]:
        moment = scalar("now", now)
        return await self._jobs(
            _TIMED_OUT, moment - awaiting_csr, moment - awaiting_approval, check_limit(limit)
        )

    async def jobs_on_lost_agents(
        self, now: datetime, *, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        silent_since = scalar("now", now) - offline_after
        check_limit(limit)

        async def op(conn: Conn) -> tuple[LostAgentJob, ...]:
            rows = await conn.fetch(_LOST_AGENTS, silent_since, limit)
            return tuple(
                LostAgentJob(JOBS.decode(r), AGENTS.decode(_prefixed(r, "a__"))) for r in rows
            )

        return await self._run(op, write=False)

    # -- revocations and audit ------------------------------------------------------------

    async def revoke_certificate(
        self, revocation: Revocation, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        row = REVOCATIONS.encode(revocation)
        cert_id = revocation.certificate_id

        async def op(conn: Conn) -> ManagedCertificate:
            cert = await _require(conn, CERTIFICATES, cert_id, lock=True)
            if cert["status"] == CertificateStatus.REVOKED.value:
                raise Conflict(already_revoked(cert_id))
            await _insert(conn, REVOCATIONS, row)
            changes = {
                "status": CertificateStatus.REVOKED.value,
                "revoked_at": row["revoked_at"],
                "revocation_reason": row["reason"],
                "updated_at": row["revoked_at"],
            }
            await _update(conn, CERTIFICATES, cert_id, changes)
            await _audit(conn, audit)
            return await _fetch_one(conn, CERTIFICATES, cert_id)

        return await self._run(op)

    async def list_revocations(self, *, issuer_id: str | None = None) -> tuple[Revocation, ...]:
        args: list[Any] = []
        where = [] if issuer_id is None else [Condition("issuer_id", "=", issuer_id)]
        sql = f"{_select(REVOCATIONS)} WHERE {_where(where, 't', args)} ORDER BY t.revoked_at, t.id"

        async def op(conn: Conn) -> tuple[Revocation, ...]:
            return tuple(REVOCATIONS.decode(r) for r in await conn.fetch(sql, *args))

        return await self._run(op, write=False)

    async def mark_issuer_notified(self, revocation_id: str) -> Revocation:
        async def op(conn: Conn) -> Revocation:
            row = await _update(conn, REVOCATIONS, revocation_id, {"issuer_notified": True})
            if row is None:
                raise NotFound(not_found(REVOCATIONS, revocation_id))
            return REVOCATIONS.decode(row)

        return await self._run(op)

    async def append_audit(self, events: Sequence[AuditEvent]) -> None:
        await self._run(lambda conn: _audit(conn, events))

    async def list_audit(
        self,
        query: AuditQuery = ANY_AUDIT,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        return await self._page(
            AUDIT,
            audit_conditions(query),
            "timestamp",
            limit=limit,
            cursor=cursor,
            build=AUDIT.decode,
        )


_BEFORE_ALL: Final = datetime.min.replace(tzinfo=UTC)


def _lock_key(name: str) -> int:
    """The advisory lock id of a leadership ``name``, derived like the migrations' lock id
    so it cannot collide with another tool's locks by accident."""
    digest = hashlib.sha256(f"certctl leadership {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_SESSION_LOST: Final = (*UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What a leadership session raises once it is dead, killed or unanswerable."""


class _PostgresLeadership:
    """A claim whose lock lives exactly as long as its session (see
    ``PostgresStore.leadership``); ``_conn`` is ``None`` when the claim holds nothing."""

    def __init__(self, key: int, store: PostgresStore) -> None:
        self._conn: Conn | None = None
        self._key = key
        self._store = store

    async def try_lock(self, dsn: str, connect_timeout: float) -> None:
        """(asyncio) Open a session and keep it if it gets the lock. The session is stored
        here, not returned, so that a caller cancelled just as the lock was granted still
        finds it to release."""
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

        if not await self._store._bridge(alive):
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
            await self._store._bridge(unlock)


def _down(exc: BaseException) -> str:
    return (
        f"PostgreSQL is unreachable ({type(exc).__name__}: {exc}); the operation can be "
        "retried once the database is back."
    )


def _paged(rows: list[Record], limit: int, position: str, build: Callable[[Record], E]) -> Page[E]:
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return Page(
        tuple(build(r) for r in rows),
        None if last is None else encode_cursor(last[position], last["id"]),
    )


def _target_list(cert: ManagedCertificate) -> list[str]:
    return [scalar("ManagedCertificate.target_ids[]", t) for t in dict.fromkeys(cert.target_ids)]


async def _map(conn: Conn, cert_id: str, targets: list[str]) -> None:
    """Make the certificate's mapping exactly ``targets``."""
    await conn.execute(_MAP_REMOVE, cert_id, targets)
    await _execute(conn, {"certificate_id": cert_id}, _MAP_ADD, cert_id, targets)


def _job_args(job: Job) -> list[Any]:
    row = JOBS.encode(job)
    return [row["id"], *(row[c] for c in _JOB_COLUMNS)]


async def _dependencies(conn: Conn, agent_id: str) -> AgentDependencies:
    row = await conn.fetchrow(_DEPENDENCIES, agent_id)
    if row is None:
        raise NotFound(not_found(AGENTS, agent_id))
    return AgentDependencies(row["targets"], row["certificates"], row["jobs"])


async def _versions(
    conn: Conn, cert_id: str, *, limit: int | None = None
) -> tuple[CertificateVersion, ...]:
    sql = _VERSIONS if limit is None else f"{_VERSIONS} LIMIT {int(limit)}"
    rows = await conn.fetch(sql, cert_id)
    if not rows:
        raise NotFound(not_found(CERTIFICATES, cert_id))
    return tuple(VERSIONS.decode(r) for r in rows if r["id"] is not None)


@asynccontextmanager
async def _asyncio_loop() -> AsyncIterator[Any]:
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


@asynccontextmanager
async def open_postgres_store(
    dsn: str, *, max_size: int, min_size: int = 1, encryption_key: str = ""
) -> AsyncIterator[PostgresStore]:
    """A PostgresStore with its own trio-asyncio loop, closed on exit."""
    async with _asyncio_loop() as loop:
        store = await PostgresStore.connect(
            dsn, loop=loop, max_size=max_size, min_size=min_size, encryption_key=encryption_key
        )
        try:
            yield store
        finally:
            await store.aclose()
