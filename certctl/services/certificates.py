"""Managed certificates: create (with its Issuance job), edit, archive, renew, deploy, export.

A certificate's private key lives on the agent that generates its CSR, so every target of
one certificate must belong to the same agent: a target on a second agent could never be
given the key. The earlier implementation allowed it and left those deployments failing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from certctl.core.model import (
    CLOSED_CERTIFICATE_STATUSES,
    CertificateStatus,
    CertificateVersion,
    JobStatus,
    JobType,
    ManagedCertificate,
    Target,
)
from certctl.services import audit, jobs
from certctl.services.context import Actor, Services
from certctl.services.errors import InvalidInput, StateConflict
from certctl.services.profiles import profile_of
from certctl.store.base import CertificateQuery, Page
from certctl.store.errors import Conflict, NotFound

_T = TypeVar("_T")

KEY_JOBS = (JobType.ISSUANCE, JobType.RENEWAL)


@dataclass(frozen=True, slots=True)
class CertificateInput:
    """The operator-editable fields; ``None`` on update means "leave as is"."""

    name: str | None = None
    common_name: str | None = None
    sans: Sequence[str] | None = None
    owner_id: str | None = None
    team_id: str | None = None
    issuer_id: str | None = None
    renewal_policy_id: str | None = None
    certificate_profile_id: str | None = None
    environment: str | None = None
    tags: Mapping[str, str] | None = None
    target_ids: Sequence[str] | None = None


REQUIRED = ("name", "common_name", "owner_id", "issuer_id", "renewal_policy_id")


async def create(
    services: Services, actor: Actor, data: CertificateInput
) -> tuple[ManagedCertificate, tuple[str, ...]]:
    """Insert the certificate and, when it has targets, its Issuance job; returns the
    certificate and the ids of the jobs created."""
    for name in REQUIRED:
        if not getattr(data, name):
            raise InvalidInput(f"{name} is required; give the certificate its {name}.", field=name)
    now = services.now()
    cert = _apply_input(
        ManagedCertificate(
            id=services.new_id("cert"),
            name="",
            common_name="",
            owner_id="",
            issuer_id="",
            renewal_policy_id="",
            created_at=now,
            updated_at=now,
        ),
        data,
    )
    await _check_references(services, cert)
    profile = await profile_of(services, cert)
    created_jobs = []
    if cert.target_ids:
        policy = await services.store.get_policy(cert.renewal_policy_id)
        created_jobs.append(
            jobs.key_job(
                services,
                cert,
                policy,
                JobType.ISSUANCE,
                requires_approval=profile.requires_approval,
                requested_by=actor,
            )
        )
    stored = await services.store.create_certificate(
        cert,
        jobs=created_jobs,
        audit=[
            audit.event(
                services,
                actor,
                "certificate_created",
                "certificate",
                cert.id,
                details={"common_name": cert.common_name, "jobs": [j.id for j in created_jobs]},
            )
        ],
    )
    await jobs.announce(services, created_jobs)
    return stored, tuple(j.id for j in created_jobs)


async def update(
    services: Services, actor: Actor, cert_id: str, data: CertificateInput
) -> ManagedCertificate:
    current = await services.store.get_certificate(cert_id)
    if current.status is CertificateStatus.ARCHIVED:
        raise StateConflict(f"certificate {cert_id} is archived; create a new one instead.")
    cert = replace(_apply_input(current, data), updated_at=services.now())
    await _check_references(services, cert)
    stored = await services.store.update_certificate(
        cert,
        audit=[
            audit.event(
                services,
                actor,
                "certificate_updated",
                "certificate",
                cert_id,
                details={"fields": sorted(k for k, v in vars_of(data).items() if v is not None)},
            )
        ],
    )
    if stored.target_ids and await services.store.latest_version(cert_id) is None:
        await jobs.start_key_job(services, actor, stored, JobType.ISSUANCE)
    if set(stored.target_ids) - set(current.target_ids):
        # A newly mapped target's agent is shown the certificate's AwaitingCSR jobs now.
        services.wakeups.announce(await jobs.certificate_agents(services, cert_id))
    return stored


async def archive(services: Services, actor: Actor, cert_id: str) -> ManagedCertificate:
    stored = await services.store.archive_certificate(
        cert_id,
        services.now(),
        audit=[audit.event(services, actor, "certificate_archived", "certificate", cert_id)],
    )
    for job in await jobs.active_jobs(services, cert_id, *JobType):
        await jobs.cancel(services, actor, job.id)
    return stored


async def renew(services: Services, actor: Actor, cert_id: str, *, force: bool) -> str:
    """Start a Renewal (or, before the first version, Issuance) job; returns its id.

    Without ``force`` a renewal already under way is a conflict; with it, the running
    key job is cancelled and a new one replaces it. A replaced job that was awaiting
    approval passes its approval on: the new job awaits one too, whatever the profile
    says now, so a force can never skip an approval that was owed.
    """
    cert = await services.store.get_certificate(cert_id)
    if cert.status in CLOSED_CERTIFICATE_STATUSES:
        raise StateConflict(f"certificate {cert_id} is {cert.status} and cannot be renewed.")
    if not cert.target_ids:
        raise StateConflict(
            f"certificate {cert_id} has no targets, so no agent can generate its key; "
            "map a target first."
        )
    existing = await jobs.active_jobs(services, cert_id, *KEY_JOBS)
    if existing and not force:
        raise StateConflict(
            f"certificate {cert_id} already has {existing[0].type} job {existing[0].id} "
            f"({existing[0].status}); wait for it or pass force=true."
        )
    owed = any(old.status is JobStatus.AWAITING_APPROVAL for old in existing)
    for old in existing:
        await jobs.cancel(services, actor, old.id)
    has_version = await services.store.latest_version(cert_id) is not None
    kind = JobType.RENEWAL if has_version else JobType.ISSUANCE
    # Cancelling hands the certificate back its clock-driven status: start from that one.
    cert = await services.store.get_certificate(cert_id) if existing else cert
    try:
        started = await jobs.start_key_job(services, actor, cert, kind, approval_owed=owed)
    except Conflict:
        started = None
    if started is None:
        raise StateConflict(
            f"certificate {cert_id} got another key job or status meanwhile; list its jobs "
            "and retry."
        )
    return started.id


async def deploy(
    services: Services, actor: Actor, cert_id: str, *, target_id: str | None
) -> tuple[str, ...]:
    """Deployment jobs for the newest version: to every target, or to one of them."""
    cert = await services.store.get_certificate(cert_id)
    if cert.status in CLOSED_CERTIFICATE_STATUSES:
        raise StateConflict(f"certificate {cert_id} is {cert.status} and cannot be deployed.")
    if target_id is not None and target_id not in cert.target_ids:
        raise InvalidInput(
            f"target_id {target_id} is not a target of certificate {cert_id}; map it first.",
            field="target_id",
        )
    if await services.store.latest_version(cert_id) is None:
        raise StateConflict(
            f"certificate {cert_id} has no issued version yet; wait for its Issuance job."
        )
    created = await jobs.deployment_jobs(services, cert_id, target_id=target_id)
    if not created:
        raise StateConflict(f"certificate {cert_id} has no enabled target to deploy to.")
    await services.store.create_jobs(
        created,
        audit=[
            audit.event(
                services,
                actor,
                "deployment_triggered",
                "certificate",
                cert_id,
                details={"jobs": [j.id for j in created]},
            )
        ],
    )
    await jobs.announce(services, created)
    return tuple(j.id for j in created)


@dataclass(frozen=True, slots=True)
class PemExport:
    """``GET /certificates/{id}/export/pem``: the newest version's PEM, leaf and chain apart
    as most servers want them, and whole as the rest do."""

    certificate_id: str
    version_id: str
    cert_pem: str
    chain_pem: str
    full_pem: str


async def newest_version(services: Services, cert_id: str) -> CertificateVersion:
    """The certificate's newest version; ``NotFound`` before its first issuance."""
    latest = await services.store.latest_version(cert_id)
    if latest is None:
        raise NotFound(f"certificate {cert_id} has no issued version yet.")
    return latest


