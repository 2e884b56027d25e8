"""Signing an agent's CSR for a key job: check, issue, store the version, fan out.

The CSR must ask for exactly the names of the managed certificate (its common name and
SANs, in any order): the profile limits what may be issued in general, this check limits
an agent to the certificate it was asked for. A refused CSR fails the job with the reason,
so the operator sees it in the job and the retry policy applies.
"""

from __future__ import annotations

import contextlib
import time

import trio

from certctl.core import jobs as core
from certctl.core.model import (
    CertificateStatus,
    CertificateVersion,
    Job,
    JobStatus,
    KeyAlgorithm,
    ManagedCertificate,
)
from certctl.pki.csr import load_csr
from certctl.pki.errors import PKIError
from certctl.pki.keys import key_spec
from certctl.pki.pem import load_certificates
from certctl.services import audit, metrics
from certctl.services.context import Actor, Services
from certctl.services.errors import StateConflict, Unprocessable
from certctl.services.jobs import apply
from certctl.services.profiles import profile_of


async def sign_csr(
    services: Services, actor: Actor, job: Job, csr_pem: str
) -> tuple[Job, CertificateVersion]:
    """Issue the certificate of an AwaitingCSR job from ``csr_pem``.

    Returns the completed job and the stored version. ``Unprocessable`` (after failing the
    job) when the CSR or the issuer refuses.
    """
    if job.status is not JobStatus.AWAITING_CSR:
        raise StateConflict(f"job {job.id} is {job.status}, not AwaitingCSR; poll for new work.")
    running = await apply(services, job, core.CSRSubmitted(), actor)
    started = time.perf_counter()
    try:
        cert = await services.store.get_certificate(job.certificate_id)
        version = await _issue(services, cert, csr_pem)
    except PKIError as exc:
        metrics.ISSUANCE_SECONDS.labels("LocalCA", "failure").observe(time.perf_counter() - started)
        reason = str(exc)
        await apply(services, running, core.Failure(reason), actor)
        raise Unprocessable(f"CSR for job {job.id} was refused: {reason}", field="csr_pem") from exc
    except Exception as exc:
        # An unusable issuer, a store error: nothing reaps a Running key job, so fail it
        # (and retry per policy) before the original error goes to the caller.
        metrics.ISSUANCE_SECONDS.labels("LocalCA", "failure").observe(time.perf_counter() - started)
        await _fail_quietly(services, running, actor, f"issuance failed: {exc}")
        raise
    metrics.ISSUANCE_SECONDS.labels("LocalCA", "success").observe(time.perf_counter() - started)
    try:
        await services.store.add_version(
            version,
            status=CertificateStatus.ACTIVE,
            audit=[
                audit.event(
                    services,
                    actor,
                    "certificate_issued",
                    "certificate",
                    cert.id,
                    details={
                        "job": job.id,
                        "serial_number": version.serial_number,
                        "fingerprint_sha256": version.fingerprint_sha256,
                        "not_after": version.not_after.isoformat(),
                    },
                )
            ],
        )
    except Exception as exc:
        await _fail_quietly(services, running, actor, f"storing the issued version failed: {exc}")
        raise
    completed = await apply(services, running, core.Succeeded(), actor)
    return completed, version


async def _issue(services: Services, cert: ManagedCertificate, csr_pem: str) -> CertificateVersion:
    request = load_csr(csr_pem.encode())
    asked = {n.lower() for n in request.sans.values()}
    expected = {n.lower() for n in (cert.common_name, *cert.sans)}
    if request.common_name is None or request.common_name.lower() != cert.common_name.lower():
        raise _refused(
            f"its common name is {request.common_name!r}, but certificate {cert.id} is "
            f"{cert.common_name!r}; build the CSR with the names from the work item"
        )
    if not asked <= expected:
        raise _refused(
            f"it asks for names outside certificate {cert.id} ({', '.join(sorted(expected))}); "
            "build the CSR with the names from the work item"
        )
    missing = expected - asked - {request.common_name.lower()}
    if missing:
        raise _refused(
            f"it leaves out {', '.join(sorted(missing))} of certificate {cert.id}; "
            "build the CSR with the names from the work item"
        )
    issuer = await services.store.get_issuer(cert.issuer_id)
    profile = await profile_of(services, cert)
    ca = await services.issuers.get(issuer, services.now())
    issued = await trio.to_thread.run_sync(ca.issue, csr_pem.encode(), profile, services.now())
    leaf = load_certificates(issued.certificate_pem)[0]
    spec = key_spec(leaf.public_key())
    return CertificateVersion(
        id=services.new_id("ver"),
        certificate_id=cert.id,
        serial_number=issued.serial,
        not_before=issued.not_before,
        not_after=issued.not_after,
        fingerprint_sha256=issued.fingerprint_sha256,
        pem_chain=(issued.certificate_pem + issued.chain_pem).decode(),
        key_algorithm=spec.algorithm if spec else KeyAlgorithm.ECDSA,
        key_size=spec.size if spec else 0,
        created_at=services.now(),
        csr_pem=csr_pem,
    )


async def _fail_quietly(services: Services, running: Job, actor: Actor, reason: str) -> None:
    """Fail the job; if even that fails, the error that got us here is the one to report."""
    with contextlib.suppress(Exception):
        await apply(services, running, core.Failure(reason), actor)


def _refused(reason: str) -> PKIError:
    return PKIError(f"CSR refused: {reason}.")
