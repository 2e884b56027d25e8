"""Every operation of the ``Store`` protocol, written once over ``certctl.store.rows``.

Creating, reading, listing, replacing and deleting a team is the same as for an owner or a
profile: encode the entity with its table description, hand the row to the backend, decode
what comes back. ``StoreOperations`` spells the protocol out once: it checks and encodes the
arguments (so both backends refuse the same calls with the same errors) and calls a
primitive that each backend implements its own way, MemoryStore on its rows and
PostgresStore in SQL. The generic primitives work over any table description; the others
are the few operations whose storage differs (compare-and-set writes, keyset walks over a
join, the job queue). A backend therefore holds only storage code, and a new table needs its
row description, not two more copies of every method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from certctl.core.model import (
    Agent,
    AgentStatus,
    AuditEvent,
    CertificateProfile,
    CertificateStatus,
    CertificateVersion,
    Issuer,
    Job,
    JSONValue,
    ManagedCertificate,
    Owner,
    RenewalPolicy,
    Revocation,
    Target,
    Team,
)
from certctl.store import checks
from certctl.store.base import (
    ANY_AUDIT,
    ANY_CERTIFICATE,
    ANY_JOB,
    DEFAULT_PAGE_SIZE,
    EDITABLE_CERTIFICATE_FIELDS,
    MESSAGE_BYTES,
    SIGHTING_FACTS,
    AgentDependencies,
    AuditQuery,
    CertificateQuery,
    DomainRules,
    DueRenewal,
    InventoryCounts,
    JobQuery,
    LostAgentJob,
    Page,
    Sighting,
)
from certctl.store.query import (
    Condition,
    audit_conditions,
    certificate_conditions,
    check_limit,
    job_conditions,
)
from certctl.store.rows import (
    AGENTS,
    AUDIT,
    CERTIFICATES,
    ISSUERS,
    JOBS,
    OWNERS,
    POLICIES,
    PROFILES,
    REVOCATIONS,
    TARGETS,
    TEAMS,
    VERSIONS,
    Table,
    scalar,
)

E = TypeVar("E")
Row = dict[str, Any]
Audit = Sequence[AuditEvent]
Order = tuple[str, ...]
Cursor = str | None


def _by(column: str, value: str | None) -> list[Condition]:
    return [] if value is None else [Condition(column, "=", value)]


def _target_list(cert: ManagedCertificate) -> list[str]:
    """The certificate's target ids, encoded, in order, without repeats."""
    return [scalar("ManagedCertificate.target_ids[]", t) for t in dict.fromkeys(cert.target_ids)]