async def export_pem(services: Services, cert_id: str) -> PemExport:
    latest = await newest_version(services, cert_id)
    leaf, chain = split_chain(latest.pem_chain)
    return PemExport(cert_id, latest.id, leaf, chain, latest.pem_chain)


def split_chain(pem_chain: str) -> tuple[str, str]:
    """``(leaf, chain)``: the first PEM block, and the rest as servers send it after it."""
    marker = "-----END CERTIFICATE-----"
    end = pem_chain.find(marker)
    if end < 0:
        return pem_chain, ""
    end += len(marker)
    return pem_chain[:end].strip() + "\n", pem_chain[end:].strip() + "\n"


def vars_of(data: CertificateInput) -> dict[str, object]:
    return {name: getattr(data, name) for name in CertificateInput.__dataclass_fields__}


def _apply_input(cert: ManagedCertificate, data: CertificateInput) -> ManagedCertificate:
    changes: dict[str, Any] = {k: v for k, v in vars_of(data).items() if v is not None}
    for name in ("sans", "target_ids"):
        if name in changes:
            changes[name] = tuple(dict.fromkeys(changes[name]))
    if "tags" in changes:
        changes["tags"] = dict(changes["tags"])
    return replace(cert, **changes)


async def _check_references(services: Services, cert: ManagedCertificate) -> None:
    """Turn a dangling reference into a 400 naming the field, before anything is written."""
    store = services.store
    lookups: list[tuple[str, str | None, Callable[[str], Awaitable[object]]]] = [
        ("owner_id", cert.owner_id, store.get_owner),
        ("issuer_id", cert.issuer_id, store.get_issuer),
        ("renewal_policy_id", cert.renewal_policy_id, store.get_policy),
        ("team_id", cert.team_id, store.get_team),
        ("certificate_profile_id", cert.certificate_profile_id, store.get_profile),
    ]
    for field, value, get in lookups:
        if value is not None:
            await _exists(field, value, get)
    targets: list[Target] = []
    for target_id in cert.target_ids:
        targets.append(await _exists("target_ids", target_id, store.get_target))
    agents = sorted({t.agent_id for t in targets})
    if len(agents) > 1:
        raise InvalidInput(
            f"target_ids belong to agents {', '.join(agents)}; a certificate's key lives on one "
            "agent, so map only targets of one agent (create a second certificate for the other).",
            field="target_ids",
        )
    for target in targets:
        if target.retired_at is not None:
            raise InvalidInput(
                f"target_ids: target {target.id} is retired; map an active target.",
                field="target_ids",
            )


