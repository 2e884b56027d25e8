"""The SQL of PostgresStore: statements built from the table descriptions, and the
one-statement helpers every operation is written with.

SQL here is assembled only from the table metadata of ``certctl.store.rows``, from the
status sets of ``certctl.core.model`` and from constants; every value travels as a bind
parameter. Unique and foreign-key violations become ``Conflict``/``NotFound`` with the same
messages as MemoryStore.
"""

# ruff: noqa: S608

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

import asyncpg

from certctl.core.model import (
    ACTIVE_JOB_STATUSES,
    CLOSED_CERTIFICATE_STATUSES,
    AgentStatus,
    AuditEvent,
    CertificateStatus,
    CertificateVersion,
    Job,
    JobStatus,
    JobType,
)
from certctl.store._bridge import Conn
from certctl.store.base import DUE_STATUSES, AgentDependencies, InventoryCounts
from certctl.store.errors import Conflict, NotFound, StoreError
from certctl.store.query import Condition, decode_cursor
from certctl.store.rows import (
    AGENTS,
    AUDIT,
    CERTIFICATES,
    JOBS,
    TABLES,
    TARGETS,
    VERSIONS,
    Reference,
    Table,
    agent_retired,
    duplicate,
    heartbeat_moved,
    missing_reference,
    not_found,
    still_referenced,
)

E = TypeVar("E")
Record = Mapping[str, Any]


def quote(name: str) -> str:
    return f'"{name}"'


def columns(table: Table[Any], alias: str, *, prefix: str = "") -> str:
    return ", ".join(f"{alias}.{quote(c)} AS {quote(prefix + c)}" for c in table.stored)


_TARGET_IDS: Final = (
    "ARRAY(SELECT m.target_id FROM certificate_target_mappings m "
    "WHERE m.certificate_id = c.id ORDER BY m.target_id) AS target_ids"
)
_CERT_SELECT: Final = (
    f"SELECT {columns(CERTIFICATES, 'c')}, c.renewal_due_at, {_TARGET_IDS} "
    "FROM managed_certificates c"
)
_LATEST_VERSION: Final = (
    "SELECT * FROM certificate_versions lv WHERE lv.certificate_id = c.id "
    "ORDER BY lv.created_at DESC, lv.id DESC LIMIT 1"
)


def select_from(table: Table[Any]) -> str:
    if table is CERTIFICATES:
        return _CERT_SELECT
    return f"SELECT {columns(table, 't')} FROM {table.name} t"


def alias_of(table: Table[Any]) -> str:
    return "c" if table is CERTIFICATES else "t"


def where_clause(conditions: Sequence[Condition], alias: str, args: list[Any]) -> str:
    """SQL for ``conditions``, appending their values to ``args``."""
    parts = []
    for cond in conditions:
        args.append(cond.value)
        column, placeholder = f"{alias}.{quote(cond.column)}", f"${len(args)}"
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


UNIQUES: Final = _unique_constraints()
FOREIGN_KEYS: Final = _foreign_keys()


def _constraint_error(exc: Exception, row: Mapping[str, Any]) -> StoreError:
    """The store error for a unique or foreign-key violation while writing ``row``."""
    name = getattr(exc, "constraint_name", None) or ""
    if isinstance(exc, asyncpg.UniqueViolationError) and name in UNIQUES:
        table, cols = UNIQUES[name]
        return Conflict(duplicate(table, cols, row))
    if isinstance(exc, asyncpg.ForeignKeyViolationError) and name in FOREIGN_KEYS:
        return NotFound(missing_reference(*FOREIGN_KEYS[name]))
    return StoreError(f"database refused the write ({exc}); report this as a certctl bug.")


async def execute(conn: Conn, row: Mapping[str, Any], sql: str, *args: Any) -> Any:
    """Run a writing statement, turning constraint violations into store errors."""
    try:
        return await conn.fetch(sql, *args)
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _constraint_error(exc, row) from None


