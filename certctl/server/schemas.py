"""Request bodies and query strings of the API, as pydantic models.

They are strict on purpose: unknown fields are refused (a misspelt field must not be
silently ignored), strings and lists have upper bounds (a megabyte of SANs is an error,
not a slow request), and enum fields take exactly the PascalCase values used everywhere
else. quart-schema turns them into ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from certctl.core.model import (
    ALERT_THRESHOLD_DAYS_RANGE,
    MAX_RETRIES_RANGE,
    RENEWAL_WINDOW_DAYS_RANGE,
    RETRY_INTERVAL_SECONDS_RANGE,
    ActorType,
    CertificateStatus,
    ExtendedKeyUsage,
    IssuerType,
    JobStatus,
    JobType,
    KeyAlgorithm,
    KeyRole,
    ManagedCertificate,
    RevocationReason,
    TargetType,
)
from certctl.protocol import Id, Name, printable
from certctl.server.hygiene import json_problem
from certctl.store.base import MAX_PAGE_SIZE


def _clean_json(value: dict[str, object]) -> dict[str, object]:
    """Every key and string inside a free-form object (a target or issuer config) is a
    name: configs hold paths, commands and host names, none of which has a newline."""
    problem = json_problem(value, names=True)
    if problem is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, Field(max_length=4096), AfterValidator(printable)]
DNSName = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(printable)]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str, Field(max_length=512)]


def _listed(value: object) -> object:
    """``?status=A`` or ``?status=A,B`` or ``?status=A&status=B``: always a list."""
    return value.split(",") if isinstance(value, str) else value


T = TypeVar("T")
Listed = BeforeValidator(_listed)
JSONObject = Annotated[dict[str, object], Field(max_length=100), AfterValidator(_clean_json)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# -- certificates ---------------------------------------------------------------------


class CertificateCreate(Strict):
    name: Name
    common_name: DNSName
    sans: list[DNSName] = Field(default_factory=list, max_length=100)
    owner_id: Id
    team_id: Id | None = None
    issuer_id: Id = "iss-local"
    renewal_policy_id: Id = "rp-default"
    certificate_profile_id: Id | None = None
    environment: Name | None = None
    tags: dict[Name, Text] = Field(default_factory=dict, max_length=50)
    target_ids: list[Id] = Field(default_factory=list, max_length=50)


class CertificateUpdate(Strict):
    name: Name | None = None
    common_name: DNSName | None = None
    sans: list[DNSName] | None = Field(default=None, max_length=100)
    owner_id: Id | None = None
    team_id: Id | None = None
    issuer_id: Id | None = None
    renewal_policy_id: Id | None = None
    certificate_profile_id: Id | None = None
    environment: Name | None = None
    tags: dict[Name, Text] | None = Field(default=None, max_length=50)
    target_ids: list[Id] | None = Field(default=None, max_length=50)


class CertificateListQuery(Strict):
    status: Annotated[list[CertificateStatus], Listed, Field(max_length=10)] | None = None
    owner_id: Id | None = None
    team_id: Id | None = None
    environment: Name | None = None
    issuer_id: Id | None = None
    expiring_before: AwareDatetime | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class Renew(Strict):
    force: bool = False


class Deploy(Strict):
    target_id: Id | None = None


class Revoke(Strict):
    reason: RevocationReason = RevocationReason.UNSPECIFIED


# -- configuration entities ------------------------------------------------------------


class TeamIn(Strict):
    id: Id | None = None
    name: Name
    description: Text = ""


class OwnerIn(Strict):
    id: Id | None = None
    name: Name
    email: Name
    team_id: Id | None = None


class PolicyIn(Strict):
    id: Id | None = None
    name: Name
    renewal_window_days: Annotated[
        int, Field(ge=RENEWAL_WINDOW_DAYS_RANGE[0], le=RENEWAL_WINDOW_DAYS_RANGE[1])
    ] = 30
    auto_renew: bool = True
    max_retries: Annotated[int, Field(ge=MAX_RETRIES_RANGE[0], le=MAX_RETRIES_RANGE[1])] = 3
    retry_interval_seconds: Annotated[
        int, Field(ge=RETRY_INTERVAL_SECONDS_RANGE[0], le=RETRY_INTERVAL_SECONDS_RANGE[1])
    ] = 3600
    alert_thresholds_days: list[
        Annotated[int, Field(ge=ALERT_THRESHOLD_DAYS_RANGE[0], le=ALERT_THRESHOLD_DAYS_RANGE[1])]
    ] = Field(default_factory=lambda: [30, 14, 7, 0], max_length=20)
    certificate_profile_id: Id | None = None


class KeyRuleIn(Strict):
    algorithm: KeyAlgorithm
    min_size: Annotated[int, Field(ge=256, le=16384)]


class ProfileIn(Strict):
    id: Id | None = None
    name: Name
    description: Text = ""
    allowed_key_algorithms: list[KeyRuleIn] = Field(
        default_factory=lambda: [
            KeyRuleIn(algorithm=KeyAlgorithm.ECDSA, min_size=256),
            KeyRuleIn(algorithm=KeyAlgorithm.RSA, min_size=2048),
        ],
        min_length=1,
        max_length=10,
    )
    max_ttl_seconds: Annotated[int, Field(ge=0, le=10 * 365 * 86400)] = 0
    allowed_ekus: list[ExtendedKeyUsage] = Field(
        default_factory=lambda: [ExtendedKeyUsage.SERVER_AUTH], max_length=5
    )
    required_san_patterns: list[Text] = Field(default_factory=list, max_length=20)
    allow_short_lived: bool = False
    must_staple: bool = False
    requires_approval: bool = False
    enabled: bool = True


class IssuerIn(Strict):
    id: Id | None = None
    name: Name
    type: IssuerType = IssuerType.LOCAL_CA
    config: JSONObject = Field(default_factory=dict)
    enabled: bool = True


class TargetIn(Strict):
    name: Name
    type: TargetType
    agent_id: Id
    config: JSONObject = Field(default_factory=dict)
    enabled: bool = True


class TargetUpdate(Strict):
    name: Name | None = None
    config: JSONObject | None = None
    enabled: bool | None = None


class RetireQuery(Strict):
    force: bool = False
    reason: Text = ""


# -- jobs and audit -------------------------------------------------------------------


class JobListQuery(Strict):
    status: Annotated[list[JobStatus], Listed, Field(max_length=10)] | None = None
    type: Annotated[list[JobType], Listed, Field(max_length=5)] | None = None
    certificate_id: Id | None = None
    agent_id: Id | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class AuditListQuery(Strict):
    actor: Name | None = None
    action: Name | None = None
    resource_type: Name | None = None
    resource_id: Text | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


# -- answers --------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every 4xx and 5xx: a machine-readable ``error`` code, one sentence of ``message``
    naming the fault and the fix, and the ``request_id`` the server log files it under."""

    error: str
    message: str
    request_id: str


