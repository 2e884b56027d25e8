"""``MemoryStore``: the ``Store`` protocol in memory, for the simulator and fast tests.

It is an exact model of PostgresStore, not a loose fake: it keeps the same encoded rows
(``certctl.store.rows``) in ``certctl.store._memory_rows``, which enforces the same keys,
uniques and references and undoes a failed operation completely, seals secrets the same
way, and shares the table operations of ``certctl.store._crud`` with PostgresStore. A
hypothesis test runs the same operation sequences on both and compares every result and
error. Where PostgresStore answers with SQL, this store asks ``certctl.core`` directly
(``is_retry_due``, ``timeout_event``, ``reap_event``), so that test also checks the SQL
against the core rules.

Every operation runs without an ``await`` in its body, so under trio it is atomic with
respect to other tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from certctl.core.agents import reap_event
from certctl.core.jobs import is_retry_due, timeout_event
from certctl.core.model import (
    ACTIVE_JOB_STATUSES,
    CLOSED_CERTIFICATE_STATUSES,
    Agent,
    AgentStatus,
    CertificateStatus,
    CertificateVersion,
    Issuer,
    Job,
    JobStatus,
    JobType,
    JSONValue,
    ManagedCertificate,
    RenewalPolicy,
    Target,
)
from certctl.store._crud import Audit, Cursor, Order, StoreOperations
from certctl.store._memory_rows import MemoryLeadership, MemoryRows, MemorySubscription, Row
from certctl.store.base import (
    DUE_STATUSES,
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
from certctl.store.errors import Conflict, NotFound
from certctl.store.query import Condition
from certctl.store.rows import (
    AGENTS,
    CERTIFICATES,
    JOBS,
    MAPPINGS,
    POLICIES,
    REVOCATIONS,
    TARGETS,
    UNKNOWN_AGENT_KEY,
    VERSIONS,
    Table,
    agent_retired,
    already_archived,
    already_revoked,
    certificate_closed,
    heartbeat_moved,
    job_moved,
    retirement_blocked,
    scalar,
    status_changed,
)
from certctl.store.secrets import open_secret, sealed_row

E = TypeVar("E")


class MemoryStore(MemoryRows, StoreOperations):
    """See the module docstring. ``encryption_key`` seals secrets as PostgresStore does.

    One instance stands for one database: replicas simulated in one process share it, and
    its lock table is what ``leadership`` claims against.
    """

    def __init__(self, rules: DomainRules, *, encryption_key: str = "") -> None:
        super().__init__()
        self._rules = rules
        self._encryption_key = encryption_key

    # -- generic primitives ------------------------------------------------------------

    async def _insert_row(self, table: Table[E], row: Row, audit: Audit) -> E:
        with self._transaction():
            self._insert(table, row)
            self._audit(audit)
        return self._decode(table, row)

    async def _insert_rows(self, table: Table[Any], rows: Sequence[Row], audit: Audit) -> None:
        with self._transaction():
            for row in rows:
                self._insert(table, row)
            self._audit(audit)

    async def _get(self, table: Table[E], row_id: str) -> E:
        return self._entity(table, row_id)

    async def _all(
        self, table: Table[E], conditions: Sequence[Condition] = (), *, order: Order = ("id",)
    ) -> tuple[E, ...]:
        rows = sorted(self._select(table, conditions), key=lambda r: [r[c] for c in order])
        return tuple(self._decode(table, r) for r in rows)

    async def _patch(self, table: Table[E], row_id: str, changes: Row, audit: Audit = ()) -> E:
        with self._transaction():
            stored = self._update(table, row_id, **changes)
            self._audit(audit)
        return self._decode(table, stored)

    async def _remove(self, table: Table[Any], row_id: str, audit: Audit) -> None:
        with self._transaction():
            self._delete(table, row_id)
            self._audit(audit)

    async def _page(
        self, table: Table[E], where: Sequence[Condition], position: str, limit: int, cursor: Cursor
    ) -> Page[E]:
        build = partial(self._decode, table)
        return self._walk(table, where, position, limit=limit, cursor=cursor, build=build)

    async def _seal(self, table: Table[Any], entity: Issuer | Target, *, keep: bool) -> Row:
        return sealed_row(table, entity, self._encryption_key, keep=keep)

    async def _secret(self, table: Table[Any], row_id: str) -> Mapping[str, JSONValue]:
        blob = self._row(table, row_id)["encrypted_secret"]
        return open_secret(table.name, row_id, blob, self._encryption_key)

    # -- health and leadership ---------------------------------------------------------

    async def ready(self) -> None:
        return None

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[Leadership]:
        claim = MemoryLeadership(self._locks, name)
        try:
            yield claim
        finally:
            claim.release()

    def break_leadership(self, name: str) -> None:
        """Fault injection: what PostgreSQL ending the holder's session does to its lock.
        The holder finds out on its next ``check``; another claim may take the lock now."""
        self._locks.pop(name, None)

    async def _publish(self, channel: str, messages: list[str]) -> None:
        for subscription in tuple(self._channels.get(channel, ())):
            for message in messages:
                subscription.deliver(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = MemorySubscription()
        subscribers = self._channels.setdefault(channel, set())
        subscribers.add(subscription)
        try:
            yield subscription
        finally:
            subscribers.discard(subscription)

    def break_subscriptions(self, channel: str) -> None:
        """Fault injection: what PostgreSQL ending the listening sessions does; each
        subscriber's next (or pending) ``receive`` raises ``StoreUnavailable``."""
        for subscription in self._channels.pop(channel, set()):
            subscription.sever("the listening session closed")

    # -- policies and targets ----------------------------------------------------------

    async def _update_policy(self, row: Row, audit: Audit) -> RenewalPolicy:
        with self._transaction():
            stored = POLICIES.decode(self._update(POLICIES, row["id"], **row))
            governed = self._select(CERTIFICATES, [Condition("renewal_policy_id", "=", row["id"])])
            for cert in governed:
                latest = self._latest(cert["id"])
                if latest is not None:
                    due = self._rules.renewal_due_at(latest.not_before, latest.not_after, stored)
                    self._update(CERTIFICATES, cert["id"], renewal_due_at=due)
            self._audit(audit)
        return stored

    async def _list_targets(self, agent_id: str | None, cert_id: str | None) -> tuple[Target, ...]:
        where = [] if agent_id is None else [Condition("agent_id", "=", agent_id)]
        if cert_id is not None:
            mapped = [m["target_id"] for m in self._mappings(cert_id)]
            where.append(Condition("id", "in", mapped))
        return await self._all(TARGETS, where)

    # -- agents ------------------------------------------------------------------------

    async def _agent_by_key_hash(self, digest: str) -> Agent:
        found = self._unique[AGENTS.name][("key_hash",)].get((digest,))
        if found is None:
            raise NotFound(UNKNOWN_AGENT_KEY)
        return self._decode(AGENTS, self._rows[AGENTS.name][found])

    async def _inventory_counts(self, expiring_before: datetime) -> InventoryCounts:
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

    async def _record_heartbeat(self, agent_id: str, at: datetime, metadata: Row) -> Agent:
        changes = {k: v for k, v in metadata.items() if v}
        changes.update(last_heartbeat_at=at, status=AgentStatus.ONLINE.value)
        with self._transaction():
            self._live_agent(agent_id)
            row = self._update(AGENTS, agent_id, **changes)
        return self._decode(AGENTS, row)

    async def _record_seen(self, rows: list[Row]) -> int:
        updated = 0
        with self._transaction():
            for row in rows:
                stored = self._rows[AGENTS.name].get((row["id"],))
                if stored is None or stored["retired_at"] is not None:
                    continue
                last = stored["last_heartbeat_at"]
                changes = {k: v for k, v in row.items() if k in SIGHTING_FACTS and v}
                at = row["at"] if last is None else max(last, row["at"])
                changes.update(last_heartbeat_at=at, status=AgentStatus.ONLINE.value)
                self._update(AGENTS, row["id"], **changes)
                updated += 1
        return updated

    async def _set_agent_status(self, agent_id: str, status: str, seen: datetime | None) -> Agent:
        with self._transaction():
            if self._live_agent(agent_id)["last_heartbeat_at"] != seen:
                raise Conflict(heartbeat_moved(agent_id))
            row = self._update(AGENTS, agent_id, status=status)
        return self._decode(AGENTS, row)

    def _agent_targets(self, agent_id: str, *, active: bool) -> list[Row]:
        return [
            t
            for t in self._rows[TARGETS.name].values()
            if t["agent_id"] == agent_id and not (active and t["retired_at"] is not None)
        ]

    async def _agent_dependencies(self, agent_id: str) -> AgentDependencies:
        return self._dependencies(agent_id)

    def _dependencies(self, agent_id: str) -> AgentDependencies:
        self._row(AGENTS, agent_id)
        targets = self._agent_targets(agent_id, active=True)
        target_ids = {t["id"] for t in targets}
        cert_ids = {
            m["certificate_id"]
            for m in self._rows[MAPPINGS.name].values()
            if m["target_id"] in target_ids
        }
        certificates = [
            c
            for c in self._rows[CERTIFICATES.name].values()
            if c["id"] in cert_ids and c["status"] not in CLOSED_CERTIFICATE_STATUSES
        ]
        all_targets = {t["id"] for t in self._agent_targets(agent_id, active=False)}
        jobs = [
            j
            for j in self._rows[JOBS.name].values()
            if j["status"] in ACTIVE_JOB_STATUSES
            and (
                j["agent_id"] == agent_id
                or (j["agent_id"] is None and j["target_id"] in all_targets)
            )
        ]
        return AgentDependencies(len(targets), len(certificates), len(jobs))

    async def _retire_agent(
        self, agent_id: str, retired: Row, cascade: bool, audit: Audit
    ) -> Agent:
        with self._transaction():
            row = self._row(AGENTS, agent_id)
            if row["retired_at"] is None:
                deps = self._dependencies(agent_id)
                if deps.total and not cascade:
                    raise Conflict(retirement_blocked(agent_id, deps))
                for target in self._agent_targets(agent_id, active=True):
                    self._update(TARGETS, target["id"], **retired)
                row = self._update(AGENTS, agent_id, **retired)
            self._audit(audit)
        return self._decode(AGENTS, row)

    # -- certificates and versions -----------------------------------------------------

    async def _create_certificate(
        self, row: Row, targets: list[str], jobs: list[Row], audit: Audit
    ) -> ManagedCertificate:
        with self._transaction():
            self._insert(CERTIFICATES, row)
            self._map(row["id"], targets)
            for job_row in jobs:
                self._insert(JOBS, job_row)
            self._audit(audit)
        return self._entity(CERTIFICATES, row["id"])

    async def _update_certificate(
        self, cert_id: str, changes: Row, targets: list[str], audit: Audit
    ) -> ManagedCertificate:
        with self._transaction():
            old = self._row(CERTIFICATES, cert_id)
            row = self._update(CERTIFICATES, cert_id, **changes)
            latest = self._latest(cert_id)
            if latest is not None and row["renewal_policy_id"] != old["renewal_policy_id"]:
                policy = self._entity(POLICIES, row["renewal_policy_id"])
                due = self._rules.renewal_due_at(latest.not_before, latest.not_after, policy)
                self._update(CERTIFICATES, cert_id, renewal_due_at=due)
            self._map(cert_id, targets)
            self._audit(audit)
        return self._entity(CERTIFICATES, cert_id)

    async def _set_certificate_status(
        self, cert_id: str, changes: Row, expected: CertificateStatus, jobs: list[Row], audit: Audit
    ) -> ManagedCertificate:
        with self._transaction():
            current = self._row(CERTIFICATES, cert_id)["status"]
            if current != expected.value:
                raise Conflict(status_changed(cert_id, current, expected))
            self._update(CERTIFICATES, cert_id, **changes)
            for row in jobs:
                self._insert(JOBS, row)
            self._audit(audit)
        return self._entity(CERTIFICATES, cert_id)

    async def _archive_certificate(
        self, cert_id: str, at: datetime, audit: Audit
    ) -> ManagedCertificate:
        archived = CertificateStatus.ARCHIVED.value
        with self._transaction():
            if self._row(CERTIFICATES, cert_id)["status"] == archived:
                raise Conflict(already_archived(cert_id))
            self._update(CERTIFICATES, cert_id, status=archived, updated_at=at)
            self._audit(audit)
        return self._entity(CERTIFICATES, cert_id)

    async def _add_version(self, row: Row, status: str, audit: Audit) -> ManagedCertificate:
        cert_id = row["certificate_id"]
        with self._transaction():
            self._insert(VERSIONS, row)
            cert = self._row(CERTIFICATES, cert_id)
            if cert["status"] in CLOSED_CERTIFICATE_STATUSES:
                raise Conflict(certificate_closed(cert_id, cert["status"]))
            latest = self._latest(cert_id)
            assert latest is not None, "the version was just inserted"
            policy = self._entity(POLICIES, cert["renewal_policy_id"])
            self._update(
                CERTIFICATES,
                cert_id,
                expires_at=scalar("expires_at", latest.not_after),
                renewal_due_at=self._rules.renewal_due_at(
                    latest.not_before, latest.not_after, policy
                ),
                status=status,
                last_renewal_at=row["created_at"],
                updated_at=row["created_at"],
            )
            self._audit(audit)
        return self._entity(CERTIFICATES, cert_id)

    async def _versions(self, cert_id: str, limit: int | None) -> tuple[CertificateVersion, ...]:
        return tuple(self._decode(VERSIONS, v) for v in self._version_rows(cert_id)[:limit])

    async def _due_renewals(
        self, now: datetime, limit: int, cursor: str | None
    ) -> Page[DueRenewal]:
        where = [
            Condition("renewal_due_at", "<=", now),
            Condition("status", "in", sorted(s.value for s in DUE_STATUSES)),
        ]

        def build(row: Row) -> DueRenewal:
            latest = self._latest(row["id"])
            assert latest is not None, "a certificate with a due date has a version"
            return DueRenewal(self._decode(CERTIFICATES, row), latest, row["renewal_due_at"])

        return self._walk(
            CERTIFICATES, where, "renewal_due_at", limit=limit, cursor=cursor, build=build
        )

    # -- jobs ----------------------------------------------------------------------------

    def _jobs(self, keep: Callable[[Job], bool], order: str, limit: int) -> list[Job]:
        rows = [r for r in self._rows[JOBS.name].values() if r[order] is not None]
        rows.sort(key=lambda r: (r[order], r["id"]))
        jobs = (self._decode(JOBS, r) for r in rows)
        return [job for job in jobs if keep(job)][:limit]

    async def _claim_jobs(self, agent_id: str | None, now: datetime, limit: int) -> tuple[Job, ...]:
        routed = (
            set()
            if agent_id is None
            else {t["id"] for t in self._agent_targets(agent_id, active=False)}
        )

        def claimable(job: Job) -> bool:
            if job.status is not JobStatus.PENDING or job.scheduled_at > now:
                return False
            if agent_id is None:
                return job.type is not JobType.DEPLOYMENT
            return job.type is JobType.DEPLOYMENT and (
                job.agent_id == agent_id or (job.agent_id is None and job.target_id in routed)
            )

        with self._transaction():
            claimed = [
                self._rules.claimed(job, agent_id, now)
                for job in self._jobs(claimable, "scheduled_at", limit)
            ]
            for job in claimed:
                self._update(JOBS, job.id, **JOBS.encode(job))
        return tuple(claimed)

    async def _transition_job(
        self, seen: Row, row: Row, create: list[Row], deployed_at: datetime | None, audit: Audit
    ) -> Job:
        job_id = row["id"]
        with self._transaction():
            current = self._row(JOBS, job_id)
            if (current["status"], current["status_changed_at"]) != (
                seen["status"],
                seen["status_changed_at"],
            ):
                raise Conflict(job_moved(job_id, current["status"]))
            stored = self._update(JOBS, job_id, **row)
            for job_row in create:
                self._insert(JOBS, job_row)
            if deployed_at is not None:
                cert_id = row["certificate_id"]
                last = self._row(CERTIFICATES, cert_id)["last_deployment_at"]
                latest = deployed_at if last is None else max(last, deployed_at)
                self._update(CERTIFICATES, cert_id, last_deployment_at=latest)
            self._audit(audit)
        return self._decode(JOBS, stored)

    async def _awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
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

    async def _jobs_due_for_retry(self, now: datetime, limit: int) -> tuple[Job, ...]:
        return tuple(self._jobs(lambda j: is_retry_due(j, now), "next_retry_at", limit))

    async def _timed_out_jobs(
        self, now: datetime, waits: tuple[timedelta, timedelta], limit: int
    ) -> tuple[Job, ...]:
        csr, approval = waits

        def expired(job: Job) -> bool:
            event = timeout_event(job, now, awaiting_csr=csr, awaiting_approval=approval)
            return event is not None

        return tuple(self._jobs(expired, "status_changed_at", limit))

    async def _jobs_on_lost_agents(
        self, now: datetime, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        found: dict[str, Agent] = {}

        def lost(job: Job) -> bool:
            if job.agent_id is None:
                return False
            agent = found[job.id] = self._entity(AGENTS, job.agent_id)
            return reap_event(job, agent, now, offline_after) is not None

        return tuple(
            LostAgentJob(job, found[job.id]) for job in self._jobs(lost, "status_changed_at", limit)
        )

    # -- revocations -----------------------------------------------------------------------

    async def _revoke_certificate(self, row: Row, audit: Audit) -> ManagedCertificate:
        cert_id = row["certificate_id"]
        revoked = CertificateStatus.REVOKED.value
        with self._transaction():
            if self._row(CERTIFICATES, cert_id)["status"] == revoked:
                raise Conflict(already_revoked(cert_id))
            self._insert(REVOCATIONS, row)
            self._update(
                CERTIFICATES,
                cert_id,
                status=revoked,
                revoked_at=row["revoked_at"],
                revocation_reason=row["reason"],
                updated_at=row["revoked_at"],
            )
            self._audit(audit)
        return self._entity(CERTIFICATES, cert_id)
