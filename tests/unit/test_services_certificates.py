"""certctl.services.certificates: create (with its Issuance job), references, renew, archive."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_services_support import APPROVER, OPERATOR, ServiceEnv

from certctl.core.model import CertificateProfile, CertificateStatus, JobStatus, JobType
from certctl.services import certificates, jobs
from certctl.services.certificates import CertificateInput
from certctl.services.errors import InvalidInput, StateConflict
from certctl.store.base import JobQuery


@pytest.fixture
async def env(tmp_path: Path) -> ServiceEnv:
    return await ServiceEnv.build(tmp_path)


async def test_create_with_a_target_makes_its_issuance_job_awaiting_csr_at_once(
    env: ServiceEnv,
) -> None:
    await env.agent("web-01", "target-1")
    cert_id, job_ids = await env.certificate("target-1")

    (job,) = await env.jobs(cert_id)
    assert job_ids == (job.id,)
    assert job.type is JobType.ISSUANCE
    assert job.status is JobStatus.AWAITING_CSR
    assert job.max_attempts == env.policy.max_attempts
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.PENDING
    assert cert.expires_at is None
    assert cert.target_ids == ("target-1",)
    (created,) = await env.audit("certificate_created", cert_id)
    assert created.details["jobs"] == [job.id]


async def test_create_without_targets_makes_no_job(env: ServiceEnv) -> None:
    cert_id, job_ids = await env.certificate()

    assert job_ids == ()
    assert await env.jobs(cert_id) == ()
    assert (await env.store.list_jobs(JobQuery())).items == ()


async def test_create_with_an_approval_profile_waits_for_approval(env: ServiceEnv) -> None:
    await env.store.create_profile(CertificateProfile("prof-1", "gated", requires_approval=True))
    await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate("target-1", certificate_profile_id="prof-1")

    (job,) = await env.jobs(cert_id)
    assert job.status is JobStatus.AWAITING_APPROVAL

    approved = await jobs.decide_approval(env.services, APPROVER, job.id, approve=True)
    assert approved.status is JobStatus.PENDING
    assert await jobs.process_pending(env.services) == 1
    assert (await env.store.get_job(job.id)).status is JobStatus.AWAITING_CSR


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner_id", "owner-missing"),
        ("issuer_id", "issuer-missing"),
        ("renewal_policy_id", "policy-missing"),
        ("team_id", "team-missing"),
        ("certificate_profile_id", "profile-missing"),
    ],
)
async def test_create_with_a_dangling_reference_names_the_field(
    env: ServiceEnv, field: str, value: str
) -> None:
    await env.agent("web-01", "target-1")
    data = CertificateInput(
        name="www",
        common_name="www.example.com",
        owner_id="owner-1",
        issuer_id="issuer-1",
        renewal_policy_id="policy-1",
        target_ids=("target-1",),
    )
    data = CertificateInput(**{**certificates.vars_of(data), field: value})

    with pytest.raises(InvalidInput) as raised:
        await certificates.create(env.services, OPERATOR, data)

    assert raised.value.field == field
    assert value in raised.value.message
    assert (await env.store.list_certificates()).items == ()
    assert (await env.store.list_jobs()).items == ()


async def test_create_with_an_unknown_target_names_target_ids(env: ServiceEnv) -> None:
    with pytest.raises(InvalidInput) as raised:
        await env.certificate("target-missing")

    assert raised.value.field == "target_ids"
    assert "target-missing" in raised.value.message
    assert (await env.store.list_certificates()).items == ()


@pytest.mark.parametrize("field", ["name", "common_name", "owner_id", "issuer_id"])
async def test_create_without_a_required_field_names_it(env: ServiceEnv, field: str) -> None:
    data = CertificateInput(
        name="www",
        common_name="www.example.com",
        owner_id="owner-1",
        issuer_id="issuer-1",
        renewal_policy_id="policy-1",
    )
    data = CertificateInput(**{**certificates.vars_of(data), field: None})

    with pytest.raises(InvalidInput) as raised:
        await certificates.create(env.services, OPERATOR, data)

    assert raised.value.field == field


async def test_create_with_targets_on_two_agents_is_refused(env: ServiceEnv) -> None:
    await env.agent("web-01", "target-1")
    await env.agent("web-02", "target-2")

    with pytest.raises(InvalidInput) as raised:
        await env.certificate("target-1", "target-2")

    assert raised.value.field == "target_ids"
    assert (await env.store.list_certificates()).items == ()


async def test_renew_conflicts_with_an_active_key_job_unless_forced(env: ServiceEnv) -> None:
    await env.agent("web-01", "target-1")
    cert_id, (first,) = await env.certificate("target-1")

    with pytest.raises(StateConflict) as raised:
        await certificates.renew(env.services, OPERATOR, cert_id, force=False)
    assert first in raised.value.message
    assert (await env.store.get_job(first)).status is JobStatus.AWAITING_CSR

    second = await certificates.renew(env.services, OPERATOR, cert_id, force=True)

    assert second != first
    assert (await env.store.get_job(first)).status is JobStatus.CANCELLED
    replacement = await env.store.get_job(second)
    assert replacement.type is JobType.ISSUANCE  # no version yet: the first key is still owed
    assert replacement.status is JobStatus.AWAITING_CSR
    active = await jobs.active_jobs(env.services, cert_id, JobType.ISSUANCE, JobType.RENEWAL)
    assert [j.id for j in active] == [second]


async def test_renew_after_issuance_makes_a_renewal_job(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate("target-1")
    await env.issue(web, cert_id)

    job_id = await certificates.renew(env.services, OPERATOR, cert_id, force=False)

    job = await env.store.get_job(job_id)
    assert (job.type, job.status) == (JobType.RENEWAL, JobStatus.AWAITING_CSR)
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.RENEWAL_IN_PROGRESS
    assert len(await env.audit("renewal_triggered", cert_id)) == 1

    # Forcing again replaces the renewal; cancelling hands the status back to the clock
    # before the new job takes it again.
    again = await certificates.renew(env.services, OPERATOR, cert_id, force=True)
    assert (await env.store.get_job(job_id)).status is JobStatus.CANCELLED
    assert (await env.store.get_job(again)).status is JobStatus.AWAITING_CSR
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.RENEWAL_IN_PROGRESS


async def test_renew_an_archived_certificate_is_a_state_conflict(env: ServiceEnv) -> None:
    await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1")

    archived = await certificates.archive(env.services, OPERATOR, cert_id)

    assert archived.status is CertificateStatus.ARCHIVED
    assert (await env.store.get_job(job_id)).status is JobStatus.CANCELLED
    with pytest.raises(StateConflict):
        await certificates.renew(env.services, OPERATOR, cert_id, force=True)
    with pytest.raises(StateConflict):
        await certificates.renew(env.services, OPERATOR, cert_id, force=False)


async def test_renew_without_targets_is_a_state_conflict(env: ServiceEnv) -> None:
    cert_id, _ = await env.certificate()

    with pytest.raises(StateConflict):
        await certificates.renew(env.services, OPERATOR, cert_id, force=False)
    assert await env.jobs(cert_id) == ()


async def test_update_that_maps_a_first_target_creates_the_issuance_job(env: ServiceEnv) -> None:
    await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate()

    await certificates.update(
        env.services, OPERATOR, cert_id, CertificateInput(target_ids=("target-1",))
    )

    (job,) = await env.jobs(cert_id)
    assert (job.type, job.status) == (JobType.ISSUANCE, JobStatus.AWAITING_CSR)


async def test_deploy_needs_a_version_and_a_mapped_target(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1", "target-2")
    await env.agent("web-02", "target-3")
    cert_id, _ = await env.certificate("target-1", "target-2")

    with pytest.raises(StateConflict):
        await certificates.deploy(env.services, OPERATOR, cert_id, target_id=None)
    await env.issue(web, cert_id)
    with pytest.raises(InvalidInput) as raised:
        await certificates.deploy(env.services, OPERATOR, cert_id, target_id="target-3")
    assert raised.value.field == "target_id"

    (one,) = await certificates.deploy(env.services, OPERATOR, cert_id, target_id="target-2")
    both = await certificates.deploy(env.services, OPERATOR, cert_id, target_id=None)

    job = await env.store.get_job(one)
    assert (job.type, job.status, job.target_id, job.agent_id) == (
        JobType.DEPLOYMENT,
        JobStatus.PENDING,
        "target-2",
        web.agent.id,
    )
    assert len(both) == 2
    assert len(await env.jobs(cert_id, JobType.DEPLOYMENT)) == 2 + 1 + 2  # issuance fan-out too
    assert len(await env.audit("deployment_triggered", cert_id)) == 2