class StoreOperations(ABC):
    """Every operation of ``Store``; a backend subclasses it and supplies the primitives.

    Each primitive is one transaction, and every write takes the audit events that commit
    with it, which is what lets each protocol method here be a single primitive call.
    ``_rules`` are the services' decisions a primitive applies inside its transaction.
    """

    _rules: DomainRules

    # -- generic primitives, over any table description -----------------------------------

    @abstractmethod
    async def _insert_row(self, table: Table[E], row: Row, audit: Sequence[AuditEvent]) -> E:
        """Insert ``row`` (the encoded entity plus any internal columns) and return it as
        stored."""

    @abstractmethod
    async def _insert_rows(
        self, table: Table[Any], rows: Sequence[Row], audit: Sequence[AuditEvent]
    ) -> None:
        """Insert ``rows`` in order, all or none."""

    @abstractmethod
    async def _get(self, table: Table[E], row_id: str) -> E:
        """The row ``row_id``, or ``NotFound``."""

    @abstractmethod
    async def _all(
        self, table: Table[E], conditions: Sequence[Condition] = (), *, order: Order = ("id",)
    ) -> tuple[E, ...]:
        """Every row matching ``conditions``, sorted by the ``order`` columns."""

    @abstractmethod
    async def _patch(
        self, table: Table[E], row_id: str, changes: Row, audit: Sequence[AuditEvent] = ()
    ) -> E:
        """Overwrite the ``changes`` columns of the row ``row_id`` (``NotFound`` if there
        is none) and return it as stored."""

    @abstractmethod
    async def _remove(self, table: Table[Any], row_id: str, audit: Sequence[AuditEvent]) -> None:
        """Delete the row; ``Conflict`` while another row references it."""

    @abstractmethod
    async def _page(
        self, table: Table[E], where: Sequence[Condition], position: str, limit: int, cursor: Cursor
    ) -> Page[E]:
        """One page of the keyset walk in ``(position, id)`` order."""

    @abstractmethod
    async def _seal(self, table: Table[Any], entity: Issuer | Target, *, keep: bool) -> Row:
        """``certctl.store.secrets.sealed_row`` of ``entity`` under the store's key."""

    @abstractmethod
    async def _secret(self, table: Table[Any], row_id: str) -> Mapping[str, JSONValue]:
        """The opened ``encrypted_secret`` of the row."""

    # -- primitives of the operations whose storage differs -----------------------------
    # Arguments arrive checked and encoded (``Row``s, encoded ``datetime``s and limits).

    @abstractmethod
    async def _update_policy(self, row: Row, audit: Sequence[AuditEvent]) -> RenewalPolicy:
        """``update_policy``: also moves the renewal due date of the policy's certificates."""

    @abstractmethod
    async def _list_targets(self, agent_id: str | None, cert_id: str | None) -> tuple[Target, ...]:
        """``list_targets``."""

    @abstractmethod
    async def _agent_by_key_hash(self, digest: str) -> Agent:
        """``agent_by_key_hash``."""

    @abstractmethod
    async def _inventory_counts(self, expiring_before: datetime) -> InventoryCounts:
        """``inventory_counts``."""

    @abstractmethod
    async def _record_heartbeat(self, agent_id: str, at: datetime, metadata: Row) -> Agent:
        """``record_heartbeat``; empty ``metadata`` values keep the stored ones."""

    @abstractmethod
    async def _record_seen(self, rows: list[Row]) -> int:
        """``record_seen``; each row holds ``id``, ``at`` and the five facts."""

    @abstractmethod
    async def _publish(self, channel: str, messages: list[str]) -> None:
        """``publish``, of at least one message, each within ``MESSAGE_BYTES``."""

    @abstractmethod
    async def _set_agent_status(self, agent_id: str, status: str, seen: datetime | None) -> Agent:
        """``set_agent_status``."""

    @abstractmethod
    async def _agent_dependencies(self, agent_id: str) -> AgentDependencies:
        """``agent_dependencies``."""

    @abstractmethod
    async def _retire_agent(
        self, agent_id: str, retired: Row, cascade: bool, audit: Audit
    ) -> Agent:
        """``retire_agent``; ``retired`` holds ``retired_at`` and ``retired_reason``."""

    @abstractmethod
    async def _create_certificate(
        self, row: Row, targets: list[str], jobs: list[Row], audit: Audit
    ) -> ManagedCertificate:
        """``create_certificate``: the row, its mapping to ``targets`` and its jobs."""

    @abstractmethod
    async def _update_certificate(
        self, cert_id: str, changes: Row, targets: list[str], audit: Audit
    ) -> ManagedCertificate:
        """``update_certificate``: ``changes`` are the editable columns."""

    @abstractmethod
    async def _set_certificate_status(
        self, cert_id: str, changes: Row, expected: CertificateStatus, jobs: list[Row], audit: Audit
    ) -> ManagedCertificate:
        """``set_certificate_status``: ``changes`` hold ``status`` and ``updated_at``."""

    @abstractmethod
    async def _archive_certificate(
        self, cert_id: str, at: datetime, audit: Audit
    ) -> ManagedCertificate:
        """``archive_certificate``."""

    @abstractmethod
    async def _add_version(self, row: Row, status: str, audit: Audit) -> ManagedCertificate:
        """``add_version``."""

    @abstractmethod
    async def _versions(self, cert_id: str, limit: int | None) -> tuple[CertificateVersion, ...]:
        """The certificate's newest ``limit`` versions (all with ``None``), newest first."""

    @abstractmethod
    async def _due_renewals(
        self, now: datetime, limit: int, cursor: str | None
    ) -> Page[DueRenewal]:
        """``due_renewals``."""

    @abstractmethod
    async def _claim_jobs(self, agent_id: str | None, now: datetime, limit: int) -> tuple[Job, ...]:
        """``claim_jobs``."""

    @abstractmethod
    async def _transition_job(
        self, seen: Row, row: Row, create: list[Row], deployed_at: datetime | None, audit: Audit
    ) -> Job:
        """``transition_job``: ``seen`` is the encoded previous job, ``row`` the new one."""

    @abstractmethod
    async def _awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
        """``awaiting_csr_jobs``."""

    @abstractmethod
    async def _jobs_due_for_retry(self, now: datetime, limit: int) -> tuple[Job, ...]:
        """``jobs_due_for_retry``."""

    @abstractmethod
    async def _timed_out_jobs(
        self, now: datetime, waits: tuple[timedelta, timedelta], limit: int
    ) -> tuple[Job, ...]:
        """``timed_out_jobs``; ``waits`` are the AwaitingCSR and AwaitingApproval limits."""

    @abstractmethod
    async def _jobs_on_lost_agents(
        self, now: datetime, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        """``jobs_on_lost_agents``."""

    @abstractmethod
    async def _revoke_certificate(self, row: Row, audit: Audit) -> ManagedCertificate:
        """``revoke_certificate``."""

    # -- teams and owners ---------------------------------------------------------------

    async def create_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team:
        return await self._insert_row(TEAMS, TEAMS.encode(team), audit)

    async def get_team(self, team_id: str) -> Team:
        return await self._get(TEAMS, team_id)

    async def list_teams(self) -> tuple[Team, ...]:
        return await self._all(TEAMS)

    async def update_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team:
        return await self._patch(TEAMS, team.id, TEAMS.encode(team), audit)

    async def delete_team(self, team_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(TEAMS, team_id, audit)

    async def create_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner:
        return await self._insert_row(OWNERS, OWNERS.encode(owner), audit)

    async def get_owner(self, owner_id: str) -> Owner:
        return await self._get(OWNERS, owner_id)

    async def list_owners(self, *, team_id: str | None = None) -> tuple[Owner, ...]:
        return await self._all(OWNERS, _by("team_id", team_id))

    async def update_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner:
        return await self._patch(OWNERS, owner.id, OWNERS.encode(owner), audit)

    async def delete_owner(self, owner_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(OWNERS, owner_id, audit)

    # -- renewal policies and certificate profiles --------------------------------------

    async def create_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        return await self._insert_row(POLICIES, POLICIES.encode(policy), audit)

    async def get_policy(self, policy_id: str) -> RenewalPolicy:
        return await self._get(POLICIES, policy_id)

    async def list_policies(self) -> tuple[RenewalPolicy, ...]:
        return await self._all(POLICIES)

    async def update_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        return await self._update_policy(POLICIES.encode(policy), audit)

    async def delete_policy(self, policy_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(POLICIES, policy_id, audit)

    async def create_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile:
        return await self._insert_row(PROFILES, PROFILES.encode(profile), audit)

    async def get_profile(self, profile_id: str) -> CertificateProfile:
        return await self._get(PROFILES, profile_id)

    async def list_profiles(self) -> tuple[CertificateProfile, ...]:
        return await self._all(PROFILES)

    async def update_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile:
        return await self._patch(PROFILES, profile.id, PROFILES.encode(profile), audit)

    async def delete_profile(self, profile_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(PROFILES, profile_id, audit)

    # -- issuers and targets (secrets sealed at rest) -----------------------------------

    async def create_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        row = await self._seal(ISSUERS, issuer, keep=False)
        return await self._insert_row(ISSUERS, row, audit)

    async def get_issuer(self, issuer_id: str) -> Issuer:
        return await self._get(ISSUERS, issuer_id)

    async def list_issuers(self) -> tuple[Issuer, ...]:
        return await self._all(ISSUERS)

    async def update_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        row = await self._seal(ISSUERS, issuer, keep=True)
        return await self._patch(ISSUERS, issuer.id, row, audit)

    async def delete_issuer(self, issuer_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        await self._remove(ISSUERS, issuer_id, audit)

    async def issuer_secret(self, issuer_id: str) -> Mapping[str, JSONValue]:
        return await self._secret(ISSUERS, issuer_id)

    async def create_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        row = await self._seal(TARGETS, target, keep=False)
        return await self._insert_row(TARGETS, row, audit)

    async def get_target(self, target_id: str) -> Target:
        return await self._get(TARGETS, target_id)

    async def list_targets(
        self, *, agent_id: str | None = None, certificate_id: str | None = None
    ) -> tuple[Target, ...]:
        return await self._list_targets(agent_id, certificate_id)

    async def update_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        row = await self._seal(TARGETS, target, keep=True)
        return await self._patch(TARGETS, target.id, row, audit)

    async def target_secret(self, target_id: str) -> Mapping[str, JSONValue]:
        return await self._secret(TARGETS, target_id)

    # -- agents -------------------------------------------------------------------------

    async def create_agent(
        self, agent: Agent, key_hash: str, *, audit: Sequence[AuditEvent] = ()
    ) -> Agent:
        row = {**AGENTS.encode(agent), "key_hash": checks.key_hash(key_hash)}
        return await self._insert_row(AGENTS, row, audit)

    async def get_agent(self, agent_id: str) -> Agent:
        return await self._get(AGENTS, agent_id)

    async def agent_by_key_hash(self, key_hash: str) -> Agent:
        return await self._agent_by_key_hash(checks.key_hash(key_hash))

    async def list_agents(self) -> tuple[Agent, ...]:
        return await self._all(AGENTS)

    async def inventory_counts(self, *, expiring_before: datetime) -> InventoryCounts:
        return await self._inventory_counts(expiring_before)

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
        values = {k: scalar(f"heartbeat {k}", v) for k, v in metadata.items()}
        return await self._record_heartbeat(agent_id, scalar("heartbeat at", at), values)

    async def publish(self, channel: str, messages: Sequence[str]) -> None:
        for message in messages:
            if len(message.encode()) > MESSAGE_BYTES:
                raise ValueError(
                    f"a message on channel {channel} has {len(message.encode())} bytes; "
                    f"send at most {MESSAGE_BYTES} bytes per message."
                )
        if messages:
            await self._publish(channel, list(messages))

    async def record_seen(self, sightings: Sequence[Sighting]) -> int:
        rows = [
            {
                "id": scalar("sighting agent_id", s.agent_id),
                "at": scalar("sighting at", s.at),
                **{name: scalar(f"sighting {name}", getattr(s, name)) for name in SIGHTING_FACTS},
            }
            for s in sightings
        ]
        if len({row["id"] for row in rows}) != len(rows):
            raise ValueError("sightings name an agent twice; keep the newest sighting per agent.")
        return await self._record_seen(rows) if rows else 0

    async def set_agent_status(
        self, agent_id: str, status: AgentStatus, *, seen_heartbeat_at: datetime | None
    ) -> Agent:
        seen = scalar("seen_heartbeat_at", seen_heartbeat_at)
        return await self._set_agent_status(agent_id, AgentStatus(status).value, seen)

    async def agent_dependencies(self, agent_id: str) -> AgentDependencies:
        return await self._agent_dependencies(agent_id)

    async def retire_agent(
        self,
        agent_id: str,
        at: datetime,
        reason: str,
        *,
        cascade: bool = False,
        audit: Sequence[AuditEvent] = (),
    ) -> Agent:
        retired = {
            "retired_at": scalar("retired at", at),
            "retired_reason": scalar("retired reason", reason),
        }
        return await self._retire_agent(agent_id, retired, cascade, audit)

    # -- certificates and versions --------------------------------------------------------

    async def create_certificate(
        self,
        cert: ManagedCertificate,
        *,
        jobs: Sequence[Job] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        row = {**CERTIFICATES.encode(checks.new_certificate(cert)), "renewal_due_at": None}
        job_rows = [JOBS.encode(job) for job in jobs]
        return await self._create_certificate(row, _target_list(cert), job_rows, audit)

    async def get_certificate(self, cert_id: str) -> ManagedCertificate:
        return await self._get(CERTIFICATES, cert_id)

    async def list_certificates(
        self,
        query: CertificateQuery = ANY_CERTIFICATE,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[ManagedCertificate]:
        conditions = certificate_conditions(query)
        return await self._page(CERTIFICATES, conditions, "created_at", limit, cursor)

    async def update_certificate(
        self, cert: ManagedCertificate, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        encoded = CERTIFICATES.encode(cert)
        changes = {name: encoded[name] for name in EDITABLE_CERTIFICATE_FIELDS}
        return await self._update_certificate(cert.id, changes, _target_list(cert), audit)

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
        changes = {
            "status": CertificateStatus(status).value,
            "updated_at": scalar("status changed at", at),
        }
        rows = [JOBS.encode(job) for job in jobs]
        return await self._set_certificate_status(
            cert_id, changes, CertificateStatus(expected), rows, audit
        )

    async def archive_certificate(
        self, cert_id: str, at: datetime, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        return await self._archive_certificate(cert_id, scalar("archived at", at), audit)

    async def add_version(
        self,
        version: CertificateVersion,
        *,
        status: CertificateStatus = CertificateStatus.ACTIVE,
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        row = VERSIONS.encode(checks.version(version))
        return await self._add_version(row, CertificateStatus(status).value, audit)

    async def list_versions(self, cert_id: str) -> tuple[CertificateVersion, ...]:
        return await self._versions(cert_id, None)

    async def latest_version(self, cert_id: str) -> CertificateVersion | None:
        newest = await self._versions(cert_id, 1)
        return newest[0] if newest else None

    async def due_renewals(
        self, now: datetime, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[DueRenewal]:
        return await self._due_renewals(scalar("now", now), check_limit(limit), cursor)

    # -- jobs ---------------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[Job], *, audit: Sequence[AuditEvent] = ()
    ) -> tuple[Job, ...]:
        rows = [JOBS.encode(job) for job in jobs]
        await self._insert_rows(JOBS, rows, audit)
        return tuple(JOBS.decode(row) for row in rows)

    async def get_job(self, job_id: str) -> Job:
        return await self._get(JOBS, job_id)

    async def list_jobs(
        self,
        query: JobQuery = ANY_JOB,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Job]:
        return await self._page(JOBS, job_conditions(query), "created_at", limit, cursor)

    async def claim_jobs(
        self, *, agent_id: str | None, now: datetime, limit: int
    ) -> tuple[Job, ...]:
        return await self._claim_jobs(agent_id, scalar("now", now), check_limit(limit))

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
        return await self._transition_job(seen, row, created, deployed, audit)

    async def awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
        return await self._awaiting_csr_jobs(agent_id)

    async def jobs_due_for_retry(self, now: datetime, *, limit: int) -> tuple[Job, ...]:
        return await self._jobs_due_for_retry(scalar("now", now), check_limit(limit))

    async def timed_out_jobs(
        self,
        now: datetime,
        *,
        awaiting_csr: timedelta,
        awaiting_approval: timedelta,
        limit: int,
    ) -> tuple[Job, ...]:
        waits = (awaiting_csr, awaiting_approval)
        return await self._timed_out_jobs(scalar("now", now), waits, check_limit(limit))

    async def jobs_on_lost_agents(
        self, now: datetime, *, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        moment = scalar("now", now)
        return await self._jobs_on_lost_agents(moment, offline_after, check_limit(limit))

    # -- revocations and audit ----------------------------------------------------------

    async def revoke_certificate(
        self, revocation: Revocation, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        return await self._revoke_certificate(REVOCATIONS.encode(revocation), audit)

    async def list_revocations(self, *, issuer_id: str | None = None) -> tuple[Revocation, ...]:
        return await self._all(REVOCATIONS, _by("issuer_id", issuer_id), order=("revoked_at", "id"))

    async def mark_issuer_notified(self, revocation_id: str) -> Revocation:
        return await self._patch(REVOCATIONS, revocation_id, {"issuer_notified": True})

    async def append_audit(self, events: Sequence[AuditEvent]) -> None:
        await self._insert_rows(AUDIT, [AUDIT.encode(event) for event in events], ())

    async def list_audit(
        self,
        query: AuditQuery = ANY_AUDIT,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        return await self._page(AUDIT, audit_conditions(query), "timestamp", limit, cursor)
