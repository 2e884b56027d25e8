"""The row engine under ``MemoryStore``: encoded rows, unique indexes and an undo log.

It plays the part PostgreSQL plays for PostgresStore: it holds the rows that
``certctl.store.rows`` encodes, enforces keys, uniques and references in the order
PostgreSQL checks them (value checks, then uniqueness, then references), and undoes a
failed operation completely, as a rolled-back transaction would. Kept apart from the
store's operations so that each file reads as one thing: the storage here, what the
protocol does with it in ``certctl.store.memory``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from certctl.core.model import AuditEvent, CertificateVersion
from certctl.store.base import Page
from certctl.store.errors import Conflict, NotFound, StoreUnavailable
from certctl.store.query import Condition, check_limit, decode_cursor, paged
from certctl.store.rows import (
    AUDIT,
    CERTIFICATES,
    MAPPINGS,
    TABLES,
    VERSIONS,
    Table,
    duplicate,
    missing_reference,
    not_found,
    referencing,
    still_referenced,
)

E = TypeVar("E")
Row = dict[str, Any]
Key = tuple[Any, ...]


def _fresh(row: Row) -> Row:
    """A copy whose JSON values the caller cannot mutate back into the store."""
    return {k: copy.deepcopy(v) if isinstance(v, dict | list) else v for k, v in row.items()}


class MemoryLeadership:
    """A claim on ``MemoryStore``'s lock table (see ``Leadership``); the table maps a lock
    name to the claim holding it, as PostgreSQL maps an advisory lock to a session."""

    def __init__(self, locks: dict[str, object], name: str) -> None:
        self._locks = locks
        self._name = name
        self._held = locks.setdefault(name, self) is self

    @property
    def held(self) -> bool:
        return self._held

    async def check(self) -> bool:
        self._held = self._held and self._locks.get(self._name) is self
        return self._held

    def release(self) -> None:
        if self._locks.get(self._name) is self:
            del self._locks[self._name]
        self._held = False


class MemorySubscription:
    """A subscriber on ``MemoryStore``'s channel table (see ``Subscription``): what
    PostgreSQL's ``LISTEN`` does for a session, including breaking when it falls behind."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[str](self.LIMIT)
        self.lost = ""

    def deliver(self, message: str) -> None:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.lost = f"more than {self.LIMIT} messages were waiting"

    def sever(self, why: str) -> None:
        """The subscription's session ends; a waiting ``receive`` raises at once."""
        self.lost = why
        self._send.close()

    async def receive(self) -> str:
        if not self.lost:
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                pass
        raise StoreUnavailable(f"{self.lost}; subscribe again.")


