"""Entities and enums of the certificate lifecycle, as plain immutable data.

Every layer (store rows, API bodies, simulator state) converts to and from these types, so
the enum strings here are the single spelling used in code, database and API alike: the
PascalCase values of the reference, never a lower-cased variant. Entities are frozen so a
decision function can never mutate its input behind the caller's back; a change is a new
value built with ``dataclasses.replace``. Validation lives here only where a bad value would
make a core decision wrong (policy bounds, attempt counters); everything else is validated
where it enters the system.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, TypeAlias

JSONValue: TypeAlias = (
    "str | int | float | bool | Sequence[JSONValue] | Mapping[str, JSONValue] | None"
)


class CertificateStatus(enum.StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    EXPIRING = "Expiring"
    EXPIRED = "Expired"
    RENEWAL_IN_PROGRESS = "RenewalInProgress"
    FAILED = "Failed"
    REVOKED = "Revoked"
    ARCHIVED = "Archived"


class JobType(enum.StrEnum):
    ISSUANCE = "Issuance"
    RENEWAL = "Renewal"
    DEPLOYMENT = "Deployment"


class JobStatus(enum.StrEnum):
    PENDING = "Pending"
    AWAITING_CSR = "AwaitingCSR"
    AWAITING_APPROVAL = "AwaitingApproval"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


CLOSED_CERTIFICATE_STATUSES: Final = frozenset(
    {CertificateStatus.REVOKED, CertificateStatus.ARCHIVED}
)
"""Certificates no longer managed: they take no new version, are not renewed or revoked
again, and no longer hold on to an agent. Every rule that says "closed" uses this set, the
store's SQL included, so a new closing status cannot be forgotten in one place."""

ACTIVE_JOB_STATUSES: Final = frozenset(
    {JobStatus.PENDING, JobStatus.AWAITING_CSR, JobStatus.AWAITING_APPROVAL, JobStatus.RUNNING}
)
"""States in which a job holds on to its certificate and agent (they block retirement)."""

TERMINAL_JOB_STATUSES: Final = frozenset({JobStatus.COMPLETED, JobStatus.CANCELLED})
"""States no event leaves. A Failed job is final only once it has no retry scheduled; see
``certctl.core.jobs.is_final``."""


class AgentStatus(enum.StrEnum):
    """Liveness only: retirement is ``Agent.retired_at``, because a retired agent that was
    Online when retired must not look reachable, and one that is Offline is not merely late.
    """

    ONLINE = "Online"
    OFFLINE = "Offline"


class RevocationReason(enum.StrEnum):
    """RFC 5280 CRLReason values that an operator may give; ``code`` is what goes on the CRL."""

    UNSPECIFIED = "Unspecified"
    KEY_COMPROMISE = "KeyCompromise"
    CA_COMPROMISE = "CACompromise"
    AFFILIATION_CHANGED = "AffiliationChanged"
    SUPERSEDED = "Superseded"
    CESSATION_OF_OPERATION = "CessationOfOperation"
    CERTIFICATE_HOLD = "CertificateHold"
    PRIVILEGE_WITHDRAWN = "PrivilegeWithdrawn"

    @property
    def code(self) -> int:
        """The CRLReason code; 7 is unassigned in RFC 5280, hence the gap before 9."""
        return _CRL_REASON_CODES[self]


_CRL_REASON_CODES: Final[Mapping[RevocationReason, int]] = MappingProxyType(
    {
        RevocationReason.UNSPECIFIED: 0,
        RevocationReason.KEY_COMPROMISE: 1,
        RevocationReason.CA_COMPROMISE: 2,
        RevocationReason.AFFILIATION_CHANGED: 3,
        RevocationReason.SUPERSEDED: 4,
        RevocationReason.CESSATION_OF_OPERATION: 5,
        RevocationReason.CERTIFICATE_HOLD: 6,
        RevocationReason.PRIVILEGE_WITHDRAWN: 9,
    }
)


class KeyAlgorithm(enum.StrEnum):
    ECDSA = "ECDSA"
    RSA = "RSA"
    ED25519 = "Ed25519"


class ExtendedKeyUsage(enum.StrEnum):
    SERVER_AUTH = "ServerAuth"
    CLIENT_AUTH = "ClientAuth"
    CODE_SIGNING = "CodeSigning"
    EMAIL_PROTECTION = "EmailProtection"
    TIME_STAMPING = "TimeStamping"


class AlertSeverity(enum.StrEnum):
    INFORMATIONAL = "Informational"
    WARNING = "Warning"
    CRITICAL = "Critical"


class NotificationChannel(enum.StrEnum):
    EMAIL = "Email"
    WEBHOOK = "Webhook"
    SLACK = "Slack"
    TEAMS = "Teams"
    PAGER_DUTY = "PagerDuty"
    OPS_GENIE = "OpsGenie"


