"""certctl.services.renewal (the scan: jobs, statuses, expiry alerts) and
certctl.services.revocation (revoke, CRLs)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from test_services_support import OPERATOR, RegisteredAgent, ServiceEnv, csr

from certctl.core.model import (
    CertificateStatus,
    CertificateVersion,
    JobStatus,
    JobType,
    RevocationReason,
)
from certctl.services import agents, certificates, jobs, renewal, revocation
from certctl.services.errors import StateConflict
from certctl.store.base import Store
from certctl.store.errors import Conflict


async def issued(
    env: ServiceEnv, name: str = "www.example.com", target_id: str = "target-1"
) -> tuple[RegisteredAgent, str, CertificateVersion]:
    web = await env.agent(f"agent-{target_id}", target_id)
    cert_id, _ = await env.certificate(target_id, common_name=name, sans=(name,))
    _, version = await env.issue(web, cert_id)
    return web, cert_id, version


def serials(der: bytes) -> set[int]:
    return {entry.serial_number for entry in x509.load_der_x509_crl(der)}


# -- the renewal scan ---------------------------------------------------------------------


async def test_a_renewal_job_exists_only_with_its_status(tmp_path: Path) -> None:
    """The scan read the certificate, then its status moved: neither job nor status lands."""
    env = await ServiceEnv.build(tmp_path, renewal_window_days=30)
    _, cert_id, version = await issued(env)
    env.clock.set(version.not_after - timedelta(days=10))
    stale = await env.store.get_certificate(cert_id)
    await env.store.set_certificate_status(
        cert_id, CertificateStatus.EXPIRING, expected=stale.status, at=env.clock.now()
    )
    with pytest.raises(Conflict):
        await jobs.start_key_job(env.services, OPERATOR, stale, JobType.RENEWAL)
    assert await env.jobs(cert_id, JobType.RENEWAL) == ()
    assert await env.audit("renewal_job_created", cert_id) == ()

    assert await renewal.scan(env.services) == 1
    (job,) = await env.jobs(cert_id, JobType.RENEWAL)
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.RENEWAL_IN_PROGRESS
    (triggered,) = await env.audit("renewal_triggered", cert_id)
    assert triggered.details == {"job": job.id, "from": "Expiring"}


async def test_scan_renews_a_certificate_inside_its_window_once(tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path, renewal_window_days=30)
    web, cert_id, version = await issued(env)
    due_at = version.not_after - timedelta(days=30)

    env.clock.set(due_at - timedelta(seconds=1))
    assert await renewal.scan(env.services) == 0
    assert await env.jobs(cert_id, JobType.RENEWAL) == ()
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.ACTIVE

    env.clock.set(due_at + timedelta(hours=1))
    assert await renewal.scan(env.services) == 1

    (job,) = await env.jobs(cert_id, JobType.RENEWAL)
    assert job.status is JobStatus.AWAITING_CSR
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.RENEWAL_IN_PROGRESS
    assert len(await env.audit("renewal_job_created", cert_id)) == 1

    assert await renewal.scan(env.services) == 0
    env.clock.advance(timedelta(days=1))
    assert await renewal.scan(env.services) == 0
    assert len(await env.jobs(cert_id, JobType.RENEWAL)) == 1

    # the agent answers: a new version, Active again, deployed again.
    assert job.id in [i.job_id for i in await agents.work(env.services, web.agent)]
    completed, renewed = await env.issue(web, cert_id)
    assert completed.id == job.id
    assert renewed.not_after > version.not_after
    cert = await env.store.get_certificate(cert_id)
    assert (cert.status, cert.expires_at) == (CertificateStatus.ACTIVE, renewed.not_after)
    assert cert.last_renewal_at == env.clock.now()
    assert len(await env.jobs(cert_id, JobType.DEPLOYMENT)) == 2
    assert await renewal.scan(env.services) == 0


async def test_a_stuck_renewal_still_gets_expiry_alerts(tmp_path: Path) -> None:
    """RenewalInProgress keeps its status and gets no second job, but the alert for the
    tightest threshold goes out as expiry approaches (once)."""
    env = await ServiceEnv.build(tmp_path, renewal_window_days=30)
    _, cert_id, version = await issued(env)
    env.clock.set(version.not_after - timedelta(days=29))
    assert await renewal.scan(env.services) == 1
    env.clock.set(version.not_after - timedelta(days=6))
    assert await renewal.scan(env.services) == 0
    assert await renewal.scan(env.services) == 0
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.RENEWAL_IN_PROGRESS
    assert len(await env.jobs(cert_id, JobType.RENEWAL)) == 1
    alerts = await env.audit(renewal.ALERT_ACTION, cert_id)
    assert [a.details["threshold_days"] for a in alerts].count(7) == 1


async def test_scan_with_auto_renew_off_alerts_once_and_does_not_renew(tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path, renewal_window_days=30, auto_renew=False)
    _, cert_id, version = await issued(env)

    env.clock.set(version.not_after - timedelta(days=20))
    assert await renewal.scan(env.services) == 0

    assert [j.type for j in await env.jobs(cert_id, JobType.RENEWAL)] == []
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.EXPIRING
    (alert,) = await env.audit(renewal.ALERT_ACTION, cert_id)
    assert alert.details["threshold_days"] == 30
    assert alert.details["channel"] == "Email"
    assert alert.details["days_remaining"] == 20

    assert await renewal.scan(env.services) == 0
    env.clock.advance(timedelta(days=1))
    assert await renewal.scan(env.services) == 0
    assert len(await env.audit(renewal.ALERT_ACTION, cert_id)) == 1

    # the next threshold is a new alert, once; then expiry moves the status on.
    env.clock.set(version.not_after - timedelta(days=10))
    await renewal.scan(env.services)
    await renewal.scan(env.services)
    alerts = await env.audit(renewal.ALERT_ACTION, cert_id)
    assert sorted(a.details["threshold_days"] for a in alerts) == [14, 30]
    assert {a.details["severity"] for a in alerts} == {"Informational", "Warning"}

    env.clock.set(version.not_after + timedelta(seconds=1))
    await renewal.scan(env.services)
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.EXPIRED
    assert len(await env.audit(renewal.ALERT_ACTION, cert_id)) == 3
    assert [j.type for j in await env.jobs(cert_id, JobType.RENEWAL)] == []


async def test_scan_on_both_stores(store: Store, tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path, store, renewal_window_days=30)
    _, cert_id, version = await issued(env)
    env.clock.set(version.not_after - timedelta(days=29))

    assert await renewal.scan(env.services) == 1
    assert await renewal.scan(env.services) == 0

    (job,) = await env.jobs(cert_id, JobType.RENEWAL)
    assert job.status is JobStatus.AWAITING_CSR
    assert (await env.store.get_certificate(cert_id)).status is (
        CertificateStatus.RENEWAL_IN_PROGRESS
    )
    assert len(await env.audit(renewal.ALERT_ACTION, cert_id)) == 1


# -- revocation and CRLs --------------------------------------------------------------------


async def test_revoke_puts_the_serial_on_a_stable_crl(tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path)
    _, cert_id, version = await issued(env)
    _, other_id, other = await issued(env, "mail.example.com", "target-2")

    empty = await revocation.crl(env.services, "issuer-1")
    assert serials(empty.der) == set()

    env.clock.advance(timedelta(minutes=1))
    revoked = await revocation.revoke(
        env.services, OPERATOR, cert_id, RevocationReason.KEY_COMPROMISE
    )

    assert revoked.status is CertificateStatus.REVOKED
    assert revoked.revoked_at == env.clock.now()
    assert revoked.revocation_reason is RevocationReason.KEY_COMPROMISE
    (record,) = await env.store.list_revocations(issuer_id="issuer-1")
    assert record.serial_number == version.serial_number
    assert len(await env.audit("certificate_revoked", cert_id)) == 1

    first = await revocation.crl(env.services, "issuer-1")
    crl = x509.load_der_x509_crl(first.der)
    assert serials(first.der) == {int(version.serial_number, 16)}
    entry = crl.get_revoked_certificate_by_serial_number(int(version.serial_number, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    env.clock.advance(timedelta(minutes=5))
    second = await revocation.crl(env.services, "issuer-1")
    assert (second.der, second.etag) == (first.der, first.etag)

    await revocation.revoke(env.services, OPERATOR, other_id, RevocationReason.SUPERSEDED)
    third = await revocation.crl(env.services, "issuer-1")
    assert third.etag != first.etag
    assert serials(third.der) == {int(version.serial_number, 16), int(other.serial_number, 16)}

    refreshed = await revocation.crl(env.services, "issuer-1", refresh=True)
    assert refreshed.der != third.der  # a new CRL number
    assert serials(refreshed.der) == serials(third.der)
    assert await revocation.refresh_crls(env.services) == 1

    with pytest.raises(StateConflict):
        await revocation.revoke(env.services, OPERATOR, cert_id, RevocationReason.UNSPECIFIED)


async def test_revoke_before_the_first_version_is_a_state_conflict(tmp_path: Path) -> None:
    env = await ServiceEnv.build(tmp_path)
    await env.agent("web-01", "target-1")
    cert_id, _ = await env.certificate("target-1")

    with pytest.raises(StateConflict):
        await revocation.revoke(env.services, OPERATOR, cert_id, RevocationReason.UNSPECIFIED)
    assert (await env.store.get_certificate(cert_id)).status is CertificateStatus.PENDING


async def test_revoke_stops_the_certificates_jobs(tmp_path: Path) -> None:
    """A renewal answered after the revocation must not bring the certificate back to life,
    and a revoked certificate must not be deployed."""
    env = await ServiceEnv.build(tmp_path)
    web, cert_id, _ = await issued(env)
    renewal_id = await certificates.renew(env.services, OPERATOR, cert_id, force=False)

    await revocation.revoke(env.services, OPERATOR, cert_id, RevocationReason.KEY_COMPROMISE)

    assert (await env.store.get_job(renewal_id)).status is JobStatus.CANCELLED
    assert {j.status for j in await env.jobs(cert_id, JobType.DEPLOYMENT)} == {JobStatus.CANCELLED}
    assert await agents.work(env.services, web.agent) == []
    with pytest.raises(StateConflict):
        await agents.submit_csr(
            env.services, web.agent, renewal_id, csr("www.example.com", ("www.example.com",))
        )
    cert = await env.store.get_certificate(cert_id)
    assert cert.status is CertificateStatus.REVOKED
    assert len(await env.store.list_versions(cert_id)) == 1
