"""``MemoryStore``: the ``Store`` protocol in memory, for the simulator and fast tests.

It is an exact model of PostgresStore, not a loose fake: it keeps the same encoded rows
(``certctl.store.rows``), enforces the same keys, uniques and references in the order
PostgreSQL checks them (value checks, then uniqueness, then references), seals secrets the
same way, and undoes a failed operation completely, as a rolled-back transaction would. A
hypothesis test runs the same operation sequences on both and compares every result and
error. Where PostgresStore answers with SQL, this store asks ``certctl.core`` directly
(``is_retry_due``, ``timeout_event``, ``reap_event``), so that test also checks the SQL
against the core rules.

Every operation runs without an ``await`` in its body, so under trio it is atomic with
respect to other tasks.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from certctl.core.agents import reap_event
from certctl.core.jobs import ACTIVE_STATES, Claimed, is_retry_due, timeout_event, transition
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
from certctl.store.errors import Conflict, NotFound
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
    MAPPINGS,
    OWNERS,
    POLICIES,
    PROFILES,
    REVOCATIONS,
    TABLES,
    TARGETS,
    TEAMS,
    UNKNOWN_AGENT_KEY,
    VERSIONS,
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
    referencing,
    retirement_blocked,
    scalar,
    status_changed,
    still_referenced,
)
from certctl.store.secrets import open_secret, sealed_row

E = TypeVar("E")
Row = dict[str, Any]
Key = tuple[Any, ...]


def _fresh(row: Row) -> Row:
    """A copy whose JSON values the caller cannot mutate back into the store."""
    return {k: copy.deepcopy(v) if isinstance(v, dict | list) else v for k, v in row.items()}


class _MemoryLeadership:
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


class MemoryStore:
    """See the module docstring. ``encryption_key`` seals secrets as PostgresStore does.

    One instance stands for one database: replicas simulated in one process share it, and
    its lock table is what ``leadership`` claims against.
    """

    def __init__(self, *, encryption_key: str = "") -> None:
        self._encryption_key = encryption_key
        self._rows: dict[str, dict[Key, Row]] = {name: {} for name in TABLES}
        self._unique: dict[str, dict[tuple[str, ...], dict[Key, Key]]] = {
            t.name: {cols: {} for cols in t.uniques} for t in TABLES.values()
        }
        self._undo: list[tuple[Table[Any], Key, Row | None]] | None = None
        self._locks: dict[str, object] = {}

    # -- row engine ---------------------------------------------------------------------

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

    def _get(self, table: Table[E], row_id: str) -> E:
        return self._decode(table, self._row(table, row_id))

    def _select(self, table: Table[Any], conditions: Sequence[Condition]) -> list[Row]:
        return [r for r in self._rows[table.name].values() if all(c.matches(r) for c in conditions)]

    def _all(self, table: Table[E], conditions: Sequence[Condition] = ()) -> tuple[E, ...]:
        rows = sorted(self._select(table, conditions), key=lambda r: r["id"])
        return tuple(self._decode(table, r) for r in rows)

    def _page(
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
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return Page(
            tuple(build(r) for r in rows),
            None if last is None else encode_cursor(last[position], last["id"]),
        )

    def _audit(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self._insert(AUDIT, AUDIT.encode(event))

    def _create(self, table: Table[E], entity: E, audit: Sequence[AuditEvent]) -> E:
        row = table.encode(entity)
        with self._transaction():
            self._insert(table, row)
            self._audit(audit)
        return self._decode(table, row)

    def _replace(self, table: Table[E], entity: E, audit: Sequence[AuditEvent]) -> E:
        row = table.encode(entity)
        with self._transaction():
            stored = self._update(table, row["id"], **row)
            self._audit(audit)
        return self._decode(table, stored)

    def _remove(self, table: Table[Any], row_id: str, audit: Sequence[AuditEvent]) -> None:
        with self._transaction():
            self._delete(table, row_id)
            self._audit(audit)

    # -- health -------------------------------------------------------------------------

    async def ready(self) -> None:
        return None

    # -- leadership ---------------------------------------------------------------------

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[Leadership]:
        claim = _MemoryLeadership(self._locks, name)
        try:
            yield claim
        finally:
            claim.release()

    def break_leadership(self, name: str) -> None:
        """Fault injection: what PostgreSQL ending the holder's session does to its lock.
        The holder finds out on its next ``check``; another claim may take the lock now."""
        self._locks.pop(name, None)

    # -- teams, owners, policies, profiles ----------------------------------------------

    async def create_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team:
        return self._create(TEAMS, team, audit)

    async def get_team(self, team_id: str) -> Team:
        return self._get(TEAMS, team_id)

    async def list_teams(self) -> tuple[Team, ...]:
        return self._all(TEAMS)

    async def update_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team:
        return self._replace(TEAMS, team, audit)

    async def delete_team(self, team_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        self._remove(TEAMS, team_id, audit)

    async def create_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner:
        return self._create(OWNERS, owner, audit)

    async def get_owner(self, owner_id: str) -> Owner:
        return self._get(OWNERS, owner_id)

    async def list_owners(self, *, team_id: str | None = None) -> tuple[Owner, ...]:
        where = [] if team_id is None else [Condition("team_id", "=", team_id)]
        return self._all(OWNERS, where)

    async def update_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner:
        return self._replace(OWNERS, owner, audit)

    async def delete_owner(self, owner_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        self._remove(OWNERS, owner_id, audit)

    async def create_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        return self._create(POLICIES, policy, audit)

    async def get_policy(self, policy_id: str) -> RenewalPolicy:
        return self._get(POLICIES, policy_id)

    async def list_policies(self) -> tuple[RenewalPolicy, ...]:
        return self._all(POLICIES)

    async def update_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        row = POLICIES.encode(policy)
        with self._transaction():
            stored = self._update(POLICIES, policy.id, **row)
            stored_policy = POLICIES.decode(stored)
            governed = self._select(CERTIFICATES, [Condition("renewal_policy_id", "=", policy.id)])
            for cert in governed:
                latest = self._latest(cert["id"])
                if latest is not None:
                    due = renewal_due_at(latest.not_before, latest.not_after, stored_policy)
                    self._update(CERTIFICATES, cert["id"], renewal_due_at=due)
            self._audit(audit)
        return stored_policy

    async def delete_policy(self, policy_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        self._remove(POLICIES, policy_id, audit)

    async def create_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile:
        return self._create(PROFILES, profile, audit)

    async def get_profile(self, profile_id: str) -> CertificateProfile:
        return self._get(PROFILES, profile_id)

    async def list_profiles(self) -> tuple[CertificateProfile, ...]:
        return self._all(PROFILES)

    async def update_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile:
        return self._replace(PROFILES, profile, audit)

    async def delete_profile(self, profile_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        self._remove(PROFILES, profile_id, audit)

    # -- issuers and targets ------------------------------------------------------------

    async def create_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        row = sealed_row(ISSUERS, issuer, self._encryption_key, keep=False)
        with self._transaction():
            self._insert(ISSUERS, row)
            self._audit(audit)
        return self._decode(ISSUERS, row)

    async def get_issuer(self, issuer_id: str) -> Issuer:
        return self._get(ISSUERS, issuer_id)

    async def list_issuers(self) -> tuple[Issuer, ...]:
        return self._all(ISSUERS)

    async def update_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        row = sealed_row(ISSUERS, issuer, self._encryption_key, keep=True)
        with self._transaction():
            stored = self._update(ISSUERS, issuer.id, **row)
            self._audit(audit)
        return self._decode(ISSUERS, stored)

    async def delete_issuer(self, issuer_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        self._remove(ISSUERS, issuer_id, audit)

    async def issuer_secret(self, issuer_id: str) -> Mapping[str, JSONValue]:
        blob = self._row(ISSUERS, issuer_id)["encrypted_secret"]
        return open_secret(ISSUERS.name, issuer_id, blob, self._encryption_key)

    async def create_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        row = sealed_row(TARGETS, target, self._encryption_key, keep=False)
        with self._transaction():
            self._insert(TARGETS, row)
            self._audit(audit)
        return self._decode(TARGETS, row)

    async def get_target(self, target_id: str) -> Target:
        return self._get(TARGETS, target_id)

    async def list_targets(
        self, *, agent_id: str | None = None, certificate_id: str | None = None
    ) -> tuple[Target, ...]:
        where = [] if agent_id is None else [Condition("agent_id", "=", agent_id)]
        if certificate_id is not None:
            mapped = [m["target_id"] for m in self._mappings(certificate_id)]
            where.append(Condition("id", "in", mapped))
        return self._all(TARGETS, where)

    async def update_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        row = sealed_row(TARGETS, target, self._encryption_key, keep=True)
        with self._transaction():
            stored = self._update(TARGETS, target.id, **row)
            self._audit(audit)
        return self._decode(TARGETS, stored)

    async def target_secret(self, target_id: str) -> Mapping[str, JSONValue]:
        blob = self._row(TARGETS, target_id)["encrypted_secret"]
        return open_secret(TARGETS.name, target_id, blob, self._encryption_key)

    # -- agents -------------------------------------------------------------------------

    async def create_agent(
        self, agent: Agent, key_hash: str, *, audit: Sequence[AuditEvent] = ()
    ) -> Agent:
        row = {**AGENTS.encode(agent), "key_hash": checks.key_hash(key_hash)}
        with self._transaction():
            self._insert(AGENTS, row)
            self._audit(audit)
        return self._decode(AGENTS, row)

    async def get_agent(self, agent_id: str) -> Agent:
        return self._get(AGENTS, agent_id)

    async def agent_by_key_hash(self, key_hash: str) -> Agent:
        found = self._unique[AGENTS.name][("key_hash",)].get((checks.key_hash(key_hash),))
        if found is None:
            raise NotFound(UNKNOWN_AGENT_KEY)
        return self._decode(AGENTS, self._rows[AGENTS.name][found])

    async def list_agents(self) -> tuple[Agent, ...]:
        return self._all(AGENTS)

    async def inventory_counts(self, *, expiring_before: datetime) -> InventoryCounts:
        certs = self._rows[CERTIFICATES.name].values()
        agents = list(self._rows[AGENTS.name].values())
        return InventoryCounts(
            certificates=Counter(CertificateStatus(r["status"]) for r in certs),
            agents=Counter(AgentStatus(r["status"]) for r in agents if r["retired_at"] is None),
            retired_agents=sum(1 for r in agents if r["retired_at"] is not None),
            jobs=Counter(
                (JobType(r["type"]), JobStatus(r["status"])) for r in self._rows[JOBS.name].values()
            ),
            expiring=sum(
                1
                for r in certs
                if r["expires_at"] is not None and r["expires_at"] < expiring_before
            ),
        )

    def _live_agent(self, agent_id: str) -> Row:
        row = self._row(AGENTS, agent_id)
        if row["retired_at"] is not None:
            raise Conflict(agent_retired(agent_id))
        return row

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
        changes = {k: scalar(f"heartbeat {k}", v) for k, v in metadata.items() if v}
        changes["last_heartbeat_at"] = scalar("heartbeat at", at)
        changes["status"] = AgentStatus.ONLINE.value
        with self._transaction():
            self._live_agent(agent_id)
            row = self._update(AGENTS, agent_id, **changes)
        return self._decode(AGENTS, row)

    async def set_agent_status(
        self, agent_id: str, status: AgentStatus, *, seen_heartbeat_at: datetime | None
    ) -> Agent:
        seen = scalar("seen_heartbeat_at", seen_heartbeat_at)
        with self._transaction():
            if self._live_agent(agent_id)["last_heartbeat_at"] != seen:
                raise Conflict(heartbeat_moved(agent_id))
            row = self._update(AGENTS, agent_id, status=AgentStatus(status).value)
        return self._decode(AGENTS, row)

    def _agent_targets(self, agent_id: str, *, active: bool) -> list[Row]:
        return [
            t
            for t in self._rows[TARGETS.name].values()
            if t["agent_id"] == agent_id and not (active and t["retired_at"] is not None)
        ]

    def _dependencies(self, agent_id: str) -> AgentDependencies:
        self._row(AGENTS, agent_id)
        targets = self._agent_targets(agent_id, active=True)
        target_ids = {t["id"] for t in targets}
        cert_ids = {
            m["certificate_id"]
            for m in self._rows[MAPPINGS.name].values()
            if m["target_id"] in target_ids
        }
        inactive = {CertificateStatus.ARCHIVED.value, CertificateStatus.REVOKED.value}
        certificates = [
            c
            for c in self._rows[CERTIFICATES.name].values()
            if c["id"] in cert_ids and c["status"] not in inactive
        ]
        all_targets = {t["id"] for t in self._agent_targets(agent_id, active=False)}
        active = {s.value for s in ACTIVE_STATES}
        jobs = [
            j
            for j in self._rows[JOBS.name].values()
            if j["status"] in active
            and (
                j["agent_id"] == agent_id
                or (j["agent_id"] is None and j["target_id"] in all_targets)
            )
        ]
        return AgentDependencies(len(targets), len(certificates), len(jobs))

    async def agent_dependencies(self, agent_id: str) -> AgentDependencies:
        return self._dependencies(agent_id)

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
        with self._transaction():
            row = self._row(AGENTS, agent_id)
            if row["retired_at"] is None:
                deps = self._dependencies(agent_id)
                if deps.total and not cascade:
                    raise Conflict(retirement_blocked(agent_id, deps))
                for target in self._agent_targets(agent_id, active=True):
                    self._update(TARGETS, target["id"], retired_at=when, retired_reason=why)
                row = self._update(AGENTS, agent_id, retired_at=when, retired_reason=why)
            self._audit(audit)
        return self._decode(AGENTS, row)

    # -- certificates -------------------------------------------------------------------

    def _mappings(self, cert_id: str) -> list[Row]:
        return [m for m in self._rows[MAPPINGS.name].values() if m["certificate_id"] == cert_id]

    def _target_ids(self, cert_id: str) -> list[str]:
        return sorted(m["target_id"] for m in self._mappings(cert_id))

    def _map(self, cert_id: str, target_ids: Sequence[str]) -> None:
        current = set(self._target_ids(cert_id))
        wanted = list(dict.fromkeys(target_ids))
        for target_id in current - set(wanted):
            key = (cert_id, target_id)
            assert self._undo is not None, "writes happen inside _transaction"
            self._undo.append((MAPPINGS, key, self._rows[MAPPINGS.name][key]))
            self._set(MAPPINGS, key, None)
        for target_id in wanted:
            if target_id not in current:
                row = {
                    "certificate_id": cert_id,
                    "target_id": scalar("ManagedCertificate.target_ids[]", target_id),
                }
                self._insert(MAPPINGS, row)

    async def create_certificate(
        self,
        cert: ManagedCertificate,
        *,
        jobs: Sequence[Job] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        row = {**CERTIFICATES.encode(checks.new_certificate(cert)), "renewal_due_at": None}
        job_rows = [JOBS.encode(job) for job in jobs]
        with self._transaction():
            self._insert(CERTIFICATES, row)
            self._map(cert.id, cert.target_ids)
            for job_row in job_rows:
                self._insert(JOBS, job_row)
            self._audit(audit)
        return self._get(CERTIFICATES, cert.id)

    async def get_certificate(self, cert_id: str) -> ManagedCertificate:
        return self._get(CERTIFICATES, cert_id)

    async def list_certificates(
        self,
        query: CertificateQuery = ANY_CERTIFICATE,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[ManagedCertificate]:
        return self._page(
            CERTIFICATES,
            certificate_conditions(query),
            "created_at",
            limit=limit,
            cursor=cursor,
            build=lambda r: self._decode(CERTIFICATES, r),
        )

    async def update_certificate(
        self, cert: ManagedCertificate, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        encoded = CERTIFICATES.encode(cert)
        changes = {name: encoded[name] for name in EDITABLE_CERTIFICATE_FIELDS}
        with self._transaction():
            old = self._row(CERTIFICATES, cert.id)
            row = self._update(CERTIFICATES, cert.id, **changes)
            latest = self._latest(cert.id)
            if latest is not None and row["renewal_policy_id"] != old["renewal_policy_id"]:
                policy = self._get(POLICIES, row["renewal_policy_id"])
                self._update(
                    CERTIFICATES,
                    cert.id,
                    renewal_due_at=renewal_due_at(latest.not_before, latest.not_after, policy),
                )
            self._map(cert.id, cert.target_ids)
            self._audit(audit)
        return self._get(CERTIFICATES, cert.id)

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
        new, when = CertificateStatus(status).value, scalar("status changed at", at)
        rows = [JOBS.encode(job) for job in jobs]
        with self._transaction():
            current = self._row(CERTIFICATES, cert_id)["status"]
            if current != CertificateStatus(expected).value:
                raise Conflict(status_changed(cert_id, current, expected))
            self._update(CERTIFICATES, cert_id, status=new, updated_at=when)
            for row in rows:
                self._insert(JOBS, row)
            self._audit(audit)
        return self._get(CERTIFICATES, cert_id)

    async def archive_certificate(
        self, cert_id: str, at: datetime, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        archived, when = CertificateStatus.ARCHIVED.value, scalar("archived at", at)
        with self._transaction():
            if self._row(CERTIFICATES, cert_id)["status"] == archived:
                raise Conflict(already_archived(cert_id))
            self._update(CERTIFICATES, cert_id, status=archived, updated_at=when)
            self._audit(audit)
        return self._get(CERTIFICATES, cert_id)

    def _versions(self, cert_id: str) -> list[Row]:
        self._row(CERTIFICATES, cert_id)
        rows = [v for v in self._rows[VERSIONS.name].values() if v["certificate_id"] == cert_id]
        rows.sort(key=lambda v: (v["created_at"], v["id"]), reverse=True)
        return rows

    def _latest(self, cert_id: str) -> CertificateVersion | None:
        rows = self._versions(cert_id)
        return self._decode(VERSIONS, rows[0]) if rows else None

    async def add_version(
        self,
        version: CertificateVersion,
        *,
        status: CertificateStatus = CertificateStatus.ACTIVE,
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        row = VERSIONS.encode(checks.version(version))
        new_status = CertificateStatus(status).value
        with self._transaction():
            self._insert(VERSIONS, row)
            cert = self._row(CERTIFICATES, version.certificate_id)
            if cert["status"] in CLOSED_STATUSES:
                raise Conflict(certificate_closed(version.certificate_id, cert["status"]))
            latest = self._latest(version.certificate_id)
            assert latest is not None, "the version was just inserted"
            policy = self._get(POLICIES, cert["renewal_policy_id"])
            self._update(
                CERTIFICATES,
                version.certificate_id,
                expires_at=scalar("expires_at", latest.not_after),
                renewal_due_at=renewal_due_at(latest.not_before, latest.not_after, policy),
                status=new_status,
                last_renewal_at=row["created_at"],
                updated_at=row["created_at"],
            )
            self._audit(audit)
        return self._get(CERTIFICATES, version.certificate_id)

    async def list_versions(self, cert_id: str) -> tuple[CertificateVersion, ...]:
        return tuple(self._decode(VERSIONS, v) for v in self._versions(cert_id))

    async def latest_version(self, cert_id: str) -> CertificateVersion | None:
        return self._latest(cert_id)

    async def due_renewals(
        self, now: datetime, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[DueRenewal]:
        where = [
            Condition("renewal_due_at", "<=", scalar("now", now)),
            Condition("status", "in", sorted(s.value for s in DUE_STATUSES)),
        ]

        def build(row: Row) -> DueRenewal:
            latest = self._latest(row["id"])
            assert latest is not None, "a certificate with a due date has a version"
            return DueRenewal(self._decode(CERTIFICATES, row), latest, row["renewal_due_at"])

        return self._page(
            CERTIFICATES, where, "renewal_due_at", limit=limit, cursor=cursor, build=build
        )

    # -- jobs ---------------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[Job], *, audit: Sequence[AuditEvent] = ()
    ) -> tuple[Job, ...]:
        rows = [JOBS.encode(job) for job in jobs]
        with self._transaction():
            for row in rows:
                self._insert(JOBS, row)
            self._audit(audit)
        return tuple(self._decode(JOBS, row) for row in rows)

    async def get_job(self, job_id: str) -> Job:
        return self._get(JOBS, job_id)

    async def list_jobs(
        self,
        query: JobQuery = ANY_JOB,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Job]:
        return self._page(
            JOBS,
            job_conditions(query),
            "created_at",
            limit=limit,
            cursor=cursor,
            build=lambda r: self._decode(JOBS, r),
        )

    def _jobs(self, keep: Callable[[Job], bool], order: str, limit: int) -> list[Job]:
        check_limit(limit)
        rows = [r for r in self._rows[JOBS.name].values() if r[order] is not None]
        rows.sort(key=lambda r: (r[order], r["id"]))
        jobs = (self._decode(JOBS, r) for r in rows)
        return [job for job in jobs if keep(job)][:limit]

    async def claim_jobs(
        self, *, agent_id: str | None, now: datetime, limit: int
    ) -> tuple[Job, ...]:
        moment = scalar("now", now)
        routed = (
            set()
            if agent_id is None
            else {t["id"] for t in self._agent_targets(agent_id, active=False)}
        )

        def claimable(job: Job) -> bool:
            if job.status is not JobStatus.PENDING or job.scheduled_at > moment:
                return False
            if agent_id is None:
                return job.type is not JobType.DEPLOYMENT
            return job.type is JobType.DEPLOYMENT and (
                job.agent_id == agent_id or (job.agent_id is None and job.target_id in routed)
            )

        with self._transaction():
            claimed = [
                transition(job, Claimed(agent_id), moment)[0]
                for job in self._jobs(claimable, "scheduled_at", limit)
            ]
            for job in claimed:
                self._update(JOBS, job.id, **JOBS.encode(job))
        return tuple(claimed)

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
        with self._transaction():
            current = self._row(JOBS, new.id)
            if (current["status"], current["status_changed_at"]) != (
                seen["status"],
                seen["status_changed_at"],
            ):
                raise Conflict(job_moved(new.id, current["status"]))
            stored = self._update(JOBS, new.id, **row)
            for job_row in created:
                self._insert(JOBS, job_row)
            if deployed is not None:
                cert = self._row(CERTIFICATES, new.certificate_id)
                last = cert["last_deployment_at"]
                self._update(
                    CERTIFICATES,
                    new.certificate_id,
                    last_deployment_at=deployed if last is None else max(last, deployed),
                )
            self._audit(audit)
        return self._decode(JOBS, stored)

    async def awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
        targets = {t["id"] for t in self._agent_targets(agent_id, active=True)}
        certs = {
            m["certificate_id"]
            for m in self._rows[MAPPINGS.name].values()
            if m["target_id"] in targets
        }
        rows = sorted(self._rows[JOBS.name].values(), key=lambda r: (r["created_at"], r["id"]))
        return tuple(
            self._decode(JOBS, r)
            for r in rows
            if r["status"] == JobStatus.AWAITING_CSR.value and r["certificate_id"] in certs
        )

    async def jobs_due_for_retry(self, now: datetime, *, limit: int) -> tuple[Job, ...]:
        moment = scalar("now", now)
        return tuple(self._jobs(lambda j: is_retry_due(j, moment), "next_retry_at", limit))

    async def timed_out_jobs(
        self,
        now: datetime,
        *,
        awaiting_csr: timedelta,
        awaiting_approval: timedelta,
        limit: int,
    ) -> tuple[Job, ...]:
        moment = scalar("now", now)

        def expired(job: Job) -> bool:
            event = timeout_event(
                job, moment, awaiting_csr=awaiting_csr, awaiting_approval=awaiting_approval
            )
            return event is not None

        return tuple(self._jobs(expired, "status_changed_at", limit))

    async def jobs_on_lost_agents(
        self, now: datetime, *, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        moment = scalar("now", now)
        found: dict[str, Agent] = {}

        def lost(job: Job) -> bool:
            if job.agent_id is None:
                return False
            agent = found[job.id] = self._get(AGENTS, job.agent_id)
            return reap_event(job, agent, moment, offline_after) is not None

        return tuple(
            LostAgentJob(job, found[job.id]) for job in self._jobs(lost, "status_changed_at", limit)
        )

    # -- revocations and audit ----------------------------------------------------------

    async def revoke_certificate(
        self, revocation: Revocation, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        row = REVOCATIONS.encode(revocation)
        with self._transaction():
            if self._row(CERTIFICATES, revocation.certificate_id)["status"] == (
                CertificateStatus.REVOKED.value
            ):
                raise Conflict(already_revoked(revocation.certificate_id))
            self._insert(REVOCATIONS, row)
            self._update(
                CERTIFICATES,
                revocation.certificate_id,
                status=CertificateStatus.REVOKED.value,
                revoked_at=row["revoked_at"],
                revocation_reason=row["reason"],
                updated_at=row["revoked_at"],
            )
            self._audit(audit)
        return self._get(CERTIFICATES, revocation.certificate_id)

    async def list_revocations(self, *, issuer_id: str | None = None) -> tuple[Revocation, ...]:
        where = [] if issuer_id is None else [Condition("issuer_id", "=", issuer_id)]
        rows = sorted(self._select(REVOCATIONS, where), key=lambda r: (r["revoked_at"], r["id"]))
        return tuple(self._decode(REVOCATIONS, r) for r in rows)

    async def mark_issuer_notified(self, revocation_id: str) -> Revocation:
        with self._transaction():
            row = self._update(REVOCATIONS, revocation_id, issuer_notified=True)
        return self._decode(REVOCATIONS, row)

    async def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._transaction():
            self._audit(events)

    async def list_audit(
        self,
        query: AuditQuery = ANY_AUDIT,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        return self._page(
            AUDIT,
            audit_conditions(query),
            "timestamp",
            limit=limit,
            cursor=cursor,
            build=lambda r: self._decode(AUDIT, r),
        )