class TargetType(enum.StrEnum):
    NGINX = "NGINX"
    APACHE = "Apache"
    HAPROXY = "HAProxy"
    TRAEFIK = "Traefik"
    CADDY = "Caddy"
    ENVOY = "Envoy"
    POSTFIX = "Postfix"
    DOVECOT = "Dovecot"
    FILE = "File"


class IssuerType(enum.StrEnum):
    LOCAL_CA = "LocalCA"


class ActorType(enum.StrEnum):
    USER = "User"
    SYSTEM = "System"
    AGENT = "Agent"


class KeyRole(enum.StrEnum):
    """What an operator API key may do; each role includes everything of the ones before it.

    Lower-case, unlike the entity enums, because operators write it in
    ``CERTCTL_API_KEYS`` (``name:key:viewer``) and the earlier format's ``:admin`` is kept.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: KeyRole) -> bool:
        """Whether a key of this role may call a route that needs ``needed``."""
        return _ROLE_RANK[self] >= _ROLE_RANK[needed]


_ROLE_RANK: Final[Mapping[KeyRole, int]] = MappingProxyType(
    {KeyRole.VIEWER: 0, KeyRole.OPERATOR: 1, KeyRole.ADMIN: 2}
)


class VerificationStatus(enum.StrEnum):
    """Outcome of the post-deploy TLS handshake check of a Deployment job."""

    PENDING = "Pending"
    SUCCESS = "Success"
    FAILED = "Failed"
    SKIPPED = "Skipped"


RENEWAL_WINDOW_DAYS_RANGE: Final = (1, 365)
MAX_RETRIES_RANGE: Final = (0, 10)
RETRY_INTERVAL_SECONDS_RANGE: Final = (60, 86_400)
ALERT_THRESHOLD_DAYS_RANGE: Final = (0, 365)

DEFAULT_ALERT_THRESHOLDS_DAYS: Final = (30, 14, 7, 0)
DEFAULT_ALERT_SEVERITY_MAP: Final[Mapping[int, AlertSeverity]] = MappingProxyType(
    {
        30: AlertSeverity.INFORMATIONAL,
        14: AlertSeverity.WARNING,
        7: AlertSeverity.WARNING,
        0: AlertSeverity.CRITICAL,
    }
)
DEFAULT_ALERT_CHANNELS: Final[Mapping[AlertSeverity, tuple[NotificationChannel, ...]]] = (
    MappingProxyType(dict.fromkeys(AlertSeverity, (NotificationChannel.EMAIL,)))
)


def _check_range(entity: str, name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(
            f"{entity} {name} is {value}; set it to a whole number from {low} to {high}."
        )


def _no_entries() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    description: str = ""


@dataclass(frozen=True, slots=True)
class Owner:
    """A person accountable for certificates; ``email`` receives their alerts."""

    id: str
    name: str
    email: str
    team_id: str | None = None


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    """When to renew, how hard to retry, and whom to alert at which distance from expiry.

    The bounds are those the reference validates; they are enforced here because the
    renewal and retry arithmetic is only proven sound inside them.
    """

    id: str
    name: str
    renewal_window_days: int = 30
    auto_renew: bool = True
    max_retries: int = 3
    retry_interval_seconds: int = 3600
    alert_thresholds_days: tuple[int, ...] = DEFAULT_ALERT_THRESHOLDS_DAYS
    alert_severity_map: Mapping[int, AlertSeverity] = field(
        default_factory=lambda: DEFAULT_ALERT_SEVERITY_MAP
    )
    alert_channels: Mapping[AlertSeverity, tuple[NotificationChannel, ...]] = field(
        default_factory=lambda: DEFAULT_ALERT_CHANNELS
    )
    certificate_profile_id: str | None = None

    def __post_init__(self) -> None:
        entity = f"RenewalPolicy {self.id}"
        _check_range(
            entity, "renewal_window_days", self.renewal_window_days, RENEWAL_WINDOW_DAYS_RANGE
        )
        _check_range(entity, "max_retries", self.max_retries, MAX_RETRIES_RANGE)
        _check_range(
            entity,
            "retry_interval_seconds",
            self.retry_interval_seconds,
            RETRY_INTERVAL_SECONDS_RANGE,
        )
        for threshold in self.alert_thresholds_days:
            _check_range(
                entity, "alert_thresholds_days entry", threshold, ALERT_THRESHOLD_DAYS_RANGE
            )

    @property
    def max_attempts(self) -> int:
        """Attempts a job of this policy gets: the first try plus ``max_retries`` retries."""
        return self.max_retries + 1


@dataclass(frozen=True, slots=True)
class KeyRule:
    """A minimum key size per algorithm, because RSA and ECDSA bit counts are not comparable."""

    algorithm: KeyAlgorithm
    min_size: int


SHORT_LIVED_MAX_TTL_SECONDS: Final = 3600


@dataclass(frozen=True, slots=True)
class CertificateProfile:
    id: str
    name: str
    description: str = ""
    allowed_key_algorithms: tuple[KeyRule, ...] = (
        KeyRule(KeyAlgorithm.ECDSA, 256),
        KeyRule(KeyAlgorithm.RSA, 2048),
    )
    max_ttl_seconds: int = 0
    allowed_ekus: tuple[ExtendedKeyUsage, ...] = (ExtendedKeyUsage.SERVER_AUTH,)
    required_san_patterns: tuple[str, ...] = ()
    spiffe_uri_pattern: str | None = None
    allow_short_lived: bool = False
    must_staple: bool = False
    required_csr_attributes: tuple[str, ...] = ()
    requires_approval: bool = False
    enabled: bool = True

    @property
    def is_short_lived(self) -> bool:
        """Short-lived certificates expire before revocation could propagate, so they are
        never reported revoked and are expired by their own fast loop.
        """
        return self.allow_short_lived and 0 < self.max_ttl_seconds < SHORT_LIVED_MAX_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class Issuer:
    """A CA connector; ``config`` is the redacted copy, secrets stay encrypted in the store."""

    id: str
    name: str
    type: IssuerType
    config: Mapping[str, JSONValue] = field(default_factory=_no_entries)
    enabled: bool = True
    last_tested_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    """A host process that owns private keys and deploys to its targets.

    The agent key hash is deliberately absent: it belongs to the store's auth lookup and
    must not travel with a value that gets logged or serialised.
    """

    id: str
    name: str
    hostname: str
    registered_at: datetime
    status: AgentStatus = AgentStatus.ONLINE
    last_heartbeat_at: datetime | None = None
    os: str = ""
    architecture: str = ""
    ip_address: str = ""
    version: str = ""
    retired_at: datetime | None = None
    retired_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A deployment destination on one agent's host (unique per agent by name)."""

    id: str
    name: str
    type: TargetType
    agent_id: str
    config: Mapping[str, JSONValue] = field(default_factory=_no_entries)
    enabled: bool = True
    retired_at: datetime | None = None
    retired_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ManagedCertificate:
    """A certificate under management across its versions.

    ``expires_at`` is the latest version's ``not_after`` and stays ``None`` until the first
    version exists, so an unissued certificate is never mistaken for an expired one.
    """

    id: str
    name: str
    common_name: str
    owner_id: str
    issuer_id: str
    renewal_policy_id: str
    created_at: datetime
    updated_at: datetime
    sans: tuple[str, ...] = ()
    environment: str | None = None
    team_id: str | None = None
    certificate_profile_id: str | None = None
    status: CertificateStatus = CertificateStatus.PENDING
    expires_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=_no_entries)
    target_ids: tuple[str, ...] = ()
    last_renewal_at: datetime | None = None
    last_deployment_at: datetime | None = None
    revoked_at: datetime | None = None
    revocation_reason: RevocationReason | None = None


