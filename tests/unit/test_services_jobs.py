"""certctl.services.jobs: retries with backoff up to max_attempts, the scheduler loops
(process_pending, retry_due, reap_timeouts), cancellation and approval."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from test_services_support import APPROVER, OPERATOR, RegisteredAgent, ServiceEnv, csr

from certctl.core import jobs as core
from certctl.core.jobs import RETRY_JITTER
from certctl.core.model import (
    CertificateProfile,
    CertificateStatus,
    Issuer,
    IssuerType,
    Job,
    JobStatus,
    JobType,
)
from certctl.services import agents, certificates, jobs, metrics
from certctl.services.errors import Forbidden, InvalidInput, StateConflict
from certctl.store.base import Store

INTERVAL = 600
MAX_RETRIES = 2  # so three attempts in all


@pytest.fixture
async def env(tmp_path: Path) -> ServiceEnv:
    return await ServiceEnv.build(
        tmp_path, max_retries=MAX_RETRIES, retry_interval_seconds=INTERVAL
    )


async def issued(env: ServiceEnv) -> tuple[RegisteredAgent, str]:
    web = await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate("target-1")
    await env.issue(web, cert_id)
    return web, cert_id


async def claim_and_fail(env: ServiceEnv, web: RegisteredAgent, error: str) -> Job:
    (item,) = await agents.work(env.services, web.agent)
    assert item.type is JobType.DEPLOYMENT
    assert item.status is JobStatus.RUNNING
    return await agents.report(
        env.services, web.agent, item.job_id, completed=False, error=error, verification=None
    )


def delay_of(job: Job, env: ServiceEnv) -> float:
    assert job.next_retry_at is not None
    return (job.next_retry_at - env.clock.now()).total_seconds()


async def test_a_failed_deployment_retries_with_backoff_until_max_attempts(
    env: ServiceEnv,
) -> None:
    web, cert_id = await issued(env)
    permanent_before = metrics.JOBS_FAILED_PERMANENTLY.labels("Deployment")._value.get()

    first = await claim_and_fail(env, web, "reload failed: nginx: [emerg] one")
    assert first.status is JobStatus.FAILED
    assert first.attempts == 1
    assert first.last_error == "reload failed: nginx: [emerg] one"
    assert INTERVAL * (1 - RETRY_JITTER) <= delay_of(first, env) <= INTERVAL
    assert len(await env.audit("job_failed", first.id)) == 1

    # not due yet: nothing moves.
    env.clock.advance(timedelta(seconds=INTERVAL * (1 - RETRY_JITTER) - 1))
    assert await jobs.retry_due(env.services) == 0
    assert await agents.work(env.services, web.agent) == []

    assert first.next_retry_at is not None
    env.clock.set(first.next_retry_at)
    assert await jobs.retry_due(env.services) == 1
    retried = await env.store.get_job(first.id)
    assert retried.status is JobStatus.PENDING
    assert retried.next_retry_at is None
    assert retried.attempts == 1

    second = await claim_and_fail(env, web, "reload failed: two")
    assert second.id == first.id
    assert second.attempts == 2
    # doubled, and jitter only ever shortens a delay, by at most 10%
    assert 2 * INTERVAL * (1 - RETRY_JITTER) <= delay_of(second, env) <= 2 * INTERVAL

    assert second.next_retry_at is not None
    env.clock.set(second.next_retry_at)
    assert await jobs.retry_due(env.services) == 1
    third = await claim_and_fail(env, web, "reload failed: three")

    assert third.attempts == env.policy.max_attempts == MAX_RETRIES + 1
    assert third.status is JobStatus.FAILED
    assert third.next_retry_at is None
    assert third.last_error == "reload failed: three"
    env.clock.advance(timedelta(days=30))
    assert await jobs.retry_due(env.services) == 0
    assert (await env.store.get_job(third.id)).status is JobStatus.FAILED
    assert await agents.work(env.services, web.agent) == []

    (alert,) = await env.audit("job_failed_permanently", third.id)
    assert alert.details["attempts"] == 3
    assert alert.details["certificate_id"] == cert_id
    assert alert.details["last_error"] == "reload failed: three"
    assert metrics.JOBS_FAILED_PERMANENTLY.labels("Deployment")._value.get() == (
        permanent_before + 1
    )
    # a failed deployment does not make the certificate itself Failed
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.ACTIVE
    # nothing left to cancel on a job that failed for good
    with pytest.raises(StateConflict):
        await jobs.cancel(env.services, OPERATOR, third.id)


async def test_a_key_job_that_fails_for_good_marks_the_certificate_failed(
    tmp_path: Path,
) -> None:
    env = await ServiceEnv.build(tmp_path, max_retries=0)
    web = await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1")

    with pytest.raises(Exception, match="refused"):
        await agents.submit_csr(env.services, web.agent, job_id, csr("evil.example.org", ()))

    job = await env.store.get_job(job_id)
    assert (job.status, job.attempts, job.next_retry_at) == (JobStatus.FAILED, 1, None)
    assert len(await env.audit("job_failed_permanently", job_id)) == 1
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.FAILED

    # the operator renews: a new Issuance job, and a good CSR brings the certificate back.
    new_job = await certificates.renew(env.services, OPERATOR, cert_id, force=False)
    assert new_job != job_id
    completed, _ = await env.issue(web, cert_id)
    assert completed.id == new_job
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.ACTIVE


async def test_process_pending_hands_a_retried_renewal_back_to_the_agent(
    env: ServiceEnv,
) -> None:
    web, cert_id = await issued(env)
    renewal_id = await certificates.renew(env.services, OPERATOR, cert_id, force=False)
    renewal = await env.store.get_job(renewal_id)
    assert (renewal.type, renewal.status) == (JobType.RENEWAL, JobStatus.AWAITING_CSR)

    with pytest.raises(Exception, match="refused"):
        await agents.submit_csr(env.services, web.agent, renewal_id, csr("evil.example.org", ()))
    failed = await env.store.get_job(renewal_id)
    assert failed.status is JobStatus.FAILED
    assert failed.next_retry_at is not None
    # still in progress: the job will retry
    assert (await env.store.get_certificate(cert_id)).status is (
        CertificateStatus.RENEWAL_IN_PROGRESS
    )

    env.clock.set(failed.next_retry_at)
    assert await jobs.retry_due(env.services) == 1
    assert (await env.store.get_job(renewal_id)).status is JobStatus.PENDING
    # agents never see a Pending key job; the control plane moves it to AwaitingCSR.
    assert [i.type for i in await agents.work(env.services, web.agent)] == [JobType.DEPLOYMENT]

    assert await jobs.process_pending(env.services) == 1

    pending = await env.store.get_job(renewal_id)
    assert pending.status is JobStatus.AWAITING_CSR
    assert await jobs.process_pending(env.services) == 0
    assert renewal_id in [i.job_id for i in await agents.work(env.services, web.agent)]
    completed, version = await env.issue(web, cert_id)
    assert completed.id == renewal_id
    assert len(await env.store.list_versions(cert_id)) == 2
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.ACTIVE
    assert cert.expires_at == version.not_after


async def test_process_pending_leaves_deployment_jobs_to_agents(env: ServiceEnv) -> None:
    _, cert_id = await issued(env)

    assert await jobs.process_pending(env.services) == 0

    (deployment,) = await env.jobs(cert_id, JobType.DEPLOYMENT)
    assert deployment.status is JobStatus.PENDING


async def assert_reaped_after(env: ServiceEnv, job_id: str, stall: timedelta, reason: str) -> None:
    """Left alone for exactly ``stall`` the job survives; a second more and it is Failed,
    naming ``reason``, with a retry scheduled."""
    env.clock.advance(stall)
    assert await jobs.reap_timeouts(env.services) == 0
    env.clock.advance(timedelta(seconds=1))
    assert await jobs.reap_timeouts(env.services) == 1

    job = await env.store.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.last_error is not None
    assert reason in job.last_error
    assert job.next_retry_at is not None


async def test_reap_timeouts_fails_a_job_waiting_too_long_for_its_csr(env: ServiceEnv) -> None:
    await env.agent("web-01", "target-1")
    _, (job_id,) = await env.certificate("target-1")

    await assert_reaped_after(env, job_id, env.services.timeouts.awaiting_csr, "AwaitingCSR")


async def test_reap_timeouts_fails_a_key_job_whose_signing_was_interrupted(
    env: ServiceEnv,
) -> None:
    """A control plane killed between CSRSubmitted and the version leaves a Running key job
    that nothing else would move; the timeout loop fails it so the retry asks again."""
    await env.agent("web-01", "target-1")
    _, (job_id,) = await env.certificate("target-1")
    waiting = await env.store.get_job(job_id)
    await jobs.apply(env.services, waiting, core.CSRSubmitted(), OPERATOR)

    await assert_reaped_after(env, job_id, jobs.SIGNING_STALL, "interrupted")


async def test_rejecting_an_approval_cancels_the_job(env: ServiceEnv) -> None:
    await env.store.create_profile(CertificateProfile("prof-1", "gated", requires_approval=True))
    await env.agent("web-01", "target-1")
    _, (job_id,) = await env.certificate("target-1", certificate_profile_id="prof-1")

    rejected = await jobs.decide_approval(env.services, APPROVER, job_id, approve=False)

    assert rejected.status is JobStatus.CANCELLED
    with pytest.raises(StateConflict):
        await jobs.decide_approval(env.services, APPROVER, job_id, approve=True)


@pytest.mark.parametrize("approve", [True, False])
async def test_the_requesting_key_cannot_decide_its_own_job(env: ServiceEnv, approve: bool) -> None:
    await env.store.create_profile(CertificateProfile("prof-1", "gated", requires_approval=True))
    await env.agent("web-01", "target-1")
    _, (job_id,) = await env.certificate("target-1", certificate_profile_id="prof-1")
    assert (await env.store.get_job(job_id)).requested_by == OPERATOR.name

    with pytest.raises(Forbidden, match="two-person rule"):
        await jobs.decide_approval(env.services, OPERATOR, job_id, approve=approve)

    assert (await env.store.get_job(job_id)).status is JobStatus.AWAITING_APPROVAL
    decided = await jobs.decide_approval(env.services, APPROVER, job_id, approve=approve)
    assert decided.status is not JobStatus.AWAITING_APPROVAL


async def test_a_profile_change_does_not_release_jobs_awaiting_approval(env: ServiceEnv) -> None:
    gated = CertificateProfile("prof-1", "gated", requires_approval=True)
    await env.store.create_profile(gated)
    await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1", certificate_profile_id="prof-1")

    await env.store.update_profile(replace(gated, requires_approval=False))
    for _ in range(3):
        await jobs.process_pending(env.services)
        await jobs.retry_due(env.services)

    assert (await env.store.get_job(job_id)).status is JobStatus.AWAITING_APPROVAL
    # Forcing a new job in its place does not skip the approval it owed either.
    replacement = await certificates.renew(env.services, OPERATOR, cert_id, force=True)
    assert (await env.store.get_job(job_id)).status is JobStatus.CANCELLED
    assert (await env.store.get_job(replacement)).status is JobStatus.AWAITING_APPROVAL


async def test_cancelling_a_retrying_job_stops_its_retry(env: ServiceEnv) -> None:
    web, _ = await issued(env)
    failed = await claim_and_fail(env, web, "boom")

    cancelled = await jobs.cancel(env.services, OPERATOR, failed.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.next_retry_at is None
    env.clock.advance(timedelta(days=1))
    assert await jobs.retry_due(env.services) == 0


async def test_an_unusable_issuer_fails_the_key_job_instead_of_stranding_it(
    env: ServiceEnv,
) -> None:
    await env.store.create_issuer(
        Issuer("issuer-bad", "bad", IssuerType.LOCAL_CA, {"ca_cert_path": "/nonexistent.pem"})
    )
    web = await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1", issuer_id="issuer-bad")

    with pytest.raises(InvalidInput):
        await agents.submit_csr(
            env.services,
            web.agent,
            job_id,
            csr("www.example.com", ("www.example.com", "api.example.com")),
        )

    job = await env.store.get_job(job_id)
    assert job.status is JobStatus.FAILED  # not Running forever: nothing reaps a key job
    assert job.last_error is not None
    assert "issuer-bad" in job.last_error
    assert job.next_retry_at is not None
    assert await env.store.latest_version(cert_id) is None


async def test_retry_flow_on_both_stores(store: Store, tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path, store, max_retries=1, retry_interval_seconds=INTERVAL)
    web, _ = await issued(env)

    first = await claim_and_fail(env, web, "validate failed")
    assert first.attempts == 1
    assert INTERVAL * (1 - RETRY_JITTER) <= delay_of(first, env) <= INTERVAL
    assert first.next_retry_at is not None
    env.clock.set(first.next_retry_at)
    assert await jobs.retry_due(env.services) == 1

    last = await claim_and_fail(env, web, "validate failed again")

    assert (last.status, last.attempts, last.next_retry_at) == (JobStatus.FAILED, 2, None)
    env.clock.advance(timedelta(days=2))
    assert await jobs.retry_due(env.services) == 0
    assert len(await env.audit("job_failed_permanently", last.id)) == 1