class MemoryRows:
    """One in-memory database. Every method is synchronous, so an operation built from
    them runs without an ``await`` and is atomic with respect to other trio tasks; writes
    happen inside ``_transaction``, which undoes them all if the operation raises.

    ``_locks`` is the database's advisory lock table (see ``MemoryLeadership``),
    ``_channels`` its ``LISTEN`` sessions by channel (see ``MemorySubscription``).
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[Key, Row]] = {name: {} for name in TABLES}
        self._unique: dict[str, dict[tuple[str, ...], dict[Key, Key]]] = {
            t.name: {cols: {} for cols in t.uniques} for t in TABLES.values()
        }
        self._undo: list[tuple[Table[Any], Key, Row | None]] | None = None
        self._locks: dict[str, object] = {}
        self._channels: dict[str, set[MemorySubscription]] = {}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._undo = []
        try:
            yield
        except BaseException:
            for table, key, old in reversed(self._undo):
                self._set(table, key, old)
            raise
        finally:
            self._undo = None

    def _set(self, table: Table[Any], key: Key, row: Row | None) -> None:
        rows = self._rows[table.name]
        old = rows.get(key)
        for cols, index in self._unique[table.name].items():
            if old is not None:
                index.pop(tuple(old[c] for c in cols), None)
            if row is not None:
                index[tuple(row[c] for c in cols)] = key
        if row is None:
            rows.pop(key, None)
        else:
            rows[key] = row

    def _write(self, table: Table[Any], key: Key, row: Row) -> None:
        old = self._rows[table.name].get(key)
        for cols, index in self._unique[table.name].items():
            holder = index.get(tuple(row[c] for c in cols))
            if holder is not None and holder != key:
                raise Conflict(duplicate(table, cols, row))
        for ref in table.references:
            value = row[ref.column]
            if value is not None and (value,) not in self._rows[ref.table]:
                raise NotFound(missing_reference(table, ref))
        assert self._undo is not None, "writes happen inside _transaction"
        self._undo.append((table, key, old))
        self._set(table, key, row)

    def _insert(self, table: Table[Any], row: Row) -> None:
        key = table.key_of(row)
        if key in self._rows[table.name]:
            raise Conflict(duplicate(table, table.key, row))
        self._write(table, key, row)

    def _row(self, table: Table[Any], row_id: str) -> Row:
        row = self._rows[table.name].get((row_id,))
        if row is None:
            raise NotFound(not_found(table, row_id))
        return row

    def _update(self, table: Table[Any], row_id: str, **changes: Any) -> Row:
        row = {**self._row(table, row_id), **changes}
        self._write(table, (row_id,), row)
        return row

    def _delete(self, table: Table[Any], row_id: str) -> None:
        self._row(table, row_id)
        for other, ref in referencing(table):
            if any(r[ref.column] == row_id for r in self._rows[other.name].values()):
                raise Conflict(still_referenced(table, row_id, other, ref))
        assert self._undo is not None, "writes happen inside _transaction"
        self._undo.append((table, (row_id,), self._rows[table.name][(row_id,)]))
        self._set(table, (row_id,), None)

    def _decode(self, table: Table[E], row: Row) -> E:
        if table is CERTIFICATES:
            row = {**row, "target_ids": self._target_ids(row["id"])}
        return table.decode(_fresh(row))

    def _entity(self, table: Table[E], row_id: str) -> E:
        return self._decode(table, self._row(table, row_id))

    def _select(self, table: Table[Any], conditions: Sequence[Condition]) -> list[Row]:
        return [r for r in self._rows[table.name].values() if all(c.matches(r) for c in conditions)]

    def _walk(
        self,
        table: Table[Any],
        conditions: Sequence[Condition],
        position: str,
        *,
        limit: int,
        cursor: str | None,
        build: Callable[[Row], E],
    ) -> Page[E]:
        check_limit(limit)
        rows = self._select(table, conditions)
        if cursor is not None:
            after = decode_cursor(cursor)
            rows = [r for r in rows if (r[position], r["id"]) > after]
        rows.sort(key=lambda r: (r[position], r["id"]))
        return paged(rows, limit, position, build)

    def _audit(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self._insert(AUDIT, AUDIT.encode(event))

    def _mappings(self, cert_id: str) -> list[Row]:
        return [m for m in self._rows[MAPPINGS.name].values() if m["certificate_id"] == cert_id]

    def _target_ids(self, cert_id: str) -> list[str]:
        return sorted(m["target_id"] for m in self._mappings(cert_id))

    def _map(self, cert_id: str, targets: Sequence[str]) -> None:
        """Make the certificate's mapping exactly ``targets`` (encoded, without repeats)."""
        current = set(self._target_ids(cert_id))
        for target_id in current - set(targets):
            key = (cert_id, target_id)
            assert self._undo is not None, "writes happen inside _transaction"
            self._undo.append((MAPPINGS, key, self._rows[MAPPINGS.name][key]))
            self._set(MAPPINGS, key, None)
        for target_id in targets:
            if target_id not in current:
                self._insert(MAPPINGS, {"certificate_id": cert_id, "target_id": target_id})

    def _version_rows(self, cert_id: str) -> list[Row]:
        self._row(CERTIFICATES, cert_id)
        rows = [v for v in self._rows[VERSIONS.name].values() if v["certificate_id"] == cert_id]
        rows.sort(key=lambda v: (v["created_at"], v["id"]), reverse=True)
        return rows

    def _latest(self, cert_id: str) -> CertificateVersion | None:
        rows = self._version_rows(cert_id)
        return self._decode(VERSIONS, rows[0]) if rows else None