@dataclass(frozen=True, slots=True)
class CertificateVersion:
    """One issued certificate. It carries the CSR, never a private key: keys stay on agents."""

    id: str
    certificate_id: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    pem_chain: str
    key_algorithm: KeyAlgorithm
    key_size: int
    created_at: datetime
    csr_pem: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A unit of work moved through its states only by ``certctl.core.jobs.transition``.

    ``max_attempts`` and ``retry_interval_seconds`` are copied from the renewal policy when
    the job is created, so a policy edit never changes the schedule of a job in flight.
    ``status_changed_at`` is when the current state was entered; the awaiting timeouts are
    measured from it rather than from ``created_at``, which would time a retried job out at
    once.
    """

    id: str
    type: JobType
    certificate_id: str
    status: JobStatus
    created_at: datetime
    scheduled_at: datetime
    status_changed_at: datetime
    target_id: str | None = None
    agent_id: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    retry_interval_seconds: int = 3600
    last_error: str | None = None
    next_retry_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    verification_status: VerificationStatus | None = None
    verified_at: datetime | None = None
    verification_fingerprint: str | None = None
    verification_error: str | None = None
    requested_by: str = ""
    """The operator key name (or ``certctl`` for the scheduler) that asked for the job;
    the two-person rule keeps that name from approving it."""

    def __post_init__(self) -> None:
        entity = f"Job {self.id}"
        if self.max_attempts < 1:
            raise ValueError(f"{entity} max_attempts is {self.max_attempts}; set it to 1 or more.")
        _check_range(entity, "attempts", self.attempts, (0, self.max_attempts))
        _check_range(
            entity,
            "retry_interval_seconds",
            self.retry_interval_seconds,
            RETRY_INTERVAL_SECONDS_RANGE,
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One append-only audit row: who did what to which resource, and when."""

    id: str
    actor: str
    actor_type: ActorType
    action: str
    resource_type: str
    resource_id: str
    timestamp: datetime
    details: Mapping[str, JSONValue] = field(default_factory=_no_entries)


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked serial; ``issuer_notified`` records the best-effort call to the issuer."""

    id: str
    certificate_id: str
    serial_number: str
    reason: RevocationReason
    revoked_by: str
    revoked_at: datetime
    issuer_id: str
    issuer_notified: bool = False
