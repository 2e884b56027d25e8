"""The job state machine: ``transition(job, event, now) -> (job, effects)``.

Every status change of a job goes through ``transition``, so the rules below hold whichever
shell (scheduler, API handler, agent report, simulator) caused it. The function is pure: the
caller persists the returned job and acts on the returned effects. An event that is not legal
in the job's current state raises ``IllegalTransition`` and changes nothing.

Differences from the earlier implementation, on purpose:

* ``attempts`` grows on every failure and ``max_attempts`` is honoured; a failure below the
  limit schedules the retry with exponential backoff starting at the policy's retry interval,
  a failure at the limit fails the job for good and asks for an alert.
* A job that fails while awaiting approval is never retried: a retry re-enters Pending and
  would run the job without the approval it was waiting for.
* Deployment jobs are claimed only by their agent and Issuance/Renewal jobs only by the
  control plane, so a server-side claim can never strand an agent's job in Running.
* ``started_at`` and ``completed_at`` are maintained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import ClassVar, Final

from certctl.core.backoff import Backoff
from certctl.core.clock import require_aware
from certctl.core.errors import CertctlError
from certctl.core.model import (
    ACTIVE_JOB_STATUSES,
    RETRY_INTERVAL_SECONDS_RANGE,
    TERMINAL_JOB_STATUSES,
    Job,
    JobStatus,
    JobType,
    RenewalPolicy,
)

RETRY_DELAY_CAP_SECONDS: Final = RETRY_INTERVAL_SECONDS_RANGE[1]
"""Longest wait between retries, one day: long enough to ride out an issuer outage, short
enough that doubling never pushes a retry past a renewal window; it is also the largest
retry interval a policy may set, so every policy's backoff starts at or below it."""

RETRY_JITTER: Final = 0.1
"""Up to 10% shorter delays, so jobs that failed together (an issuer outage) spread out."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A worker took a Pending job. ``agent_id`` is the claiming agent, ``None`` for the
    control plane itself."""

    agent_id: str | None = None
    action: ClassVar[str] = "job_claimed"


@dataclass(frozen=True, slots=True)
class CSRRequested:
    """The control plane needs the agent to generate the key and send a CSR."""

    action: ClassVar[str] = "job_awaiting_csr"


@dataclass(frozen=True, slots=True)
class CSRSubmitted:
    action: ClassVar[str] = "csr_submitted"


@dataclass(frozen=True, slots=True)
class Succeeded:
    action: ClassVar[str] = "job_completed"


@dataclass(frozen=True, slots=True)
class Failure:
    """Issuer error, CSR or profile rejection, or a failure the agent reported."""

    error: str
    action: ClassVar[str] = "job_failed"


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The job waited longer than ``limit`` for a CSR or an approval."""

    limit: timedelta
    action: ClassVar[str] = "job_timeout"


@dataclass(frozen=True, slots=True)
class AgentOffline:
    """The agent running the job stopped heartbeating, or was retired, so it cannot finish."""

    agent_id: str
    last_heartbeat_at: datetime | None
    retired_at: datetime | None = None
    action: ClassVar[str] = "job_offline_agent_reap"


@dataclass(frozen=True, slots=True)
class RetryDue:
    action: ClassVar[str] = "job_retry"


@dataclass(frozen=True, slots=True)
class Approved:
    action: ClassVar[str] = "job_approved"


@dataclass(frozen=True, slots=True)
class Rejected:
    action: ClassVar[str] = "job_rejected"


@dataclass(frozen=True, slots=True)
class Cancel:
    action: ClassVar[str] = "job_cancelled"


Event = (
    Claimed
    | CSRRequested
    | CSRSubmitted
    | Succeeded
    | Failure
    | TimedOut
    | AgentOffline
    | RetryDue
    | Approved
    | Rejected
    | Cancel
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Every transition is audited under the event's action name; the shell adds the actor."""

    action: str
    job_id: str
    from_status: JobStatus
    to_status: JobStatus
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CreateDeploymentJobs:
    """A new certificate version exists: one Deployment job per mapped target is due."""

    certificate_id: str


@dataclass(frozen=True, slots=True)
class RecordDeployment:
    """Set the certificate's ``last_deployment_at``."""

    certificate_id: str
    target_id: str | None
    deployed_at: datetime


@dataclass(frozen=True, slots=True)
class JobFailedPermanently:
    """The job will not run again (attempts exhausted, or it failed awaiting approval):
    raise an alert, because nothing else will ever notice."""

    job_id: str
    job_type: JobType
    certificate_id: str
    attempts: int
    last_error: str


Effect = AuditRecord | CreateDeploymentJobs | RecordDeployment | JobFailedPermanently

CREATION_STATES: Final = frozenset(
    {JobStatus.PENDING, JobStatus.AWAITING_CSR, JobStatus.AWAITING_APPROVAL}
)
"""States a job may be created in: queued, waiting for the agent's CSR, or for approval."""

_COMPLETION_STATES: Final = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