async def insert_row(conn: Conn, table: Table[Any], row: Mapping[str, Any]) -> None:
    names = list(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    sql = f"INSERT INTO {table.name} ({', '.join(map(quote, names))}) VALUES ({placeholders})"
    await execute(conn, row, sql, *row.values())


async def update_row(
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
    assignments = ", ".join(f"{quote(n)} = ${base + i}" for i, n in enumerate(names))
    sql = (
        f"UPDATE {table.name} t SET {assignments} WHERE t.id = $1 AND ({guard}) "
        f"RETURNING {columns(table, 't')}"
    )
    rows = await execute(conn, changes, sql, row_id, *guard_args, *(changes[n] for n in names))
    return rows[0] if rows else None


async def require_row(conn: Conn, table: Table[Any], row_id: str, *, lock: bool = False) -> Record:
    """The row (``lock``: held until commit against concurrent writers), or NotFound."""
    suffix = " FOR NO KEY UPDATE" if lock else ""
    row = await conn.fetchrow(f"SELECT * FROM {table.name} WHERE id = $1{suffix}", row_id)
    if row is None:
        raise NotFound(not_found(table, row_id))
    return row  # type: ignore[no-any-return]


async def fetch_entity(conn: Conn, table: Table[E], row_id: str) -> E:
    row = await conn.fetchrow(f"{select_from(table)} WHERE {alias_of(table)}.id = $1", row_id)
    if row is None:
        raise NotFound(not_found(table, row_id))
    return table.decode(row)


async def insert_audit(conn: Conn, events: Sequence[AuditEvent]) -> None:
    for event in events:
        await insert_row(conn, AUDIT, AUDIT.encode(event))


def prefixed(row: Record, prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


# -- statements written once --------------------------------------------------------------

_JOB_COLUMNS: Final = [c for c in JOBS.stored if c != "id"]
JOB_WRITE: Final = (
    "UPDATE jobs SET "
    + ", ".join(f"{quote(c)} = ${i}" for i, c in enumerate(_JOB_COLUMNS, start=2))
    + " WHERE id = $1"
)
_JOB_SELECT: Final = f"SELECT {columns(JOBS, 'j')} FROM jobs j"
CLAIM: Final = (
    f"{_JOB_SELECT} WHERE j.status = 'Pending' AND j.scheduled_at <= $1 AND "
    "CASE WHEN $3::text IS NULL THEN j.type <> 'Deployment' "
    "ELSE j.type = 'Deployment' AND (j.agent_id = $3 OR (j.agent_id IS NULL AND j.target_id IN "
    "(SELECT id FROM deployment_targets WHERE agent_id = $3))) END "
    "ORDER BY j.scheduled_at, j.id LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
)
AWAITING_CSR: Final = (
    f"{_JOB_SELECT} WHERE j.status = 'AwaitingCSR' AND j.certificate_id IN ("
    "SELECT m.certificate_id FROM certificate_target_mappings m "
    "JOIN deployment_targets t ON t.id = m.target_id "
    "WHERE t.agent_id = $1 AND t.retired_at IS NULL) ORDER BY j.created_at, j.id"
)
RETRY_DUE: Final = (
    f"{_JOB_SELECT} WHERE j.status = 'Failed' AND j.next_retry_at <= $1 "
    "AND j.attempts < j.max_attempts ORDER BY j.next_retry_at, j.id LIMIT $2"
)
TIMED_OUT: Final = (
    f"{_JOB_SELECT} WHERE j.status IN ('AwaitingCSR', 'AwaitingApproval') AND "
    "j.status_changed_at < CASE j.status WHEN 'AwaitingCSR' THEN $1::timestamptz "
    "ELSE $2::timestamptz END "
    "ORDER BY j.status_changed_at, j.id LIMIT $3"
)
LOST_AGENTS: Final = (
    f"SELECT {columns(JOBS, 'j')}, {columns(AGENTS, 'a', prefix='a__')} "
    "FROM jobs j JOIN agents a ON a.id = j.agent_id WHERE j.status = 'Running' AND "
    "(a.retired_at IS NOT NULL OR a.last_heartbeat_at IS NULL OR a.last_heartbeat_at < $1) "
    "ORDER BY j.status_changed_at, j.id LIMIT $2"
)


def _literal_list(statuses: Iterable[StrEnum]) -> str:
    """A status set as SQL literals (``'Archived', 'Revoked'``): status sets are ours, never
    input, and a literal list lets the planner match partial indexes written with one."""
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


_DUE_STATUS_LIST: Final = _literal_list(DUE_STATUSES)
DUE_RENEWALS: Final = (
    f"SELECT {columns(CERTIFICATES, 'c')}, c.renewal_due_at, {_TARGET_IDS}, "
    f"{columns(VERSIONS, 'v', prefix='v__')} "
    f"FROM managed_certificates c CROSS JOIN LATERAL ({_LATEST_VERSION}) v "
    f"WHERE c.status IN ({_DUE_STATUS_LIST}) AND c.renewal_due_at <= $1 "
    "AND (c.renewal_due_at, c.id) > ($2::timestamptz, $3::text) "
    "ORDER BY c.renewal_due_at, c.id LIMIT $4"
)
"""The due-renewal query. The status list is literal so the planner matches it to the
partial index ``managed_certificates_renewal_due_idx``."""
_VERSION_LIST: Final = (
    f"SELECT c.id AS certificate, {columns(VERSIONS, 'v')} FROM managed_certificates c "
    "LEFT JOIN certificate_versions v ON v.certificate_id = c.id WHERE c.id = $1 "
    "ORDER BY v.created_at DESC, v.id DESC"
)
GOVERNED: Final = (
    "SELECT c.id, v.not_before, v.not_after FROM managed_certificates c "
    f"CROSS JOIN LATERAL ({_LATEST_VERSION}) v WHERE c.renewal_policy_id = $1"
)
LATEST_VALIDITY: Final = (
    "SELECT lv.not_before, lv.not_after FROM certificate_versions lv "
    "WHERE lv.certificate_id = $1 ORDER BY lv.created_at DESC, lv.id DESC LIMIT 1"
)
_ACTIVE_LIST: Final = _literal_list(ACTIVE_JOB_STATUSES)
DEPENDENCIES: Final = (
    "SELECT "
    "(SELECT count(*) FROM deployment_targets WHERE agent_id = a.id AND retired_at IS NULL) "
    "AS targets, "
    "(SELECT count(DISTINCT c.id) FROM managed_certificates c "
    "JOIN certificate_target_mappings m ON m.certificate_id = c.id "
    "JOIN deployment_targets t ON t.id = m.target_id "
    "WHERE t.agent_id = a.id AND t.retired_at IS NULL "
    f"AND c.status NOT IN ({_literal_list(CLOSED_CERTIFICATE_STATUSES)})) AS certificates, "
    f"(SELECT count(*) FROM jobs j WHERE j.status IN ({_ACTIVE_LIST}) AND (j.agent_id = a.id "
    "OR (j.agent_id IS NULL AND j.target_id IN "
    "(SELECT id FROM deployment_targets WHERE agent_id = a.id)))) AS jobs "
    "FROM agents a WHERE a.id = $1"
)
LIST_TARGETS: Final = (
    f"{select_from(TARGETS)} WHERE ($1::text IS NULL OR t.agent_id = $1) AND ($2::text IS NULL "
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
AGENT_BY_KEY_HASH: Final = f"{select_from(AGENTS)} WHERE t.key_hash = $1"
SET_DUE: Final = "UPDATE managed_certificates SET renewal_due_at = $2 WHERE id = $1"
RECORD_DEPLOYMENT: Final = (
    "UPDATE managed_certificates SET last_deployment_at = "
    "GREATEST(last_deployment_at, $2) WHERE id = $1"
)
RETIRE_TARGETS: Final = (
    "UPDATE deployment_targets SET retired_at = $2, retired_reason = $3 "
    "WHERE agent_id = $1 AND retired_at IS NULL"
)
COUNT_CERTIFICATES: Final = (
    "SELECT status, count(*) AS n, count(*) FILTER (WHERE expires_at < $1) AS soon "
    "FROM managed_certificates GROUP BY status"
)
COUNT_AGENTS: Final = (
    "SELECT status, retired_at IS NOT NULL AS retired, count(*) AS n FROM agents GROUP BY 1, 2"
)
COUNT_JOBS: Final = "SELECT type, status, count(*) AS n FROM jobs GROUP BY 1, 2"
HEARTBEAT: Final = (
    "UPDATE agents t SET last_heartbeat_at = $2, status = 'Online', "
    "hostname = COALESCE(NULLIF($3::text, ''), hostname), os = COALESCE(NULLIF($4::text, ''), os), "
    "architecture = COALESCE(NULLIF($5::text, ''), architecture), "
    "ip_address = COALESCE(NULLIF($6::text, ''), ip_address), "
    "version = COALESCE(NULLIF($7::text, ''), version) "
    f"WHERE t.id = $1 AND t.retired_at IS NULL RETURNING {columns(AGENTS, 't')}"
)

SEEN: Final = (
    "UPDATE agents t SET last_heartbeat_at = GREATEST(t.last_heartbeat_at, u.at), "
    "status = 'Online', hostname = COALESCE(NULLIF(u.hostname, ''), t.hostname), "
    "os = COALESCE(NULLIF(u.os, ''), t.os), "
    "architecture = COALESCE(NULLIF(u.architecture, ''), t.architecture), "
    "ip_address = COALESCE(NULLIF(u.ip_address, ''), t.ip_address), "
    "version = COALESCE(NULLIF(u.version, ''), t.version) "
    "FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::text[]) AS u(id, at, hostname, os, architecture, ip_address, version) "
    "WHERE t.id = u.id AND t.retired_at IS NULL"
)
PUBLISH: Final = "SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m"


BEFORE_ALL: Final = datetime.min.replace(tzinfo=UTC)


async def map_targets(conn: Conn, cert_id: str, targets: list[str]) -> None:
    """Make the certificate's mapping exactly ``targets``."""
    await conn.execute(_MAP_REMOVE, cert_id, targets)
    await execute(conn, {"certificate_id": cert_id}, _MAP_ADD, cert_id, targets)


def job_args(job: Job) -> list[Any]:
    row = JOBS.encode(job)
    return [row["id"], *(row[c] for c in _JOB_COLUMNS)]


async def dependencies(conn: Conn, agent_id: str) -> AgentDependencies:
    row = await conn.fetchrow(DEPENDENCIES, agent_id)
    if row is None:
        raise NotFound(not_found(AGENTS, agent_id))
    return AgentDependencies(row["targets"], row["certificates"], row["jobs"])


async def fetch_versions(
    conn: Conn, cert_id: str, *, limit: int | None = None
) -> tuple[CertificateVersion, ...]:
    sql = _VERSION_LIST if limit is None else f"{_VERSION_LIST} LIMIT {int(limit)}"
    rows = await conn.fetch(sql, cert_id)
    if not rows:
        raise NotFound(not_found(CERTIFICATES, cert_id))
    return tuple(VERSIONS.decode(r) for r in rows if r["id"] is not None)


def list_query(
    table: Table[Any], conditions: Sequence[Condition], order: Sequence[str]
) -> tuple[str, list[Any]]:
    """The statement and arguments selecting every row that matches ``conditions``."""
    args: list[Any] = []
    alias = alias_of(table)
    sorting = ", ".join(f"{alias}.{quote(c)}" for c in order)
    sql = f"{select_from(table)} WHERE {where_clause(conditions, alias, args)} ORDER BY {sorting}"
    return sql, args


def page_query(
    table: Table[Any],
    conditions: Sequence[Condition],
    position: str,
    limit: int,
    cursor: str | None,
) -> tuple[str, list[Any]]:
    """The statement and arguments of one keyset page in ``(position, id)`` order; it asks
    for one row more than ``limit`` so that ``paged`` knows whether another page follows."""
    args: list[Any] = []
    alias = alias_of(table)
    where = where_clause(conditions, alias, args)
    if cursor is not None:
        after_position, after_id = decode_cursor(cursor)
        args += [after_position, after_id]
        where += (
            f" AND ({alias}.{quote(position)}, {alias}.id)"
            f" > (${len(args) - 1}::timestamptz, ${len(args)}::text)"
        )
    args.append(limit + 1)
    sql = (
        f"{select_from(table)} WHERE {where} "
        f"ORDER BY {alias}.{quote(position)}, {alias}.id LIMIT ${len(args)}"
    )
    return sql, args


async def delete_row(conn: Conn, table: Table[Any], row_id: str) -> None:
    """DELETE one row by id: ``NotFound`` if absent, ``Conflict`` while referenced."""
    try:
        deleted = await conn.fetch(f"DELETE FROM {table.name} WHERE id = $1 RETURNING id", row_id)
    except asyncpg.ForeignKeyViolationError as exc:
        other, ref = FOREIGN_KEYS[exc.constraint_name]
        raise Conflict(still_referenced(table, row_id, other, ref)) from None
    if not deleted:
        raise NotFound(not_found(table, row_id))


async def sealed_blob(conn: Conn, table: Table[Any], row_id: str) -> bytes | None:
    """The ``encrypted_secret`` column of one row, still sealed."""
    row = await conn.fetchrow(f"SELECT encrypted_secret FROM {table.name} WHERE id = $1", row_id)
    if row is None:
        raise NotFound(not_found(table, row_id))
    return row["encrypted_secret"]  # type: ignore[no-any-return]


async def count_inventory(conn: Conn, expiring_before: datetime) -> InventoryCounts:
    """``Store.inventory_counts``; run in one transaction for a consistent snapshot."""
    certs = await conn.fetch(COUNT_CERTIFICATES, expiring_before)
    agents = await conn.fetch(COUNT_AGENTS)
    jobs = await conn.fetch(COUNT_JOBS)
    return InventoryCounts(
        certificates={CertificateStatus(r["status"]): r["n"] for r in certs},
        agents=Counter({AgentStatus(r["status"]): r["n"] for r in agents if not r["retired"]}),
        retired_agents=sum(r["n"] for r in agents if r["retired"]),
        jobs={(JobType(r["type"]), JobStatus(r["status"])): r["n"] for r in jobs},
        expiring=sum(r["soon"] for r in certs),
    )


async def live_agent_error(conn: Conn, agent_id: str) -> StoreError:
    """Why a write guarded by "not retired" matched no row."""
    row = await require_row(conn, AGENTS, agent_id)
    if row["retired_at"] is not None:
        return Conflict(agent_retired(agent_id))
    return Conflict(heartbeat_moved(agent_id))
