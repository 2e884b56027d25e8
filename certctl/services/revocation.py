"""Revocation and CRLs: the issuer records the serial first, then the store, so a crash in
between leaves a serial on the CRL that the inventory does not show as revoked yet (safe:
the operator retries and the issuer keeps the first record), never the reverse."""

from __future__ import annotations

import contextlib

import trio

from certctl.core.model import (
    CLOSED_CERTIFICATE_STATUSES,
    JobType,
    ManagedCertificate,
    Revocation,
    RevocationReason,
)
from certctl.services import audit, jobs
from certctl.services.context import Actor, Services
from certctl.services.errors import StateConflict
from certctl.services.issuers import CRL
from certctl.store.errors import Conflict, NotFound, StoreUnavailable


async def revoke(
    services: Services, actor: Actor, cert_id: str, reason: RevocationReason
) -> ManagedCertificate:
    cert = await services.store.get_certificate(cert_id)
    if cert.status in CLOSED_CERTIFICATE_STATUSES:
        raise StateConflict(f"certificate {cert_id} is {cert.status}; nothing to revoke.")
    latest = await services.store.latest_version(cert_id)
    if latest is None:
        raise StateConflict(f"certificate {cert_id} has no issued version to revoke.")
    issuer = await services.store.get_issuer(cert.issuer_id)
    ca = await services.issuers.get(issuer, services.now())
    await trio.to_thread.run_sync(ca.revoke, latest.serial_number, reason, services.now())
    services.issuers.forget_crl(issuer.id)
    revoked = await services.store.revoke_certificate(
        Revocation(
            id=services.new_id("rev"),
            certificate_id=cert_id,
            serial_number=latest.serial_number,
            reason=reason,
            revoked_by=actor.name,
            revoked_at=services.now(),
            issuer_id=issuer.id,
            issuer_notified=True,
        ),
        audit=[
            audit.event(
                services,
                actor,
                "certificate_revoked",
                "certificate",
                cert_id,
                details={"serial_number": latest.serial_number, "reason": reason.value},
            )
        ],
    )
    # A renewal answered after this would store a version and set the certificate Active
    # again, and a deployment would install a revoked certificate: stop them all.
    for job in await jobs.active_jobs(services, cert_id, *JobType):
        with contextlib.suppress(StateConflict, Conflict, NotFound):
            await jobs.cancel(services, actor, job.id)
    return revoked


async def crl(services: Services, issuer_id: str, *, refresh: bool = False) -> CRL:
    issuer = await services.store.get_issuer(issuer_id)
    return await services.issuers.crl(issuer, services.now(), refresh=refresh)


async def refresh_crls(services: Services) -> int:
    """Re-sign every issuer's CRL before the cached one goes stale.

    One issuer that cannot sign (its key unreadable, its configuration broken) never keeps
    the others' CRLs from being refreshed: each is tried, and the failures are raised
    together at the end, for the scheduler to log and count. A database outage ends the
    round at once, since every issuer would hit it.
    """
    count = 0
    failures: list[Exception] = []
    for issuer in await services.store.list_issuers():
        if not issuer.enabled:
            continue
        try:
            await crl(services, issuer.id, refresh=True)
        except NotFound:
            continue
        except StoreUnavailable:
            raise
        except Exception as exc:  # one bad issuer must not stop the rest; re-raised below
            exc.add_note(f"while refreshing the CRL of issuer {issuer.id}")
            failures.append(exc)
        else:
            count += 1
    if failures:
        raise ExceptionGroup(f"{len(failures)} issuers could not refresh their CRL", failures)
    return count