_RULES: Final[tuple[tuple[type[Event], frozenset[JobStatus], JobStatus], ...]] = (
    (Claimed, frozenset({JobStatus.PENDING}), JobStatus.RUNNING),
    (CSRRequested, frozenset({JobStatus.RUNNING}), JobStatus.AWAITING_CSR),
    (CSRSubmitted, frozenset({JobStatus.AWAITING_CSR}), JobStatus.RUNNING),
    (Succeeded, frozenset({JobStatus.RUNNING}), JobStatus.COMPLETED),
    (Failure, ACTIVE_JOB_STATUSES, JobStatus.FAILED),
    (TimedOut, frozenset({JobStatus.AWAITING_CSR, JobStatus.AWAITING_APPROVAL}), JobStatus.FAILED),
    (AgentOffline, frozenset({JobStatus.RUNNING}), JobStatus.FAILED),
    (RetryDue, frozenset({JobStatus.FAILED}), JobStatus.PENDING),
    (Approved, frozenset({JobStatus.AWAITING_APPROVAL}), JobStatus.PENDING),
    (Rejected, frozenset({JobStatus.AWAITING_APPROVAL}), JobStatus.CANCELLED),
    (Cancel, ACTIVE_JOB_STATUSES | {JobStatus.FAILED}, JobStatus.CANCELLED),
)

TRANSITIONS: Final[Mapping[tuple[JobStatus, type[Event]], JobStatus]] = MappingProxyType(
    {(source, event): target for event, sources, target in _RULES for source in sources}
)
"""Which state each event leads to from each state it is legal in. Guards in ``transition``
may still refuse a listed pair (a retry that is not due, a claim by the wrong agent); an
unlisted pair is always refused."""


class IllegalTransition(CertctlError, ValueError):
    """An event that the job's current state (or a guard on it) does not allow."""

    def __init__(self, job: Job, event: Event, reason: str) -> None:
        self.job_id = job.id
        self.status = job.status
        self.event = type(event).__name__
        super().__init__(f"Job {job.id} is {job.status} and cannot take {self.event}: {reason}.")


def create_job(
    *,
    job_id: str,
    job_type: JobType,
    certificate_id: str,
    policy: RenewalPolicy,
    now: datetime,
    status: JobStatus = JobStatus.PENDING,
    target_id: str | None = None,
    agent_id: str | None = None,
    requested_by: str = "",
) -> Job:
    """A new job, with its retry budget taken from ``policy``.

    Only Issuance and Renewal jobs can start awaiting a CSR or an approval: a Deployment
    ships an existing version to one target and has nothing to sign or approve.
    """
    require_aware(now, "now")
    if status not in CREATION_STATES:
        raise ValueError(f"Job {job_id} status {status} is not a starting state; use Pending.")
    if job_type is JobType.DEPLOYMENT and status is not JobStatus.PENDING:
        raise ValueError(f"Job {job_id} is a Deployment created as {status}; create it Pending.")
    if job_type is JobType.DEPLOYMENT and target_id is None:
        raise ValueError(f"Job {job_id} is a Deployment without target_id; pass its target.")
    return Job(
        id=job_id,
        type=job_type,
        certificate_id=certificate_id,
        status=status,
        created_at=now,
        scheduled_at=now,
        status_changed_at=now,
        target_id=target_id,
        agent_id=agent_id,
        max_attempts=policy.max_attempts,
        retry_interval_seconds=policy.retry_interval_seconds,
        requested_by=requested_by,
    )


def is_retry_due(job: Job, now: datetime) -> bool:
    """True when the retry loop should move this Failed job back to Pending."""
    return (
        job.status is JobStatus.FAILED
        and job.next_retry_at is not None
        and job.attempts < job.max_attempts
        and now >= job.next_retry_at
    )


def is_final(job: Job) -> bool:
    """True when no event can move the job any more."""
    return job.status in TERMINAL_JOB_STATUSES or (
        job.status is JobStatus.FAILED and job.next_retry_at is None
    )


def timeout_event(
    job: Job, now: datetime, *, awaiting_csr: timedelta, awaiting_approval: timedelta
) -> TimedOut | None:
    """The reaper's decision: ``TimedOut`` once the job has waited longer than its limit."""
    limits = {JobStatus.AWAITING_CSR: awaiting_csr, JobStatus.AWAITING_APPROVAL: awaiting_approval}
    limit = limits.get(job.status)
    if limit is None or now - job.status_changed_at <= limit:
        return None
    return TimedOut(limit)


def transition(
    job: Job, event: Event, now: datetime, *, jitter_draw: float = 0.0
) -> tuple[Job, tuple[Effect, ...]]:
    """Apply ``event`` to ``job`` at ``now``: the next job value and what the shell must do.

    ``jitter_draw`` is a number in [0, 1) drawn by the shell (``random.random()``); it only
    matters when the event fails the job with a retry to schedule, and keeps this function
    deterministic for the simulator and the tests.
    """
    require_aware(now, "now")
    if not 0 <= jitter_draw < 1:
        raise ValueError(
            f"jitter_draw is {jitter_draw}; pass a number in [0, 1) such as random.random()."
        )
    target = TRANSITIONS.get((job.status, type(event)))
    if target is None:
        legal = sorted(source for source, kind in TRANSITIONS if kind is type(event))
        raise IllegalTransition(job, event, f"it applies only to {', '.join(legal)} jobs")
    error = _failure_error(job, event)
    if error is not None:
        return _fail(job, event, now, error, jitter_draw)
    job = _guarded_update(job, event, now)
    effects: tuple[Effect, ...] = ()
    if isinstance(event, Succeeded):
        effects = (_completion_effect(job, now),)
    return _enter(job, event, target, now, detail=None, effects=effects)


