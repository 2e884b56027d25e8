"""Moving jobs: every status change goes through ``apply`` so effects are never skipped.

``apply`` asks ``certctl.core.jobs.transition`` for the next job and its effects, turns
the effects into store writes (Deployment fan-out, ``last_deployment_at``, audit rows,
the permanent-failure alert) and persists all of it in one compare-and-set
``transition_job``: a concurrent writer makes it fail with ``Conflict`` and nothing of
the losing attempt is stored. The scheduler's job loops live here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from certctl.core import jobs as core
from certctl.core.model import (
    ACTIVE_JOB_STATUSES,
    CLOSED_CERTIFICATE_STATUSES,
    CertificateStatus,
    Job,
    JobStatus,
    JobType,
    JSONValue,
    ManagedCertificate,
    RenewalPolicy,
)
from certctl.core.renewal import expiry_status, renewal_due_at
from certctl.services import audit, metrics
from certctl.services.context import SYSTEM, Actor, Services
from certctl.services.errors import Forbidden, StateConflict
from certctl.services.profiles import profile_of
from certctl.store.base import JobQuery, Page
from certctl.store.errors import Conflict, NotFound

BATCH = 100
"""Jobs one scheduler tick handles per loop; the next tick takes the rest."""

SIGNING_STALL = timedelta(minutes=10)
"""A key job is Running on the control plane only while a CSR is checked and signed, which
takes milliseconds; one Running this long was left by a control plane that stopped
mid-issuance, and nothing else would ever move it (nor let its certificate renew)."""


async def apply(
    services: Services, job: Job, event: core.Event, actor: Actor, **changes: Any
) -> Job:
    """Apply ``event`` to ``job`` and persist it with its effects.

    ``changes`` are extra fields recorded with the transition (a deployment's
    verification result). Raises ``IllegalTransition`` if the event does not apply and
    ``Conflict`` if the job moved since it was read.
    """
    now = services.now()
    new, effects = core.transition(job, event, now, jitter_draw=services.jitter())
    if changes:
        new = replace(new, **changes)
    records = [e for e in effects if isinstance(e, core.AuditRecord)]
    events = audit.job_events(services, actor, records, job.certificate_id)
    create: list[Job] = []
    deployed_at: datetime | None = None
    for effect in effects:
        match effect:
            case core.CreateDeploymentJobs(certificate_id=cert_id):
                create.extend(await deployment_jobs(services, cert_id))
            case core.RecordDeployment(deployed_at=at):
                deployed_at = at
            case core.JobFailedPermanently():
                events.append(
                    audit.event(
                        services,
                        actor,
                        "job_failed_permanently",
                        "job",
                        job.id,
                        details={
                            "type": job.type.value,
                            "certificate_id": job.certificate_id,
                            "attempts": effect.attempts,
                            "last_error": effect.last_error,
                        },
                    )
                )
    stored = await services.store.transition_job(
        job, new, create=create, deployed_at=deployed_at, audit=events
    )
    await announce(services, [stored, *create])
    metrics.JOB_TRANSITIONS.labels(stored.type.value, stored.status.value).inc()
    for effect in effects:
        if isinstance(effect, core.JobFailedPermanently):
            metrics.JOBS_FAILED_PERMANENTLY.labels(effect.job_type.value).inc()
            if effect.job_type is not JobType.DEPLOYMENT:
                await _certificate_failed(services, effect.certificate_id)
    return stored


async def deployment_jobs(
    services: Services, cert_id: str, *, target_id: str | None = None
) -> list[Job]:
    """One Pending Deployment job per enabled target of the certificate (or just one)."""
    cert = await services.store.get_certificate(cert_id)
    policy = await services.store.get_policy(cert.renewal_policy_id)
    targets = await services.store.list_targets(certificate_id=cert_id)
    return [
        core.create_job(
            job_id=services.new_id("job"),
            job_type=JobType.DEPLOYMENT,
            certificate_id=cert_id,
            policy=policy,
            now=services.now(),
            target_id=target.id,
            agent_id=target.agent_id,
        )
        for target in targets
        if target.enabled
        and target.retired_at is None
        and (target_id is None or target.id == target_id)
    ]


# A certificate already renewing keeps its status; a closed one is refused before here.
_RENEWING_OR_CLOSED = CLOSED_CERTIFICATE_STATUSES | {CertificateStatus.RENEWAL_IN_PROGRESS}


def key_job(
    services: Services,
    cert: ManagedCertificate,
    policy: RenewalPolicy,
    job_type: JobType,
    *,
    requires_approval: bool,
    requested_by: Actor,
) -> Job:
    """An Issuance or Renewal job, waiting for its agent's CSR (or for an approval first).

    Keys are generated on agents, so the control plane has nothing to do for these jobs
    until a CSR arrives: they start AwaitingCSR and the agent sees them on its next poll.
    """
    return core.create_job(
        job_id=services.new_id("job"),
        job_type=job_type,
        certificate_id=cert.id,
        policy=policy,
        now=services.now(),
        status=JobStatus.AWAITING_APPROVAL if requires_approval else JobStatus.AWAITING_CSR,
        requested_by=requested_by.name,
    )


async def start_key_job(
    services: Services,
    actor: Actor,
    cert: ManagedCertificate,
    kind: JobType,
    *,
    approval_owed: bool = False,
    **details: JSONValue,
) -> Job | None:
    """Create an Issuance or Renewal job for ``cert`` with its audit event, unless a key
    job is already active (then ``None``: one CSR at a time per certificate).

    ``approval_owed``: the job replaces one that awaited approval, so it awaits one too.
    A Renewal moves the certificate to RenewalInProgress in the same transaction, from
    the status in ``cert`` (``Conflict`` if it changed since): a crash can never leave
    the job without the status or the status without the job.
    """
    if await active_jobs(services, cert.id, JobType.ISSUANCE, JobType.RENEWAL):
        return None
    policy = await services.store.get_policy(cert.renewal_policy_id)
    profile = await profile_of(services, cert)
    job = key_job(
        services,
        cert,
        policy,
        kind,
        requires_approval=profile.requires_approval or approval_owed,
        requested_by=actor,
    )
    action = "renewal_job_created" if kind is JobType.RENEWAL else "issuance_job_created"
    events = [
        audit.event(
            services, actor, action, "certificate", cert.id, details={"job": job.id, **details}
        )
    ]
    if kind is JobType.RENEWAL and cert.status not in _RENEWING_OR_CLOSED:
        events.append(
            audit.event(
                services,
                actor,
                "renewal_triggered",
                "certificate",
                cert.id,
                details={"job": job.id, "from": cert.status.value},
            )
        )
        await services.store.set_certificate_status(
            cert.id,
            CertificateStatus.RENEWAL_IN_PROGRESS,
            expected=cert.status,
            at=services.now(),
            audit=events,
            jobs=[job],
        )
    else:
        await services.store.create_jobs([job], audit=events)
    await announce(services, [job])
    return job


async def announce(services: Services, jobs: Sequence[Job]) -> None:
    """Wake the long polls of the agents ``jobs`` (just committed) are now work for: the
    agent of each Pending deployment, and for a key job awaiting a CSR the agents of its
    certificate's targets."""
    ids = {
        j.agent_id
        for j in jobs
        if j.type is JobType.DEPLOYMENT and j.status is JobStatus.PENDING and j.agent_id
    }
    for cert_id in {j.certificate_id for j in jobs if j.status is JobStatus.AWAITING_CSR}:
        ids.update(await certificate_agents(services, cert_id))
    services.wakeups.announce(ids)


