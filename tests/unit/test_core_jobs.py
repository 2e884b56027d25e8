"""The job state machine, transition by transition, against the reference table and the
deliberate fixes (attempt counting, backoff, approval safety, claim routing, timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certctl.core.jobs import (
    CREATION_STATES,
    RETRY_DELAY_CAP_SECONDS,
    TRANSITIONS,
    AgentOffline,
    Approved,
    AuditRecord,
    Cancel,
    Claimed,
    CreateDeploymentJobs,
    CSRRequested,
    CSRSubmitted,
    Event,
    Failure,
    IllegalTransition,
    JobFailedPermanently,
    RecordDeployment,
    Rejected,
    RetryDue,
    Succeeded,
    TimedOut,
    create_job,
    is_final,
    is_retry_due,
    timeout_event,
    transition,
)
from certctl.core.model import (
    ACTIVE_JOB_STATUSES,
    TERMINAL_JOB_STATUSES,
    Job,
    JobStatus,
    JobType,
    RenewalPolicy,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

P = JobStatus


def make_job(
    job_type: JobType = JobType.ISSUANCE,
    status: JobStatus = P.PENDING,
    *,
    max_retries: int = 2,
    retry_interval_seconds: int = 3600,
    agent_id: str | None = None,
) -> Job:
    policy = RenewalPolicy(
        id="rp-test",
        name="test",
        max_retries=max_retries,
        retry_interval_seconds=retry_interval_seconds,
    )
    return create_job(
        job_id="job-1",
        job_type=job_type,
        certificate_id="cert-1",
        policy=policy,
        now=T0,
        status=status,
        target_id="target-1" if job_type is JobType.DEPLOYMENT else None,
        agent_id=agent_id,
    )


def run(job: Job, *events: Event, now: datetime = T0) -> Job:
    for event in events:
        job, _ = transition(job, event, now)
    return job


def test_transition_table_is_the_reference_table_plus_cancel_of_a_scheduled_retry() -> None:
    expected = {
        (P.PENDING, Claimed, P.RUNNING),
        (P.RUNNING, CSRRequested, P.AWAITING_CSR),
        (P.AWAITING_CSR, CSRSubmitted, P.RUNNING),
        (P.RUNNING, Succeeded, P.COMPLETED),
        *((s, Failure, P.FAILED) for s in (P.PENDING, P.AWAITING_CSR, P.AWAITING_APPROVAL)),
        (P.RUNNING, Failure, P.FAILED),
        (P.AWAITING_CSR, TimedOut, P.FAILED),
        (P.AWAITING_APPROVAL, TimedOut, P.FAILED),
        (P.RUNNING, AgentOffline, P.FAILED),
        (P.FAILED, RetryDue, P.PENDING),
        (P.AWAITING_APPROVAL, Approved, P.PENDING),
        (P.AWAITING_APPROVAL, Rejected, P.CANCELLED),
        *((s, Cancel, P.CANCELLED) for s in (P.PENDING, P.AWAITING_CSR, P.RUNNING)),
        (P.AWAITING_APPROVAL, Cancel, P.CANCELLED),
        (P.FAILED, Cancel, P.CANCELLED),
    }
    assert {(s, e, t) for (s, e), t in TRANSITIONS.items()} == expected


def test_state_sets() -> None:
    assert {P.PENDING, P.AWAITING_CSR, P.AWAITING_APPROVAL} == CREATION_STATES
    assert CREATION_STATES | {P.RUNNING} == ACTIVE_JOB_STATUSES
    assert {P.COMPLETED, P.CANCELLED} == TERMINAL_JOB_STATUSES
    assert not any(source in TERMINAL_JOB_STATUSES for source, _ in TRANSITIONS)


def test_create_job_copies_the_retry_budget_from_the_policy() -> None:
    job = make_job(max_retries=4, retry_interval_seconds=120)
    assert (job.max_attempts, job.retry_interval_seconds, job.attempts) == (5, 120, 0)
    assert job.created_at == job.scheduled_at == job.status_changed_at == T0
    assert (job.started_at, job.completed_at, job.next_retry_at) == (None, None, None)


@pytest.mark.parametrize("status", [P.RUNNING, P.FAILED, P.COMPLETED, P.CANCELLED])
def test_create_job_refuses_a_non_starting_state(status: JobStatus) -> None:
    with pytest.raises(ValueError, match=f"status {status} is not a starting state"):
        make_job(status=status)


@pytest.mark.parametrize("status", [P.AWAITING_CSR, P.AWAITING_APPROVAL])
def test_deployment_jobs_start_pending(status: JobStatus) -> None:
    with pytest.raises(ValueError, match="Deployment created as"):
        make_job(JobType.DEPLOYMENT, status)


def test_deployment_jobs_need_a_target() -> None:
    with pytest.raises(ValueError, match="Deployment without target_id"):
        create_job(
            job_id="j",
            job_type=JobType.DEPLOYMENT,
            certificate_id="c",
            policy=RenewalPolicy(id="rp", name="p"),
            now=T0,
        )


def test_create_job_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        create_job(
            job_id="j",
            job_type=JobType.RENEWAL,
            certificate_id="c",
            policy=RenewalPolicy(id="rp", name="p"),
            now=datetime(2030, 1, 1),
        )


def test_server_keygen_issuance_runs_to_completion_and_fans_out_deployments() -> None:
    claimed, effects = transition(make_job(), Claimed(), T0 + HOUR)
    assert claimed.status is P.RUNNING
    assert claimed.started_at == claimed.status_changed_at == T0 + HOUR
    assert effects == (AuditRecord("job_claimed", "job-1", P.PENDING, P.RUNNING),)

    done, effects = transition(claimed, Succeeded(), T0 + 2 * HOUR)
    assert done.status is P.COMPLETED
    assert done.completed_at == T0 + 2 * HOUR
    assert done.started_at == T0 + HOUR
    assert effects == (
        AuditRecord("job_completed", "job-1", P.RUNNING, P.COMPLETED),
        CreateDeploymentJobs("cert-1"),
    )
    assert is_final(done)


def test_agent_keygen_renewal_goes_through_awaiting_csr() -> None:
    running = run(make_job(JobType.RENEWAL), Claimed())
    waiting, effects = transition(running, CSRRequested(), T0 + HOUR)
    assert waiting.status is P.AWAITING_CSR
    assert effects == (AuditRecord("job_awaiting_csr", "job-1", P.RUNNING, P.AWAITING_CSR),)

    signing, _ = transition(waiting, CSRSubmitted(), T0 + 2 * HOUR)
    assert signing.status is P.RUNNING
    assert signing.started_at == T0 + 2 * HOUR
    assert run(signing, Succeeded()).status is P.COMPLETED


def test_deployment_completion_records_the_deployment_and_routes_to_the_claimant() -> None:
    running, _ = transition(make_job(JobType.DEPLOYMENT), Claimed("agent-a"), T0)
    assert running.agent_id == "agent-a"
    done, effects = transition(running, Succeeded(), T0 + HOUR)
    assert effects[1:] == (RecordDeployment("cert-1", "target-1", T0 + HOUR),)
    assert done.completed_at == T0 + HOUR


def test_deployment_claim_by_its_routed_agent_keeps_the_route() -> None:
    job = make_job(JobType.DEPLOYMENT, agent_id="agent-a")
    assert run(job, Claimed("agent-a")).agent_id == "agent-a"


@pytest.mark.parametrize(
    ("job", "event", "message"),
    [
        (make_job(JobType.DEPLOYMENT), Claimed(), "agent_id is required"),
        (
            make_job(JobType.DEPLOYMENT, agent_id="agent-a"),
            Claimed("agent-b"),
            "agent_id must be agent-a",
        ),
        (make_job(JobType.RENEWAL), Claimed("agent-a"), "agent_id must be empty"),
    ],
)
def test_claims_are_routed(job: Job, event: Claimed, message: str) -> None:
    with pytest.raises(IllegalTransition, match=message):
        transition(job, event, T0)


def test_deployment_jobs_never_await_a_csr() -> None:
    running = run(make_job(JobType.DEPLOYMENT), Claimed("agent-a"))
    with pytest.raises(IllegalTransition, match="no certificate to sign"):
        transition(running, CSRRequested(), T0)


def test_approval_gate() -> None:
    waiting = make_job(status=P.AWAITING_APPROVAL)
    approved, effects = transition(waiting, Approved(), T0 + HOUR)
    assert approved.status is P.PENDING
    assert effects == (AuditRecord("job_approved", "job-1", P.AWAITING_APPROVAL, P.PENDING),)
    assert approved.completed_at is None

    rejected, effects = transition(waiting, Rejected(), T0 + HOUR)
    assert rejected.status is P.CANCELLED
    assert rejected.completed_at == T0 + HOUR
    assert effects == (AuditRecord("job_rejected", "job-1", P.AWAITING_APPROVAL, P.CANCELLED),)


def test_every_failure_counts_and_retries_back_off_from_the_policy_interval() -> None:
    job = run(make_job(max_retries=3, retry_interval_seconds=600), Claimed())
    delays = []
    for attempt in (1, 2, 3):
        failed, effects = transition(job, Failure("issuer down"), T0)
        assert failed.status is P.FAILED
        assert failed.attempts == attempt
        assert failed.last_error == "issuer down"
        assert failed.completed_at == T0
        assert failed.next_retry_at is not None
        assert effects == (AuditRecord("job_failed", "job-1", P.RUNNING, P.FAILED, "issuer down"),)
        assert not is_final(failed)
        delays.append(failed.next_retry_at - T0)
        job = run(failed, RetryDue(), Claimed(), now=failed.next_retry_at)
    assert delays == [timedelta(seconds=600), timedelta(seconds=1200), timedelta(seconds=2400)]


def test_the_last_allowed_failure_is_permanent_and_alerts() -> None:
    job = run(make_job(max_retries=0), Claimed())
    failed, effects = transition(job, Failure("bad CSR"), T0)
    assert (failed.status, failed.attempts, failed.next_retry_at) == (P.FAILED, 1, None)
    assert effects[1:] == (JobFailedPermanently("job-1", JobType.ISSUANCE, "cert-1", 1, "bad CSR"),)
    assert is_final(failed)
    assert not is_retry_due(failed, T0 + timedelta(days=365))
    for event in (RetryDue(), Cancel()):
        with pytest.raises(IllegalTransition, match="failed for good"):
            transition(failed, event, T0 + timedelta(days=365))


def test_retry_delay_is_capped_at_a_day_and_shortened_by_jitter() -> None:
    job = run(make_job(max_retries=5, retry_interval_seconds=86_400), Claimed())
    first, _ = transition(job, Failure("x"), T0, jitter_draw=0.5)
    assert first.next_retry_at == T0 + timedelta(seconds=86_400 * 0.95)
    again = run(first, RetryDue(), Claimed(), now=T0 + timedelta(days=1))
    second, _ = transition(again, Failure("x"), T0 + timedelta(days=1))
    assert second.next_retry_at == T0 + timedelta(days=1, seconds=RETRY_DELAY_CAP_SECONDS)


@pytest.mark.parametrize("draw", [-0.1, 1.0])
def test_jitter_draw_must_be_a_unit_interval_sample(draw: float) -> None:
    with pytest.raises(ValueError, match="jitter_draw is"):
        transition(make_job(), Claimed(), T0, jitter_draw=draw)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        transition(make_job(), Claimed(), datetime(2030, 1, 1))


def test_retry_waits_for_next_retry_at_then_requeues() -> None:
    failed = run(make_job(), Claimed(), Failure("x"))
    assert failed.next_retry_at == T0 + HOUR
    assert not is_retry_due(failed, T0 + HOUR - timedelta(microseconds=1))
    with pytest.raises(IllegalTransition, match="retry is not due before"):
        transition(failed, RetryDue(), T0 + HOUR - timedelta(microseconds=1))

    assert is_retry_due(failed, T0 + HOUR)
    queued, effects = transition(failed, RetryDue(), T0 + HOUR)
    assert queued.status is P.PENDING
    assert (queued.next_retry_at, queued.started_at, queued.completed_at) == (None, None, None)
    assert queued.scheduled_at == queued.status_changed_at == T0 + HOUR
    assert queued.attempts == 1
    assert effects == (AuditRecord("job_retry", "job-1", P.FAILED, P.PENDING),)


def test_is_retry_due_only_for_failed_jobs() -> None:
    assert not is_retry_due(make_job(), T0 + timedelta(days=1))


def test_awaiting_csr_timeout_is_a_retryable_failure() -> None:
    waiting = make_job(JobType.RENEWAL, P.AWAITING_CSR)
    failed, effects = transition(waiting, TimedOut(timedelta(hours=24)), T0)
    assert failed.last_error == "no progress in AwaitingCSR for more than 1 day, 0:00:00"
    assert failed.next_retry_at is not None
    assert effects == (
        AuditRecord("job_timeout", "job-1", P.AWAITING_CSR, P.FAILED, failed.last_error),
    )


@pytest.mark.parametrize("event", [TimedOut(timedelta(days=7)), Failure("approval store down")])
def test_a_failure_while_awaiting_approval_is_never_retried(event: Event) -> None:
    waiting = make_job(status=P.AWAITING_APPROVAL, max_retries=5)
    failed, effects = transition(waiting, event, T0)
    assert (failed.status, failed.attempts, failed.next_retry_at) == (P.FAILED, 1, None)
    assert isinstance(effects[-1], JobFailedPermanently)
    assert is_final(failed)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (AgentOffline("agent-a", None), "agent agent-a is offline and has never sent a heartbeat"),
        (
            AgentOffline("agent-a", T0),
            "agent agent-a is offline: last heartbeat at 2030-01-01T00:00:00+00:00",
        ),
        (
            AgentOffline("agent-a", T0, retired_at=T0 + HOUR),
            "agent agent-a was retired at 2030-01-01T01:00:00+00:00",
        ),
    ],
)
def test_agent_offline_fails_the_running_job(event: AgentOffline, error: str) -> None:
    running = run(make_job(JobType.DEPLOYMENT), Claimed("agent-a"))
    failed, effects = transition(running, event, T0 + HOUR)
    assert (failed.status, failed.last_error, failed.attempts) == (P.FAILED, error, 1)
    assert effects == (AuditRecord("job_offline_agent_reap", "job-1", P.RUNNING, P.FAILED, error),)


@pytest.mark.parametrize("job_type", [JobType.DEPLOYMENT, JobType.ISSUANCE])
def test_agent_offline_only_reaps_that_agents_jobs(job_type: JobType) -> None:
    claimant = "agent-a" if job_type is JobType.DEPLOYMENT else None
    running = run(make_job(job_type), Claimed(claimant))
    with pytest.raises(IllegalTransition, match="not agent-b"):
        transition(running, AgentOffline("agent-b", None), T0)


@pytest.mark.parametrize("status", [P.PENDING, P.AWAITING_CSR, P.AWAITING_APPROVAL])
def test_cancel_from_active_states(status: JobStatus) -> None:
    cancelled, effects = transition(make_job(JobType.RENEWAL, status), Cancel(), T0 + HOUR)
    assert cancelled.status is P.CANCELLED
    assert cancelled.completed_at == T0 + HOUR
    assert effects == (AuditRecord("job_cancelled", "job-1", status, P.CANCELLED),)


def test_cancel_of_a_running_job_and_of_a_scheduled_retry() -> None:
    running = run(make_job(), Claimed())
    assert run(running, Cancel()).status is P.CANCELLED
    failed = run(running, Failure("x"))
    cancelled = run(failed, Cancel())
    assert (cancelled.status, cancelled.next_retry_at) == (P.CANCELLED, None)
    assert is_final(cancelled)


def test_illegal_event_names_job_state_and_legal_states() -> None:
    done = run(make_job(), Claimed(), Succeeded())
    with pytest.raises(IllegalTransition) as caught:
        transition(done, Claimed(), T0)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.job_id, error.status, error.event) == ("job-1", P.COMPLETED, "Claimed")
    assert str(error) == (
        "Job job-1 is Completed and cannot take Claimed: it applies only to Pending jobs."
    )


def test_illegal_event_lists_every_legal_state() -> None:
    with pytest.raises(IllegalTransition, match="applies only to AwaitingApproval, AwaitingCSR"):
        transition(make_job(), TimedOut(HOUR), T0)


def test_timeout_event_measures_time_in_the_current_state() -> None:
    limits = {"awaiting_csr": timedelta(hours=24), "awaiting_approval": timedelta(hours=168)}
    csr = make_job(JobType.RENEWAL, P.AWAITING_CSR)
    assert timeout_event(csr, T0 + timedelta(hours=24), **limits) is None
    late = T0 + timedelta(hours=24, microseconds=1)
    assert timeout_event(csr, late, **limits) == TimedOut(timedelta(hours=24))

    approval = make_job(status=P.AWAITING_APPROVAL)
    assert timeout_event(approval, late, **limits) is None
    assert timeout_event(approval, T0 + timedelta(days=8), **limits) == TimedOut(
        timedelta(hours=168)
    )
    assert timeout_event(make_job(), T0 + timedelta(days=30), **limits) is None


def test_a_retried_job_is_not_timed_out_by_its_age() -> None:
    limits = {"awaiting_csr": timedelta(hours=24), "awaiting_approval": timedelta(hours=168)}
    later = T0 + timedelta(days=3)
    failed = run(make_job(JobType.RENEWAL), Claimed(), Failure("x"))
    waiting = run(failed, RetryDue(), Claimed(), CSRRequested(), now=later)
    assert timeout_event(waiting, later + HOUR, **limits) is None
