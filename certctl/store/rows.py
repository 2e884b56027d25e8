"""Entities to rows and back, and the tables' keys, uniques and references.

Both stores go through this module: PostgresStore binds the encoded values as query
parameters, MemoryStore keeps the encoded rows themselves. Whatever PostgreSQL would
normalise (UTC timestamps, JSON round trips, arrays as lists) is normalised here for both,
and whatever it would reject (NUL characters, naive datetimes, integers wider than a
column) is rejected here for both, so the two stores return equal values and raise equal
errors. The constraint metadata doubles as the map from PostgreSQL constraint names to the
messages of ``Conflict`` and ``NotFound``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from certctl.core.model import (
    ActorType,
    Agent,
    AgentStatus,
    AlertSeverity,
    AuditEvent,
    CertificateProfile,
    CertificateStatus,
    CertificateVersion,
    ExtendedKeyUsage,
    Issuer,
    IssuerType,
    Job,
    JobStatus,
    JobType,
    KeyAlgorithm,
    KeyRule,
    ManagedCertificate,
    NotificationChannel,
    Owner,
    RenewalPolicy,
    Revocation,
    RevocationReason,
    Target,
    TargetType,
    Team,
    VerificationStatus,
)
from certctl.store.base import AgentDependencies

E = TypeVar("E")

INT_RANGE: Final = (-(2**31), 2**31 - 1)
"""PostgreSQL ``integer``: every integer field of the model fits it with room to spare."""


def _text(label: str, value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{label} contains a NUL character; remove it.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{label} is not valid Unicode text; remove lone surrogates.") from None
    return value


def scalar(label: str, value: Any) -> Any:
    """Encode a text, integer, boolean or timestamp column value (``None`` passes)."""
    match value:
        case None | bool():
            return value
        case int():
            low, high = INT_RANGE
            if not low <= value <= high:
                raise ValueError(f"{label} is {value}; use a whole number from {low} to {high}.")
            return value
        case str():
            return _text(label, value)
        case datetime():
            if value.tzinfo is None:
                raise ValueError(
                    f"{label} must be timezone-aware; pass a datetime with tzinfo=UTC."
                )
            return value.astimezone(UTC)
    raise TypeError(f"{label} is a {type(value).__name__}; pass a value of the field's type.")


def _identity(value: Any) -> Any:
    return value


def json_value(label: str, value: Any) -> Any:
    """A JSON document as ``jsonb`` stores it: text checked, tuples become lists."""
    match value:
        case None | bool() | int():
            return value
        case float():
            if not math.isfinite(value):
                raise ValueError(f"{label} holds {value}; JSON numbers must be finite.")
            return value
        case str():
            return _text(label, value)
        case Mapping():
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(f"{label} has the key {key!r}; JSON object keys are text.")
                out[_text(f"{label} key", key)] = json_value(f"{label}.{key}", item)
            return out
        case list() | tuple():
            return [json_value(f"{label}[]", item) for item in value]
    raise ValueError(f"{label} holds a {type(value).__name__}; use JSON values only.")


@dataclass(frozen=True, slots=True)
class Column:
    """One entity field: how it is encoded (given a label for errors) and decoded.

    ``stored=False`` marks a field assembled from another table (``target_ids``).
    """

    name: str
    encode: Callable[[str, Any], Any] = scalar
    decode: Callable[[Any], Any] = _identity
    stored: bool = True


def enum_column(name: str, kind: type[enum.StrEnum]) -> Column:
    members = {member.value: member for member in kind}

    def encode(label: str, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return kind(value).value
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise ValueError(f"{label} is {value!r}; use one of {choices}.") from None

    # A dict lookup rather than kind(raw): the enum call dominates decoding a page.
    return Column(name, encode, lambda raw: None if raw is None else members[raw])


def text_array(name: str) -> Column:
    return Column(
        name,
        lambda label, values: [_text(f"{label}[]", v) for v in values],
        tuple,
    )


def int_array(name: str) -> Column:
    return Column(name, lambda label, values: [scalar(f"{label}[]", v) for v in values], tuple)


def enum_array(name: str, kind: type[enum.StrEnum]) -> Column:
    item = enum_column(name, kind)
    return Column(
        name,
        lambda label, values: [item.encode(f"{label}[]", v) for v in values],
        lambda raw: tuple(item.decode(v) for v in raw),
    )


def json_object(name: str) -> Column:
    return Column(name, json_value, lambda raw: MappingProxyType(dict(raw)))


def _key_rules() -> Column:
    def encode(label: str, rules: Any) -> Any:
        return json_value(
            label,
            [{"algorithm": KeyAlgorithm(r.algorithm).value, "min_size": r.min_size} for r in rules],
        )

    def decode(raw: Any) -> tuple[KeyRule, ...]:
        return tuple(KeyRule(KeyAlgorithm(r["algorithm"]), r["min_size"]) for r in raw)

    return Column("allowed_key_algorithms", encode, decode)


def _severity_map() -> Column:
    def encode(label: str, mapping: Any) -> Any:
        return json_value(
            label, {str(days): AlertSeverity(tier).value for days, tier in mapping.items()}
        )

    def decode(raw: Any) -> Mapping[int, AlertSeverity]:
        return MappingProxyType({int(days): AlertSeverity(tier) for days, tier in raw.items()})

    return Column("alert_severity_map", encode, decode)


def _alert_channels() -> Column:
    def encode(label: str, mapping: Any) -> Any:
        return json_value(
            label,
            {
                AlertSeverity(tier).value: [NotificationChannel(c).value for c in channels]
                for tier, channels in mapping.items()
            },
        )

    def decode(raw: Any) -> Mapping[AlertSeverity, tuple[NotificationChannel, ...]]:
        return MappingProxyType(
            {
                AlertSeverity(tier): tuple(NotificationChannel(c) for c in channels)
                for tier, channels in raw.items()
            }
        )

    return Column("alert_channels", encode, decode)


def as_is(*names: str) -> tuple[Column, ...]:
    """Columns stored and read back as they are (no codec)."""
    return tuple(Column(name) for name in names)


@dataclass(frozen=True, slots=True)
class Reference:
    """A foreign key: ``column`` names a row of ``table`` (deletes of that row are refused
    while the reference exists)."""

    column: str
    table: str


@dataclass(frozen=True, slots=True)
class TargetMapping:
    """A row of the certificate↔target mapping, which has no entity of its own."""

    certificate_id: str
    target_id: str


@dataclass(frozen=True, slots=True)
class Table(Generic[E]):
    """Where an entity lives and which constraints guard it.

    ``internal`` columns are stored but not part of the entity (sealed secrets, the agent
    key hash, the renewal due date); the operations that own them write them.
    """

    name: str
    kind: str
    entity: Callable[..., E]
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ("id",)
    uniques: tuple[tuple[str, ...], ...] = ()
    references: tuple[Reference, ...] = ()
    internal: tuple[str, ...] = ()
    stored: tuple[str, ...] = field(init=False)
    _decoders: tuple[tuple[str, Callable[[Any], Any] | None], ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.columns if c.stored)
        object.__setattr__(self, "stored", names)
        # Most columns come back as they are; skipping the identity call for them makes
        # decoding a page of 1,000 rows noticeably cheaper (see benchmarks/store.py).
        decoders = tuple(
            (c.name, None if c.decode is _identity else c.decode) for c in self.columns
        )
        object.__setattr__(self, "_decoders", decoders)

    def encode(self, entity: E) -> dict[str, Any]:
        """The stored column values of ``entity`` (internal columns not included)."""
        label = type(entity).__name__
        return {
            c.name: c.encode(f"{label}.{c.name}", getattr(entity, c.name))
            for c in self.columns
            if c.stored
        }

    def decode(self, row: Mapping[str, Any]) -> E:
        return self.entity(
            **{
                name: row[name] if decode is None else decode(row[name])
                for name, decode in self._decoders
            }
        )

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.key)


TEAMS: Final = Table(
    "teams",
    "team",
    Team,
    as_is("id", "name", "created_at", "updated_at", "description"),
    uniques=(("name",),),
)
OWNERS: Final = Table(
    "owners",
    "owner",
    Owner,
    as_is("id", "name", "email", "team_id"),
    references=(Reference("team_id", "teams"),),
)
PROFILES: Final = Table(
    "certificate_profiles",
    "certificate profile",
    CertificateProfile,
    (
        *as_is("id", "name", "description"),
        _key_rules(),
        Column("max_ttl_seconds"),
        enum_array("allowed_ekus", ExtendedKeyUsage),
        text_array("required_san_patterns"),
        *as_is("spiffe_uri_pattern", "allow_short_lived", "must_staple"),
        text_array("required_csr_attributes"),
        *as_is("requires_approval", "enabled"),
    ),
    uniques=(("name",),),
)
POLICIES: Final = Table(
    "renewal_policies",
    "renewal policy",
    RenewalPolicy,
    (
        *as_is("id", "name", "renewal_window_days", "auto_renew", "max_retries"),
        Column("retry_interval_seconds"),
        int_array("alert_thresholds_days"),
        _severity_map(),
        _alert_channels(),
        Column("certificate_profile_id"),
    ),
    uniques=(("name",),),
    references=(Reference("certificate_profile_id", "certificate_profiles"),),
)
ISSUERS: Final = Table(
    "issuers",
    "issuer",
    Issuer,
    (
        *as_is("id", "name"),
        enum_column("type", IssuerType),
        json_object("config"),
        *as_is("enabled", "last_tested_at"),
    ),
    uniques=(("name",),),
    internal=("encrypted_secret",),
)
AGENTS: Final = Table(
    "agents",
    "agent",
    Agent,
    (
        *as_is("id", "name", "hostname", "registered_at"),
        enum_column("status", AgentStatus),
        *as_is("last_heartbeat_at", "os", "architecture", "ip_address", "version"),
        *as_is("retired_at", "retired_reason"),
    ),
    uniques=(("name",), ("key_hash",)),
    internal=("key_hash",),
)
TARGETS: Final = Table(
    "deployment_targets",
    "target",
    Target,
    (
        *as_is("id", "name"),
        enum_column("type", TargetType),
        Column("agent_id"),
        json_object("config"),
        *as_is("enabled", "retired_at", "retired_reason"),
    ),
    uniques=(("agent_id", "name"),),
    references=(Reference("agent_id", "agents"),),
    internal=("encrypted_secret",),
)
CERTIFICATES: Final = Table(
    "managed_certificates",
    "certificate",
    ManagedCertificate,
    (
        *as_is("id", "name", "common_name", "owner_id", "issuer_id", "renewal_policy_id"),
        *as_is("created_at", "updated_at"),
        text_array("sans"),
        *as_is("environment", "team_id", "certificate_profile_id"),
        enum_column("status", CertificateStatus),
        Column("expires_at"),
        json_object("tags"),
        Column("target_ids", decode=tuple, stored=False),
        *as_is("last_renewal_at", "last_deployment_at", "revoked_at"),
        enum_column("revocation_reason", RevocationReason),
    ),
    uniques=(("name",),),
    references=(
        Reference("owner_id", "owners"),
        Reference("team_id", "teams"),
        Reference("issuer_id", "issuers"),
        Reference("renewal_policy_id", "renewal_policies"),
        Reference("certificate_profile_id", "certificate_profiles"),
    ),
    internal=("renewal_due_at",),
)
MAPPINGS: Final = Table(
    "certificate_target_mappings",
    "certificate-target mapping",
    TargetMapping,
    as_is("certificate_id", "target_id"),
    key=("certificate_id", "target_id"),
    references=(
        Reference("certificate_id", "managed_certificates"),
        Reference("target_id", "deployment_targets"),
    ),
)
VERSIONS: Final = Table(
    "certificate_versions",
    "certificate version",
    CertificateVersion,
    (
        *as_is("id", "certificate_id", "serial_number", "not_before", "not_after"),
        *as_is("fingerprint_sha256", "pem_chain"),
        enum_column("key_algorithm", KeyAlgorithm),
        *as_is("key_size", "created_at", "csr_pem"),
    ),
    uniques=(("fingerprint_sha256",),),
    references=(Reference("certificate_id", "managed_certificates"),),
)
JOBS: Final = Table(
    "jobs",
    "job",
    Job,
    (
        Column("id"),
        enum_column("type", JobType),
        Column("certificate_id"),
        enum_column("status", JobStatus),
        *as_is("created_at", "scheduled_at", "status_changed_at", "target_id", "agent_id"),
        *as_is("attempts", "max_attempts", "retry_interval_seconds", "last_error"),
        *as_is("next_retry_at", "started_at", "completed_at"),
        enum_column("verification_status", VerificationStatus),
        *as_is("verified_at", "verification_fingerprint", "verification_error"),
        Column("requested_by"),
    ),
    references=(
        Reference("certificate_id", "managed_certificates"),
        Reference("target_id", "deployment_targets"),
        Reference("agent_id", "agents"),
    ),
)
AUDIT: Final = Table(
    "audit_events",
    "audit event",
    AuditEvent,
    (
        *as_is("id", "actor"),
        enum_column("actor_type", ActorType),
        *as_is("action", "resource_type", "resource_id", "timestamp"),
        json_object("details"),
    ),
)
REVOCATIONS: Final = Table(
    "certificate_revocations",
    "revocation",
    Revocation,
    (
        *as_is("id", "certificate_id", "serial_number"),
        enum_column("reason", RevocationReason),
        *as_is("revoked_by", "revoked_at", "issuer_id", "issuer_notified"),
    ),
    uniques=(("issuer_id", "serial_number"),),
    references=(
        Reference("certificate_id", "managed_certificates"),
        Reference("issuer_id", "issuers"),
    ),
)

TABLES: Final[Mapping[str, Table[Any]]] = MappingProxyType(
    {
        t.name: t
        for t in (
            TEAMS,
            OWNERS,
            PROFILES,
            POLICIES,
            ISSUERS,
            AGENTS,
            TARGETS,
            CERTIFICATES,
            MAPPINGS,
            VERSIONS,
            JOBS,
            AUDIT,
            REVOCATIONS,
        )
    }
)


# -- messages shared by both stores -----------------------------------------------------


def not_found(table: Table[Any], key: Any) -> str:
    return f"{table.kind} {key!r} does not exist; check the id."


def duplicate(table: Table[Any], columns: tuple[str, ...], row: Mapping[str, Any]) -> str:
    if columns == table.key:
        shown = ", ".join(repr(row[c]) for c in columns)
        return f"{table.kind} {shown} already exists; use a new id."
    if columns == ("key_hash",):
        return f"{table.kind} key hash is already registered; generate a new agent key."
    shown = ", ".join(f"{c}={row[c]!r}" for c in columns)
    return f"{table.kind} with {shown} already exists; choose another {columns[-1]}."


def missing_reference(table: Table[Any], ref: Reference) -> str:
    target = TABLES[ref.table].kind
    return (
        f"{table.kind} {ref.column} names no existing {target}; "
        f"create the {target} first or fix {ref.column}."
    )


def still_referenced(table: Table[Any], key: Any, by: Table[Any], ref: Reference) -> str:
    return (
        f"{table.kind} {key!r} is still referenced by {by.kind} {ref.column}; "
        "remove those references first."
    )


def referencing(table: Table[Any]) -> tuple[tuple[Table[Any], Reference], ...]:
    """Every (table, reference) pointing at ``table``, for delete checks."""
    return tuple(
        (other, ref)
        for other in TABLES.values()
        for ref in other.references
        if ref.table == table.name
    )


def retirement_blocked(agent_id: str, deps: AgentDependencies) -> str:
    return (
        f"agent {agent_id!r} still has {deps.targets} targets, {deps.certificates} "
        f"certificates and {deps.jobs} active jobs; move or retire them first, or retire "
        "with cascade."
    )


def status_changed(cert_id: str, current: str, expected: str) -> str:
    return (
        f"certificate {cert_id!r} is {current}, not the expected {expected}; reload it and "
        "decide again."
    )


def already_archived(cert_id: str) -> str:
    return f"certificate {cert_id!r} is already archived; nothing to do."


def already_revoked(cert_id: str) -> str:
    return f"certificate {cert_id!r} is already revoked; nothing to do."


def certificate_closed(cert_id: str, status: str) -> str:
    return (
        f"certificate {cert_id!r} is {status}; it takes no new version (a signing that "
        "raced its revocation or archiving is discarded)."
    )


def job_moved(job_id: str, current: str) -> str:
    return (
        f"job {job_id!r} changed since it was read (it is now {current}); reload it and "
        "apply the event again."
    )


UNKNOWN_AGENT_KEY: Final = "no agent has this key; register the agent or use its current key."


def agent_retired(agent_id: str) -> str:
    return f"agent {agent_id!r} is retired; register a new agent instead."


def heartbeat_moved(agent_id: str) -> str:
    return (
        f"agent {agent_id!r} sent a heartbeat since seen_heartbeat_at; reload it and decide again."
    )