async def certificate_agents(services: Services, cert_id: str) -> set[str]:
    """The agents of the certificate's targets: who is shown its AwaitingCSR jobs."""
    targets = await services.store.list_targets(certificate_id=cert_id)
    return {t.agent_id for t in targets if t.agent_id}


async def active_jobs(services: Services, cert_id: str, *types: JobType) -> tuple[Job, ...]:
    page = await services.store.list_jobs(
        JobQuery(statuses=ACTIVE_JOB_STATUSES, types=frozenset(types), certificate_id=cert_id),
        limit=1000,
    )
    return page.items


async def cancel(services: Services, actor: Actor, job_id: str) -> Job:
    job = await services.store.get_job(job_id)
    try:
        cancelled = await apply(services, job, core.Cancel(), actor)
    except core.IllegalTransition as exc:
        raise StateConflict(f"{exc} Only active or retrying jobs can be cancelled.") from exc
    if job.type is not JobType.DEPLOYMENT:
        await _restore_status(services, job.certificate_id)
    return cancelled


async def decide_approval(services: Services, actor: Actor, job_id: str, *, approve: bool) -> Job:
    """Approve or reject a job AwaitingApproval, by a key other than the one that asked.

    The decision applies to the job as it was created: a profile edited since (approval
    turned off, say) changes nothing for jobs already waiting.
    """
    job = await services.store.get_job(job_id)
    if job.requested_by and job.requested_by == actor.name:
        raise Forbidden(
            f"job {job_id} was requested by key {actor.name!r}, which may not also decide it "
            "(two-person rule); have another admin key approve or reject it."
        )
    event: core.Event = core.Approved() if approve else core.Rejected()
    try:
        return await apply(services, job, event, actor)
    except core.IllegalTransition as exc:
        raise StateConflict(str(exc)) from exc