class Items(BaseModel, Generic[T]):
    items: list[T]


class PageOf(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class IssuerOut(BaseModel):
    """An issuer as the API shows it: ``config`` redacted, secrets stay sealed."""

    id: str
    name: str
    type: IssuerType
    config: dict[str, Any]
    enabled: bool
    last_tested_at: datetime | None


class TargetOut(BaseModel):
    """A target as the API shows it: ``config`` without its secret."""

    id: str
    name: str
    type: TargetType
    agent_id: str
    config: dict[str, Any]
    enabled: bool
    retired_at: datetime | None
    retired_reason: str | None


class AuditEventOut(BaseModel):
    id: str
    actor: str
    actor_type: ActorType
    action: str
    resource_type: str
    resource_id: str
    timestamp: datetime
    details: dict[str, Any]


class CertificateCreated(BaseModel):
    certificate: ManagedCertificate
    job_ids: list[str]


class JobIds(BaseModel):
    job_ids: list[str]


class JobId(BaseModel):
    job_id: str


class Deleted(BaseModel):
    deleted: str


class Status(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str


class AuthCheck(BaseModel):
    status: str
    user: str
    role: KeyRole | None


class OtherMedia:
    """An answer that is not JSON; ``certctl.server.openapi`` documents it as its
    ``media_type``, an opaque body."""

    media_type = "application/octet-stream"


class CRLDocument(OtherMedia):
    """The issuer's current CRL, DER-encoded (RFC 5280); 304 when ``If-None-Match`` names
    its ETag."""

    media_type = "application/pkix-crl"


class PrometheusText(OtherMedia):
    """Every metric in the Prometheus text exposition format."""

    media_type = "text/plain"


class WorkQuery(Strict):
    resume: bool = False
    wait: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="Seconds to hold the poll until work appears (the long poll); the server "
        "grants at most CERTCTL_AGENT_POLL_WAIT_MAX and says what it granted in wait_seconds.",
    )
