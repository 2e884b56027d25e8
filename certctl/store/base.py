"""The ``Store`` protocol: every repository operation the services need, one transaction each.

Why one transaction per operation: a service never holds a transaction open across an
``await`` on something else (an issuer call, an agent), so a slow CA cannot pin database
connections, and a write and its audit events commit together or not at all (every
mutating operation takes ``audit=`` events for that reason).

The store is deliberately dumb about time and identity: ids and timestamps arrive inside the
entities, built by the caller from its clock, so the fleet simulator's virtual time flows
through storage unchanged and two implementations given the same calls return the same
values. Decisions stay in ``certctl.core``; the store only persists what they produced,
with compare-and-set where two writers can race (job transitions, certificate status,
agent status).

Secrets of issuers and targets: the top-level ``"secret"`` key of ``config`` (a JSON object
of named secrets) is sealed at rest and never comes back in an entity. ``issuer_secret`` and
``target_secret`` return it to the connector that needs it. An update whose ``config`` has
no ``"secret"`` keeps the stored one; ``"secret": {}`` removes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Generic, Protocol, TypeVar

from certctl.core.model import (
    CLOSED_CERTIFICATE_STATUSES,
    ActorType,
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

T = TypeVar("T")

DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000

DUE_STATUSES: Final = (
    frozenset(CertificateStatus) - CLOSED_CERTIFICATE_STATUSES - {CertificateStatus.PENDING}
)
"""Statuses the renewal scan looks at. RenewalInProgress and Failed keep their status
(it belongs to the job, or to the operator), but a stuck or failed renewal is exactly when
the expiry alerts matter, so the scan still sees them. Pending has no version yet; Revoked
and Archived are no longer managed."""

MESSAGE_BYTES: Final = 4000
"""Longest message ``Store.publish`` carries (PostgreSQL's NOTIFY takes 8000 bytes)."""

EDITABLE_CERTIFICATE_FIELDS: Final = (
    "name",
    "common_name",
    "sans",
    "environment",
    "owner_id",
    "team_id",
    "issuer_id",
    "renewal_policy_id",
    "certificate_profile_id",
    "tags",
    "updated_at",
)
"""What ``update_certificate`` writes (with ``target_ids``). Status, expiry and history
belong to the operations that own them, so an API edit racing the renewal scan cannot undo
the scan's status change."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset walk; pass ``next_cursor`` back for the following page.

    ``next_cursor`` is ``None`` on the last page. Cursors are opaque and stable: rows
    inserted behind the cursor never shift a walk in progress, unlike OFFSET paging.
    """

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class CertificateQuery:
    """Filters of ``list_certificates``; ``None`` means "any". ``expiring_before`` matches
    certificates whose ``expires_at`` is earlier (so never one without a version)."""

    statuses: frozenset[CertificateStatus] | None = None
    owner_id: str | None = None
    team_id: str | None = None
    environment: str | None = None
    issuer_id: str | None = None
    expiring_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobQuery:
    statuses: frozenset[JobStatus] | None = None
    types: frozenset[JobType] | None = None
    certificate_id: str | None = None
    agent_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of ``list_audit``; ``since`` is inclusive and ``until`` exclusive."""

    actor: str | None = None
    actor_type: ActorType | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class DomainRules(Protocol):
    """The two decisions a store applies inside its own transactions, supplied by the
    services (``certctl.services.rules.DOMAIN_RULES``) when the store is opened.

    The store stores: it never imports a decision. But a certificate's due date must change
    in the same transaction as the version or policy it follows, and a claimed job's new
    state in the same statement that locks it (``SKIP LOCKED``), so the rules travel down as
    values and the store only calls them.
    """

    def renewal_due_at(
        self, not_before: datetime, not_after: datetime, policy: RenewalPolicy
    ) -> datetime:
        """When renewal of a version with this validity falls due under ``policy``."""

    def claimed(self, job: Job, agent_id: str | None, now: datetime) -> Job:
        """``job`` (Pending, claimable) as claimed at ``now`` by ``agent_id`` (None: the
        server's own workers)."""


ANY_CERTIFICATE: Final = CertificateQuery()
ANY_JOB: Final = JobQuery()
ANY_AUDIT: Final = AuditQuery()


@dataclass(frozen=True, slots=True)
class DueRenewal:
    """A certificate whose renewal is due, its newest version, and when it became due.

    ``due_at`` is ``certctl.core.renewal.renewal_due_at`` of that version under the
    certificate's policy, kept up to date by the store when versions or policies change.
    """

    certificate: ManagedCertificate
    latest: CertificateVersion
    due_at: datetime


@dataclass(frozen=True, slots=True)
class LostAgentJob:
    """A Running job whose agent is retired or silent, with that agent for
    ``certctl.core.agents.reap_event``."""

    job: Job
    agent: Agent


@dataclass(frozen=True, slots=True)
class AgentDependencies:
    """What still needs an agent: its unretired targets, the certificates (neither
    archived nor revoked) mapped to them, and its jobs in an active state."""

    targets: int
    certificates: int
    jobs: int

    @property
    def total(self) -> int:
        return self.targets + self.certificates + self.jobs


@dataclass(frozen=True, slots=True)
class InventoryCounts:
    """How many of each thing there are, for ``/api/v1/stats/summary`` and the gauges.

    ``agents`` counts unretired agents by status; ``expiring`` counts certificates with a
    version whose ``expires_at`` is before the ``expiring_before`` the caller passed.
    """

    certificates: Mapping[CertificateStatus, int]
    agents: Mapping[AgentStatus, int]
    retired_agents: int
    jobs: Mapping[tuple[JobType, JobStatus], int]
    expiring: int


SIGHTING_FACTS: Final = ("hostname", "os", "architecture", "ip_address", "version")


@dataclass(frozen=True, slots=True)
class Sighting:
    """An agent seen alive at ``at`` (a long poll), with the facts it sent; an empty fact
    keeps the stored one, as in a heartbeat."""

    agent_id: str
    at: datetime
    hostname: str = ""
    os: str = ""
    architecture: str = ""
    ip_address: str = ""
    version: str = ""


class Subscription(Protocol):
    """Messages published on one channel by any replica, from ``Store.subscribe``."""

    async def receive(self) -> str:
        """The next message. ``StoreUnavailable`` once the subscription is broken (its
        session ended, or messages were lost): the subscriber must assume it missed some
        and subscribe again."""


class Leadership(Protocol):
    """One claim on a named lock shared by every replica on the database, from
    ``Store.leadership``: at most one claim per name is ``held`` at a time.

    A lock can be lost without its holder doing anything (PostgreSQL ends the session that
    held it), and nothing tells the holder when that happens; so it asks with ``check``
    at a pace it chooses. Between a loss and the next check two replicas may both believe
    they lead: whatever runs under a lock must still be safe to run twice (job claims skip
    locked rows, transitions are compare-and-set).
    """

    @property
    def held(self) -> bool:
        """Whether this claim got the lock and has not since found it lost."""

    async def check(self) -> bool:
        """Whether the lock is still held. Never raises: a lock that cannot be confirmed
        is treated as lost, and once lost, ``held`` stays ``False``."""


class Store(Protocol):
    """Repository operations; each is one transaction.

    Errors: ``NotFound`` (the entity or one it references is missing), ``Conflict`` (a taken
    id or name, a row still referenced, a stale compare-and-set), ``StoreUnavailable``
    (database unreachable; retry later), ``InvalidCursor``; ``ValueError`` for a value the
    database could not hold (a NUL character, a naive datetime, an integer out of range).
    Lists come back in a stable order: by id, or by the keyset order they document.
    """

    async def ready(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers with the schema this
        build expects (the ``/ready`` probe)."""

    async def inventory_counts(self, *, expiring_before: datetime) -> InventoryCounts:
        """Counts by status in one consistent snapshot (one transaction)."""

    def leadership(self, name: str) -> AbstractAsyncContextManager[Leadership]:
        """Try once, without waiting, to take the lock ``name``; the claim says whether it
        got it, and leaving the block releases it. ``StoreUnavailable`` if the database
        cannot be asked."""

    async def publish(self, channel: str, messages: Sequence[str]) -> None:
        """Deliver each message to every current subscriber of ``channel``, in every
        replica on this database; a message is a short line (at most ``MESSAGE_BYTES``)."""

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        """Receive what is published on ``channel`` from now on, until the block ends.
        ``StoreUnavailable`` if the database cannot be reached."""

    # -- teams and owners ---------------------------------------------------------------

    async def create_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team: ...
    async def get_team(self, team_id: str) -> Team: ...
    async def list_teams(self) -> tuple[Team, ...]: ...
    async def update_team(self, team: Team, *, audit: Sequence[AuditEvent] = ()) -> Team: ...
    async def delete_team(self, team_id: str, *, audit: Sequence[AuditEvent] = ()) -> None: ...

    async def create_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner: ...
    async def get_owner(self, owner_id: str) -> Owner: ...
    async def list_owners(self, *, team_id: str | None = None) -> tuple[Owner, ...]: ...
    async def update_owner(self, owner: Owner, *, audit: Sequence[AuditEvent] = ()) -> Owner: ...
    async def delete_owner(self, owner_id: str, *, audit: Sequence[AuditEvent] = ()) -> None: ...

    # -- renewal policies and certificate profiles --------------------------------------

    async def create_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy: ...
    async def get_policy(self, policy_id: str) -> RenewalPolicy: ...
    async def list_policies(self) -> tuple[RenewalPolicy, ...]: ...
    async def update_policy(
        self, policy: RenewalPolicy, *, audit: Sequence[AuditEvent] = ()
    ) -> RenewalPolicy:
        """Also moves the renewal due date of every certificate under the policy."""

    async def delete_policy(self, policy_id: str, *, audit: Sequence[AuditEvent] = ()) -> None: ...

    async def create_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile: ...
    async def get_profile(self, profile_id: str) -> CertificateProfile: ...
    async def list_profiles(self) -> tuple[CertificateProfile, ...]: ...
    async def update_profile(
        self, profile: CertificateProfile, *, audit: Sequence[AuditEvent] = ()
    ) -> CertificateProfile: ...
    async def delete_profile(
        self, profile_id: str, *, audit: Sequence[AuditEvent] = ()
    ) -> None: ...

    # -- issuers and targets (secrets sealed at rest) -----------------------------------

    async def create_issuer(self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()) -> Issuer:
        """Returns the stored issuer, whose ``config`` has no ``"secret"`` key."""

    async def get_issuer(self, issuer_id: str) -> Issuer: ...
    async def list_issuers(self) -> tuple[Issuer, ...]: ...
    async def update_issuer(
        self, issuer: Issuer, *, audit: Sequence[AuditEvent] = ()
    ) -> Issuer: ...
    async def delete_issuer(self, issuer_id: str, *, audit: Sequence[AuditEvent] = ()) -> None: ...
    async def issuer_secret(self, issuer_id: str) -> Mapping[str, JSONValue]:
        """The decrypted ``"secret"`` object, for the issuer connector only."""

    async def create_target(self, target: Target, *, audit: Sequence[AuditEvent] = ()) -> Target:
        """Returns the stored target, whose ``config`` has no ``"secret"`` key."""

    async def get_target(self, target_id: str) -> Target: ...
    async def list_targets(
        self, *, agent_id: str | None = None, certificate_id: str | None = None
    ) -> tuple[Target, ...]: ...
    async def update_target(
        self, target: Target, *, audit: Sequence[AuditEvent] = ()
    ) -> Target: ...
    async def target_secret(self, target_id: str) -> Mapping[str, JSONValue]:
        """The decrypted ``"secret"`` object, for the target connector only."""

    # -- agents -------------------------------------------------------------------------

    async def create_agent(
        self, agent: Agent, key_hash: str, *, audit: Sequence[AuditEvent] = ()
    ) -> Agent:
        """``key_hash`` is the SHA-256 hex digest of the agent key, never the key."""

    async def get_agent(self, agent_id: str) -> Agent: ...
    async def agent_by_key_hash(self, key_hash: str) -> Agent: ...
    async def list_agents(self) -> tuple[Agent, ...]: ...
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
        """Marks the agent Online at ``at``; non-empty metadata replaces the stored values.
        ``Conflict`` for a retired agent (the API answers 410)."""

    async def record_seen(self, sightings: Sequence[Sighting]) -> int:
        """``record_heartbeat`` for many agents in one statement (at most one sighting
        per agent); a heartbeat time never moves back, and retired or unknown agents are
        skipped. Returns how many agents were updated."""

    async def set_agent_status(
        self, agent_id: str, status: AgentStatus, *, seen_heartbeat_at: datetime | None
    ) -> Agent:
        """Compare-and-set for the health loop: ``Conflict`` if a heartbeat arrived since
        the caller read ``seen_heartbeat_at`` or the agent was retired meanwhile."""

    async def agent_dependencies(self, agent_id: str) -> AgentDependencies: ...
    async def retire_agent(
        self,
        agent_id: str,
        at: datetime,
        reason: str,
        *,
        cascade: bool = False,
        audit: Sequence[AuditEvent] = (),
    ) -> Agent:
        """Retire the agent (a retired one is returned unchanged). Without ``cascade`` any
        dependency is a ``Conflict``; with it, the agent's targets are retired too."""

    # -- certificates, targets mapping, versions -------------------------------------------

    async def create_certificate(
        self,
        cert: ManagedCertificate,
        *,
        jobs: Sequence[Job] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        """Insert the certificate, map it to ``cert.target_ids`` and create ``jobs`` (its
        Issuance job) together. ``cert.expires_at`` must be ``None``: it comes from the
        first version."""

    async def get_certificate(self, cert_id: str) -> ManagedCertificate: ...
    async def list_certificates(
        self,
        query: CertificateQuery = ANY_CERTIFICATE,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[ManagedCertificate]:
        """Keyset walk in ``(created_at, id)`` order."""

    async def update_certificate(
        self, cert: ManagedCertificate, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        """Replace the descriptive fields (``EDITABLE_CERTIFICATE_FIELDS``) and the target
        mapping; status, expiry and history fields have their own operations."""

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
        """Compare-and-set: ``Conflict`` unless the status is still ``expected``.

        ``jobs`` are created in the same transaction, so a status that says a job is under
        way and the job itself exist together or not at all.
        """

    async def archive_certificate(
        self, cert_id: str, at: datetime, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        """``Conflict`` if already archived."""

    async def add_version(
        self,
        version: CertificateVersion,
        *,
        status: CertificateStatus = CertificateStatus.ACTIVE,
        audit: Sequence[AuditEvent] = (),
    ) -> ManagedCertificate:
        """Store an issued version and, atomically, point the certificate at its newest
        version: ``expires_at``, renewal due date, ``status``, ``last_renewal_at``."""

    async def list_versions(self, cert_id: str) -> tuple[CertificateVersion, ...]:
        """Newest first (``created_at``, then id)."""

    async def latest_version(self, cert_id: str) -> CertificateVersion | None: ...
    async def due_renewals(
        self, now: datetime, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[DueRenewal]:
        """Certificates in ``DUE_STATUSES`` whose renewal is due at ``now``, in
        ``(due_at, id)`` order. Certificates with ``auto_renew=False`` are included: the
        scan still has to move their status and alert."""

    # -- jobs ---------------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[Job], *, audit: Sequence[AuditEvent] = ()
    ) -> tuple[Job, ...]: ...
    async def get_job(self, job_id: str) -> Job: ...
    async def list_jobs(
        self,
        query: JobQuery = ANY_JOB,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Job]:
        """Keyset walk in ``(created_at, id)`` order."""

    async def claim_jobs(
        self, *, agent_id: str | None, now: datetime, limit: int
    ) -> tuple[Job, ...]:
        """Claim up to ``limit`` Pending jobs scheduled at or before ``now`` (oldest
        ``scheduled_at`` first), moved to Running by ``certctl.core.jobs`` ``Claimed``.

        ``agent_id=None`` is the control plane: Issuance and Renewal jobs only, never a
        Deployment job (those run on agents). An agent claims only Deployment jobs routed to
        it, directly or through a target it owns. Rows locked by a concurrent claimer are
        skipped, so two claimers never get the same job.
        """

    async def transition_job(
        self,
        previous: Job,
        new: Job,
        *,
        create: Sequence[Job] = (),
        deployed_at: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> Job:
        """Persist ``new``, computed by ``certctl.core.jobs.transition`` from ``previous``.

        Compare-and-set on ``previous``'s status and ``status_changed_at``: ``Conflict``
        if another writer moved the job first. ``create`` inserts follow-up jobs (the
        Deployment fan-out) and ``deployed_at`` sets the certificate's
        ``last_deployment_at``, both in the same transaction.
        """

    async def awaiting_csr_jobs(self, agent_id: str) -> tuple[Job, ...]:
        """AwaitingCSR jobs of certificates mapped to a target of this agent."""

    async def jobs_due_for_retry(self, now: datetime, *, limit: int) -> tuple[Job, ...]:
        """Failed jobs for which ``certctl.core.jobs.is_retry_due`` holds at ``now``."""

    async def timed_out_jobs(
        self,
        now: datetime,
        *,
        awaiting_csr: timedelta,
        awaiting_approval: timedelta,
        limit: int,
    ) -> tuple[Job, ...]:
        """Jobs for which ``certctl.core.jobs.timeout_event`` fires at ``now``."""

    async def jobs_on_lost_agents(
        self, now: datetime, *, offline_after: timedelta, limit: int
    ) -> tuple[LostAgentJob, ...]:
        """Running jobs whose agent is retired or has been silent longer than
        ``offline_after`` (``certctl.core.agents.reap_event`` would reap them)."""

    # -- revocations and audit ----------------------------------------------------------

    async def revoke_certificate(
        self, revocation: Revocation, *, audit: Sequence[AuditEvent] = ()
    ) -> ManagedCertificate:
        """Record the revocation and mark the certificate Revoked; ``Conflict`` if it
        already is."""

    async def list_revocations(self, *, issuer_id: str | None = None) -> tuple[Revocation, ...]:
        """In ``(revoked_at, id)`` order, for CRL generation."""

    async def mark_issuer_notified(self, revocation_id: str) -> Revocation: ...

    async def append_audit(self, events: Sequence[AuditEvent]) -> None: ...
    async def list_audit(
        self,
        query: AuditQuery = ANY_AUDIT,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        """Keyset walk in ``(timestamp, id)`` order."""