# -- scheduler loops ------------------------------------------------------------------


async def process_pending(services: Services) -> int:
    """Claim the control plane's Pending jobs (retried or approved Issuance/Renewal) and
    hand them to the agents: they need a fresh CSR, so they go back to AwaitingCSR."""
    claimed = await services.store.claim_jobs(agent_id=None, now=services.now(), limit=BATCH)
    for job in claimed:
        await _quietly(apply(services, job, core.CSRRequested(), SYSTEM))
    return len(claimed)


async def retry_due(services: Services) -> int:
    due = await services.store.jobs_due_for_retry(services.now(), limit=BATCH)
    for job in due:
        await _quietly(apply(services, job, core.RetryDue(), SYSTEM))
    return len(due)


async def reap_timeouts(services: Services) -> int:
    now = services.now()
    limits = services.timeouts
    stale = await services.store.timed_out_jobs(
        now,
        awaiting_csr=limits.awaiting_csr,
        awaiting_approval=limits.awaiting_approval,
        limit=BATCH,
    )
    for job in stale:
        event = core.timeout_event(
            job, now, awaiting_csr=limits.awaiting_csr, awaiting_approval=limits.awaiting_approval
        )
        if event is not None:
            await _quietly(apply(services, job, event, SYSTEM))
    return len(stale) + await _reap_stalled_signing(services)


async def _reap_stalled_signing(services: Services) -> int:
    """Fail (so retry) key jobs whose signing was interrupted; see ``SIGNING_STALL``."""
    now = services.now()
    running = await services.store.list_jobs(
        JobQuery(
            statuses=frozenset({JobStatus.RUNNING}),
            types=frozenset({JobType.ISSUANCE, JobType.RENEWAL}),
        ),
        limit=BATCH,
    )
    stalled = [job for job in running.items if now - job.status_changed_at > SIGNING_STALL]
    for job in stalled:
        reason = (
            f"signing was interrupted (Running for more than {SIGNING_STALL}, the control "
            "plane probably stopped); the agent will be asked for a new CSR"
        )
        await _quietly(apply(services, job, core.Failure(reason), SYSTEM))
    return len(stalled)


async def _quietly(step: Awaitable[object]) -> None:
    """Run one unit of a loop; a unit another writer got to first is simply skipped."""
    with contextlib.suppress(Conflict, NotFound, core.IllegalTransition):
        await step


async def _certificate_failed(services: Services, cert_id: str) -> None:
    """A key job gave up: the certificate shows Failed until an operator renews it."""
    cert = await services.store.get_certificate(cert_id)
    if cert.status in (CertificateStatus.PENDING, CertificateStatus.RENEWAL_IN_PROGRESS):
        await _quietly(
            services.store.set_certificate_status(
                cert_id, CertificateStatus.FAILED, expected=cert.status, at=services.now()
            )
        )


async def _restore_status(services: Services, cert_id: str) -> None:
    """A cancelled renewal hands the certificate back to the clock-driven status."""
    cert = await services.store.get_certificate(cert_id)
    if cert.status is not CertificateStatus.RENEWAL_IN_PROGRESS:
        return
    latest = await services.store.latest_version(cert_id)
    if latest is None:
        status = CertificateStatus.PENDING
    else:
        policy = await services.store.get_policy(cert.renewal_policy_id)
        due = renewal_due_at(latest.not_before, latest.not_after, policy)
        status = expiry_status(services.now(), latest.not_after, due)
    await _quietly(
        services.store.set_certificate_status(
            cert_id, status, expected=cert.status, at=services.now()
        )
    )


async def get_job(services: Services, job_id: str) -> Job:
    return await services.store.get_job(job_id)


async def list_jobs(
    services: Services,
    *,
    statuses: Sequence[JobStatus] | None = None,
    types: Sequence[JobType] | None = None,
    certificate_id: str | None = None,
    agent_id: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[Job]:
    """One page of jobs; a filter left ``None`` (or empty) matches any."""
    query = JobQuery(
        statuses=frozenset(statuses) if statuses else None,
        types=frozenset(types) if types else None,
        certificate_id=certificate_id,
        agent_id=agent_id,
    )
    return await services.store.list_jobs(query, limit=limit, cursor=cursor)