async def _exists(field: str, value: str, get: Callable[[str], Awaitable[_T]]) -> _T:
    try:
        return await get(value)
    except NotFound:
        raise InvalidInput(
            f"{field} {value!r} does not exist; create it first.", field=field
        ) from None


async def get_certificate(services: Services, cert_id: str) -> ManagedCertificate:
    return await services.store.get_certificate(cert_id)


async def list_certificates(
    services: Services,
    *,
    statuses: Sequence[CertificateStatus] | None = None,
    owner_id: str | None = None,
    team_id: str | None = None,
    environment: str | None = None,
    issuer_id: str | None = None,
    expiring_before: datetime | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[ManagedCertificate]:
    """One page of certificates; a filter left ``None`` (or no statuses) matches any."""
    query = CertificateQuery(
        statuses=frozenset(statuses) if statuses else None,
        owner_id=owner_id,
        team_id=team_id,
        environment=environment,
        issuer_id=issuer_id,
        expiring_before=expiring_before,
    )
    return await services.store.list_certificates(query, limit=limit, cursor=cursor)


async def list_versions(services: Services, cert_id: str) -> Sequence[CertificateVersion]:
    """The certificate's versions; ``NotFound`` for an unknown certificate, not ``[]``."""
    await services.store.get_certificate(cert_id)
    return await services.store.list_versions(cert_id)
