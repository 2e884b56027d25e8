"""certctl.services.agents (with issuance): the pull protocol from registration to a
verified deployment, binding every call to its agent, liveness and the reaper."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from test_services_support import OPERATOR, ServiceEnv, csr

from certctl.core.model import (
    AgentStatus,
    CertificateProfile,
    CertificateStatus,
    JobStatus,
    JobType,
    KeyAlgorithm,
    KeyRule,
    VerificationStatus,
)
from certctl.pki.pem import load_certificates
from certctl.protocol import HostFacts, Verification
from certctl.services import agents, jobs
from certctl.services.agents import key_hash
from certctl.services.certificates import split_chain
from certctl.services.errors import Forbidden, Gone, InvalidInput, StateConflict, Unprocessable
from certctl.store.base import Store
from certctl.store.errors import Conflict, NotFound


@pytest.fixture
async def env(tmp_path: Path) -> ServiceEnv:
    return await ServiceEnv.build(tmp_path)


# -- register and authenticate ----------------------------------------------------------


async def test_register_returns_the_key_once_and_stores_only_its_hash(env: ServiceEnv) -> None:
    agent, key = await agents.register(
        env.services, "web-01", HostFacts(hostname="web-01.example.com", version="0.1.0")
    )

    assert len(key) >= 40
    assert key not in repr(agent)
    assert (await env.store.agent_by_key_hash(key_hash(key))).id == agent.id
    assert key_hash(key) != key
    # The memory store keeps the encoded rows PostgreSQL would: the key is nowhere in them.
    assert key not in repr(env.store._rows)  # type: ignore[attr-defined]
    (registered,) = await env.audit("agent_registered", agent.id)
    assert key not in repr(registered)
    assert await agents.authenticate(env.services, key, agent.id) == agent

    # A second registration gets a different key.
    other, other_key = await agents.register(env.services, "web-02", HostFacts(hostname="h"))
    assert other_key != key
    assert other.id != agent.id


async def test_register_refuses_a_taken_name_and_blank_fields(env: ServiceEnv) -> None:
    await agents.register(env.services, "web-01", HostFacts(hostname="a.example.com"))

    with pytest.raises(Conflict):
        await agents.register(env.services, "web-01", HostFacts(hostname="b.example.com"))
    with pytest.raises(InvalidInput):
        await agents.register(env.services, "  ", HostFacts(hostname="b.example.com"))
    with pytest.raises(InvalidInput):
        await agents.register(env.services, "web-03", HostFacts(hostname=""))
    assert len(await env.store.list_agents()) == 1


async def test_authenticate_binds_the_key_to_its_own_agent(env: ServiceEnv) -> None:
    alpha = await env.agent("alpha")
    beta = await env.agent("beta")

    with pytest.raises(Forbidden):
        await agents.authenticate(env.services, alpha.key, beta.agent.id)
    with pytest.raises(NotFound):
        await agents.authenticate(env.services, "not-a-key", alpha.agent.id)
    assert (await agents.authenticate(env.services, beta.key, beta.agent.id)).id == beta.agent.id


async def test_a_retired_agent_is_gone_on_authenticate_and_heartbeat(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")

    retired = await agents.retire(
        env.services, OPERATOR, web.agent.id, reason="host decommissioned", cascade=True
    )

    assert retired.retired_at == env.clock.now()
    with pytest.raises(Gone):
        await agents.authenticate(env.services, web.key, web.agent.id)
    with pytest.raises(Gone):
        await agents.heartbeat(env.services, web.agent, HostFacts())
    assert (await env.store.get_target("target-1")).retired_at is not None


async def test_retire_with_dependencies_needs_force(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")

    with pytest.raises(StateConflict):
        await agents.retire(env.services, OPERATOR, web.agent.id, reason="", cascade=False)
    with pytest.raises(InvalidInput):
        await agents.retire(env.services, OPERATOR, web.agent.id, reason=" ", cascade=True)
    assert (await env.store.get_agent(web.agent.id)).retired_at is None


async def test_heartbeat_updates_metadata_and_liveness(env: ServiceEnv) -> None:
    web = await env.agent("web-01")
    env.clock.advance(timedelta(minutes=10))

    assert await agents.update_liveness(env.services) == 1
    assert (await env.store.get_agent(web.agent.id)).status is AgentStatus.OFFLINE

    answer = await agents.heartbeat(env.services, web.agent, HostFacts(version="0.2.0", os=""))

    assert (answer.status, answer.server_time) == (AgentStatus.ONLINE, env.clock.now())
    beat = await env.store.get_agent(web.agent.id)
    assert beat.status is AgentStatus.ONLINE
    assert beat.last_heartbeat_at == env.clock.now()
    assert beat.version == "0.2.0"
    assert beat.hostname == "web-01.example.com"  # an empty value keeps the stored one
    assert await agents.update_liveness(env.services) == 0


# -- the issuance flow ------------------------------------------------------------------


async def test_issuance_and_deployment_end_to_end(env: ServiceEnv) -> None:
    web = await env.agent(
        "web-01",
        "target-1",
        "target-2",
        **{"target-1": {"config": {"cert_path": "/etc/ssl/a.pem", "secret": {"token": "s3"}}}},
    )
    other = await env.agent("web-02", "target-9")
    await env.certificate(  # another agent's certificate, not to be listed for web-01
        "target-9", common_name="other.example.com", sans=()
    )
    cert_id, (issuance_id,) = await env.certificate("target-1", "target-2")

    # work lists the AwaitingCSR job to the agent owning the targets, and only to it.
    items = await agents.work(env.services, web.agent)
    assert [(i.job_id, i.status) for i in items] == [(issuance_id, JobStatus.AWAITING_CSR)]
    assert items[0].common_name == "www.example.com"
    assert (items[0].key_algorithm, items[0].key_size) == (KeyAlgorithm.ECDSA, 256)
    assert items[0].target is None
    assert issuance_id not in [i.job_id for i in await agents.work(env.services, other.agent)]

    # submit the CSR: the job completes, the version is stored, deployments fan out.
    env.clock.advance(timedelta(seconds=5))
    completed, version = await agents.submit_csr(
        env.services,
        web.agent,
        issuance_id,
        csr("www.example.com", ("api.example.com", "www.example.com")),  # any order
    )
    assert completed.status is JobStatus.COMPLETED
    assert completed.completed_at == env.clock.now()
    assert (await env.store.get_job(issuance_id)).status is JobStatus.COMPLETED
    assert await env.store.latest_version(cert_id) == version
    assert "PRIVATE KEY" not in version.pem_chain
    leaf, ca = load_certificates(version.pem_chain.encode())
    assert leaf.issuer == ca.subject
    assert format(leaf.serial_number, "040x") == version.serial_number
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"www.example.com", "api.example.com"}
    leaf_pem, chain_pem = split_chain(version.pem_chain)
    assert leaf_pem.count("BEGIN CERTIFICATE") == chain_pem.count("BEGIN CERTIFICATE") == 1
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.ACTIVE
    assert cert.expires_at == version.not_after == leaf.not_valid_after_utc
    assert len(await env.audit("certificate_issued", cert_id)) == 1

    deployments = await env.jobs(cert_id, JobType.DEPLOYMENT)
    assert sorted((d.target_id, d.agent_id, d.status) for d in deployments) == [
        ("target-1", web.agent.id, JobStatus.PENDING),
        ("target-2", web.agent.id, JobStatus.PENDING),
    ]

    # the other agent claims nothing of it; the owner claims both, with target config.
    assert [i.type for i in await agents.work(env.services, other.agent)] == [
        JobType.ISSUANCE  # its own certificate's, still awaiting its CSR
    ]
    claimed = await agents.work(env.services, web.agent)
    assert sorted(i.job_id for i in claimed) == sorted(d.id for d in deployments)
    assert {i.status for i in claimed} == {JobStatus.RUNNING}
    by_target = {i.target.id: i for i in claimed if i.target is not None}
    assert by_target["target-1"].target.config == {
        "cert_path": "/etc/ssl/a.pem",
        "secret": {"token": "s3"},
    }
    assert by_target["target-2"].target.config == {}
    assert await agents.work(env.services, web.agent) == []  # nothing handed out twice

    # the agent fetches its certificate and reports both deployments.
    fetched = await agents.certificate(env.services, web.agent, cert_id)
    assert (fetched.certificate_id, fetched.version_id) == (cert_id, version.id)
    assert (fetched.serial_number, fetched.not_after) == (version.serial_number, version.not_after)
    # the leaf and the chain after it, as the newest version holds them
    assert version.pem_chain.startswith(fetched.cert_pem.strip())
    assert version.pem_chain.strip().endswith(fetched.chain_pem.strip())
    assert fetched.cert_pem.count("BEGIN CERTIFICATE") == 1
    env.clock.advance(timedelta(seconds=30))
    deployed_at = env.clock.now()
    job_1 = await env.store.get_job(by_target["target-1"].job_id)
    done = await agents.report(
        env.services,
        web.agent,
        job_1.id,
        completed=True,
        error=None,
        verification=Verification(
            status=VerificationStatus.SUCCESS, fingerprint=version.fingerprint_sha256
        ),
    )
    assert done.status is JobStatus.COMPLETED
    stored = await env.store.get_job(job_1.id)
    assert stored.status is JobStatus.COMPLETED
    assert stored.verification_status is VerificationStatus.SUCCESS
    assert stored.verification_fingerprint == version.fingerprint_sha256
    assert stored.verification_error is None
    assert stored.verified_at == deployed_at
    assert stored.started_at is not None
    assert stored.completed_at == deployed_at
    assert (await env.store.get_certificate(cert_id)).last_deployment_at == deployed_at

    # a second report of the finished job is a conflict, not a second completion.
    with pytest.raises(StateConflict):
        await agents.report(
            env.services, web.agent, job_1.id, completed=True, error=None, verification=None
        )


async def test_work_uses_the_profile_key_rule(env: ServiceEnv) -> None:
    await env.store.create_profile(
        CertificateProfile(
            "prof-rsa", "rsa", allowed_key_algorithms=(KeyRule(KeyAlgorithm.RSA, 3072),)
        )
    )
    web = await env.agent("web-01", "target-1")
    await env.certificate("target-1", certificate_profile_id="prof-rsa")

    (item,) = await agents.work(env.services, web.agent)

    assert (item.key_algorithm, item.key_size) == (KeyAlgorithm.RSA, 3072)


@pytest.mark.parametrize(
    ("common_name", "sans", "reason"),
    [
        ("www.example.com", ("www.example.com", "evil.example.org"), "outside certificate"),
        ("evil.example.org", ("www.example.com",), "common name"),
    ],
)
async def test_a_csr_with_wrong_names_fails_the_job_and_schedules_a_retry(
    env: ServiceEnv, common_name: str, sans: tuple[str, ...], reason: str
) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1")

    with pytest.raises(Unprocessable) as raised:
        await agents.submit_csr(env.services, web.agent, job_id, csr(common_name, sans))

    assert reason in raised.value.message
    job = await env.store.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.attempts == 1
    assert job.last_error is not None
    assert reason in job.last_error
    assert job.next_retry_at is not None
    assert job.next_retry_at > env.clock.now()
    assert await env.store.latest_version(cert_id) is None
    assert await env.jobs(cert_id, JobType.DEPLOYMENT) == ()
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.PENDING

    # once the retry is due the job asks the agent for a CSR again, and a good one succeeds.
    env.clock.set(job.next_retry_at)
    assert await jobs.retry_due(env.services) == 1
    assert (await env.store.get_job(job_id)).status is JobStatus.PENDING
    assert await jobs.process_pending(env.services) == 1
    (item,) = await agents.work(env.services, web.agent)
    assert (item.job_id, item.status) == (job_id, JobStatus.AWAITING_CSR)
    completed, _ = await env.issue(web, cert_id)
    assert completed.status is JobStatus.COMPLETED


async def test_a_csr_missing_a_name_of_the_certificate_is_refused(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1")

    with pytest.raises(Unprocessable):
        await agents.submit_csr(env.services, web.agent, job_id, csr("www.example.com", ()))

    assert (await env.store.get_job(job_id)).status is JobStatus.FAILED
    assert await env.store.latest_version(cert_id) is None


async def test_a_csr_that_does_not_parse_fails_the_job(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    _, (job_id,) = await env.certificate("target-1")

    with pytest.raises(Unprocessable):
        await agents.submit_csr(env.services, web.agent, job_id, "not a CSR")

    assert (await env.store.get_job(job_id)).status is JobStatus.FAILED


async def test_a_csr_for_a_job_not_awaiting_one_is_a_conflict(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, (job_id,) = await env.certificate("target-1")
    await env.issue(web, cert_id)

    with pytest.raises(StateConflict):
        await agents.submit_csr(
            env.services, web.agent, job_id, csr("www.example.com", ("www.example.com",))
        )
    (deployment, *_) = await env.jobs(cert_id, JobType.DEPLOYMENT)
    with pytest.raises(InvalidInput):
        await agents.submit_csr(env.services, web.agent, deployment.id, "x")


# -- binding: an agent touches only its own jobs and certificates ------------------------


async def test_an_agent_cannot_act_on_another_agents_jobs_or_certificates(
    env: ServiceEnv,
) -> None:
    web = await env.agent("web-01", "target-1")
    intruder = await env.agent("web-02", "target-2")
    cert_id, (issuance_id,) = await env.certificate("target-1")

    with pytest.raises(Forbidden):
        await agents.submit_csr(
            env.services, intruder.agent, issuance_id, csr("www.example.com", ())
        )
    assert (await env.store.get_job(issuance_id)).status is JobStatus.AWAITING_CSR
    with pytest.raises(Forbidden):
        await agents.job_of(env.services, intruder.agent, issuance_id)
    assert (await agents.job_of(env.services, web.agent, issuance_id)).id == issuance_id

    await env.issue(web, cert_id)
    (running, *_) = await agents.work(env.services, web.agent)

    with pytest.raises(Forbidden):
        await agents.report(
            env.services,
            intruder.agent,
            running.job_id,
            completed=False,
            error="x",
            verification=None,
        )
    assert (await env.store.get_job(running.job_id)).status is JobStatus.RUNNING
    with pytest.raises(Forbidden):
        await agents.job_of(env.services, intruder.agent, running.job_id)
    assert (await agents.job_of(env.services, web.agent, running.job_id)).id == running.job_id
    with pytest.raises(Forbidden):
        await agents.certificate(env.services, intruder.agent, cert_id)
    assert await env.audit("certificate_retrieved", cert_id) == ()
    # a key job is not reportable, even by its own agent.
    with pytest.raises(Forbidden):
        await agents.report(
            env.services, web.agent, issuance_id, completed=True, error=None, verification=None
        )


async def test_certificate_before_the_first_version_is_not_found(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate("target-1")

    with pytest.raises(NotFound):
        await agents.certificate(env.services, web.agent, cert_id)


async def test_targets_lists_the_agents_enabled_unretired_targets(env: ServiceEnv) -> None:
    web = await env.agent(
        "web-01",
        "target-1",
        "target-2",
        **{"target-1": {"config": {"secret": {"password": "pw"}}}, "target-2": {"enabled": False}},
    )
    await env.agent("web-02", "target-3")

    (only,) = await agents.targets(env.services, web.agent)
    assert only.id == "target-1"
    stored = await env.store.get_target("target-1")
    assert stored.config == {}  # the entity never carries the secret ...
    assert only.config == {"secret": {"password": "pw"}}  # ... the agent's copy does


# -- liveness and the reaper ----------------------------------------------------------


async def test_a_silent_agent_goes_offline_and_its_running_job_is_reaped(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    live = await env.agent("web-02", "target-2")
    cert_id, _ = await env.certificate("target-1")
    await env.issue(web, cert_id)
    (running,) = await agents.work(env.services, web.agent)
    assert running.status is JobStatus.RUNNING

    # The tolerance is the setting plus the coalesced liveness write's interval.
    env.clock.advance(env.services.offline_after - timedelta(seconds=1))
    await agents.heartbeat(env.services, live.agent, HostFacts())
    assert await agents.update_liveness(env.services) == 0
    assert await agents.reap_lost(env.services) == 0

    env.clock.advance(timedelta(seconds=2))
    assert await agents.update_liveness(env.services) == 1
    assert (await env.store.get_agent(web.agent.id)).status is AgentStatus.OFFLINE
    assert (await env.store.get_agent(live.agent.id)).status is AgentStatus.ONLINE

    assert await agents.reap_lost(env.services) == 1
    reaped = await env.store.get_job(running.job_id)
    assert reaped.status is JobStatus.FAILED
    assert reaped.last_error is not None
    assert web.agent.id in reaped.last_error
    assert reaped.attempts == 1
    assert reaped.next_retry_at is not None
    assert len(await env.audit("job_offline_agent_reap", running.job_id)) == 1
    assert await agents.reap_lost(env.services) == 0


async def test_running_jobs_of_a_retired_agent_are_reaped(env: ServiceEnv) -> None:
    web = await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate("target-1")
    await env.issue(web, cert_id)
    (running,) = await agents.work(env.services, web.agent)

    await agents.retire(env.services, OPERATOR, web.agent.id, reason="gone", cascade=True)
    assert await agents.reap_lost(env.services) == 1

    reaped = await env.store.get_job(running.job_id)
    assert reaped.status is JobStatus.FAILED
    assert reaped.last_error is not None
    assert "retired" in reaped.last_error


# -- PostgreSQL too ------------------------------------------------------------------------


async def test_issuance_flow_on_both_stores(store: Store, tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path, store)
    web = await env.agent("web-01", "target-1")
    intruder = await env.agent("web-02", "target-2")
    cert_id, (job_id,) = await env.certificate("target-1")

    assert [i.job_id for i in await agents.work(env.services, web.agent)] == [job_id]
    assert await agents.work(env.services, intruder.agent) == []
    completed, version = await env.issue(web, cert_id)
    assert completed.status is JobStatus.COMPLETED
    assert (await env.store.get_certificate(cert_id)).expires_at == version.not_after

    (item,) = await agents.work(env.services, web.agent)
    assert (item.status, item.target and item.target.id) == (JobStatus.RUNNING, "target-1")
    with pytest.raises(Forbidden):
        await agents.report(
            env.services, intruder.agent, item.job_id, completed=True, error=None, verification=None
        )
    env.clock.advance(timedelta(seconds=10))
    await agents.report(
        env.services,
        web.agent,
        item.job_id,
        completed=True,
        error=None,
        verification=Verification(status=VerificationStatus.SKIPPED),
    )
    assert (await env.store.get_job(item.job_id)).verification_status is VerificationStatus.SKIPPED
    cert = await env.store.get_certificate(cert_id)
    assert cert.last_deployment_at == env.clock.now()
    assert cert.status is CertificateStatus.ACTIVE
