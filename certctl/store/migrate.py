"""Schema migrations: numbered SQL files applied in order, once, under an advisory lock.

Files are ``migrations/NNNN_name.sql`` shipped inside the package. Each runs in its own
transaction together with its ``schema_migrations`` row, so a failed migration leaves no
trace and the next run retries it (a migration therefore cannot use statements that refuse
to run in a transaction, such as CREATE INDEX CONCURRENTLY). Each transaction holds an
advisory lock: replicas starting together queue on it, and the ones that get it second
find nothing left to do. A checksum of each applied file is kept, so an edited migration
(which would leave old and new databases with different schemas under one version number)
is refused.

The functions here take an asyncpg connection and run on asyncio; PostgresStore calls
them across its trio bridge, and the test fixtures call them with ``asyncio.run``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Final

from certctl.store.errors import SchemaMismatch

LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"certctl schema migrations").digest()[:8], "big", signed=True
)
"""The advisory lock id; derived from a name so it cannot collide with another tool's by
accident."""

_FILE: Final = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One known migration and when it was applied (``None``: pending)."""

    version: int
    name: str
    applied_at: datetime | None


def available() -> tuple[Migration, ...]:
    """The migrations shipped with this build, in order; numbering must have no gaps."""
    folder = resources.files("certctl.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise SchemaMismatch(
            f"migration files {[m.version for m in found]} are not numbered 1..{len(found)} "
            "without gaps; reinstall certctl."
        )
    return tuple(found)


async def _applied(conn: Any) -> dict[int, Any]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {row["version"]: row for row in rows}


def _verify(applied: dict[int, Any], shipped: tuple[Migration, ...]) -> None:
    known = {m.version: m for m in shipped}
    for version in sorted(applied):
        migration = known.get(version)
        if migration is None:
            raise SchemaMismatch(
                f"the database has migration {version}, newer than this build knows "
                f"(up to {len(shipped)}); upgrade certctl to the version that migrated it."
            )
        if applied[version]["checksum"] != migration.checksum:
            raise SchemaMismatch(
                f"migration {version:04d}_{migration.name}.sql differs from the one applied "
                "to this database; restore the shipped file instead of editing an applied "
                "migration."
            )


async def apply_migrations(conn: Any) -> tuple[Migration, ...]:
    """Apply every pending migration; returns those applied by this call.

    Each migration commits on its own, under a transaction-scoped advisory lock taken
    before reading what is applied: a lock that ends with its transaction cannot outlive
    a cancelled call on a pooled connection.
    """
    shipped = available()
    done = []
    for migration in shipped:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await conn.execute(_CREATE_TABLE)
            applied = await _applied(conn)
            _verify(applied, shipped)
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        done.append(migration)
    return tuple(done)


async def migration_states(conn: Any) -> tuple[MigrationState, ...]:
    """Every shipped migration with its applied time; raises ``SchemaMismatch`` as
    ``apply_migrations`` would."""
    shipped = available()
    applied = await _applied(conn)
    _verify(applied, shipped)
    return tuple(
        MigrationState(
            m.version,
            m.name,
            applied[m.version]["applied_at"] if m.version in applied else None,
        )
        for m in shipped
    )