def _failure_error(job: Job, event: Event) -> str | None:
    """The ``last_error`` a failing event records, or ``None`` for events that do not fail."""
    match event:
        case Failure(error=error):
            return error
        case TimedOut(limit=limit):
            return f"no progress in {job.status} for more than {limit}"
        case AgentOffline(agent_id=agent_id) if agent_id != job.agent_id:
            raise IllegalTransition(
                job, event, f"the job runs on agent {job.agent_id}, not {agent_id}"
            )
        case AgentOffline():
            return _offline_error(event)
        case _:
            return None


def _guarded_update(job: Job, event: Event, now: datetime) -> Job:
    """Refuse what the state table alone cannot (wrong claimant, retry not due, ...) and
    apply the event's own field changes."""
    match event:
        case Claimed(agent_id=agent_id):
            _check_claimant(job, event, agent_id)
            return replace(job, agent_id=agent_id or job.agent_id)
        case CSRRequested() if job.type is JobType.DEPLOYMENT:
            raise IllegalTransition(job, event, "a Deployment job has no certificate to sign")
        case RetryDue():
            if not is_retry_due(job, now):
                raise IllegalTransition(job, event, _no_retry_reason(job))
            return replace(
                job, next_retry_at=None, scheduled_at=now, started_at=None, completed_at=None
            )
        case Cancel() if job.status is JobStatus.FAILED:
            if job.next_retry_at is None:
                raise IllegalTransition(
                    job, event, "it has failed for good and has no retry to cancel"
                )
            return replace(job, next_retry_at=None)
        case _:
            return job


def _check_claimant(job: Job, event: Claimed, agent_id: str | None) -> None:
    if job.type is not JobType.DEPLOYMENT:
        if agent_id is not None:
            raise IllegalTransition(
                job,
                event,
                f"agent_id must be empty because {job.type} jobs run on the control plane",
            )
        return
    if agent_id is None:
        raise IllegalTransition(
            job, event, "agent_id is required because Deployment jobs run on agents"
        )
    if job.agent_id not in (None, agent_id):
        raise IllegalTransition(
            job, event, f"agent_id must be {job.agent_id}, the agent the job is routed to"
        )


def _offline_error(event: AgentOffline) -> str:
    if event.retired_at is not None:
        return f"agent {event.agent_id} was retired at {event.retired_at.isoformat()}"
    if event.last_heartbeat_at is None:
        return f"agent {event.agent_id} is offline and has never sent a heartbeat"
    last = event.last_heartbeat_at.isoformat()
    return f"agent {event.agent_id} is offline: last heartbeat at {last}"


def _no_retry_reason(job: Job) -> str:
    if job.next_retry_at is None:
        return "it has failed for good and will not be retried"
    return f"its retry is not due before {job.next_retry_at.isoformat()}"


def _completion_effect(job: Job, now: datetime) -> Effect:
    if job.type is JobType.DEPLOYMENT:
        return RecordDeployment(job.certificate_id, job.target_id, now)
    return CreateDeploymentJobs(job.certificate_id)


def _fail(
    job: Job, event: Event, now: datetime, error: str, jitter_draw: float
) -> tuple[Job, tuple[Effect, ...]]:
    attempts = job.attempts + 1
    retryable = job.status is not JobStatus.AWAITING_APPROVAL and attempts < job.max_attempts
    effects: tuple[Effect, ...] = ()
    next_retry_at = None
    if retryable:
        backoff = Backoff(
            initial=job.retry_interval_seconds, cap=RETRY_DELAY_CAP_SECONDS, jitter=RETRY_JITTER
        )
        next_retry_at = now + timedelta(seconds=backoff.delay(attempts, lambda: jitter_draw))
    else:
        effects = (JobFailedPermanently(job.id, job.type, job.certificate_id, attempts, error),)
    failed = replace(job, attempts=attempts, last_error=error, next_retry_at=next_retry_at)
    return _enter(failed, event, JobStatus.FAILED, now, detail=error, effects=effects)


def _enter(
    job: Job,
    event: Event,
    target: JobStatus,
    now: datetime,
    *,
    detail: str | None,
    effects: tuple[Effect, ...],
) -> tuple[Job, tuple[Effect, ...]]:
    audit = AuditRecord(event.action, job.id, job.status, target, detail)
    entered = replace(
        job,
        status=target,
        status_changed_at=now,
        started_at=now if target is JobStatus.RUNNING else job.started_at,
        completed_at=now if target in _COMPLETION_STATES else job.completed_at,
    )
    return entered, (audit, *effects)
