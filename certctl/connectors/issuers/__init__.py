"""Issuer connectors: one module per issuer type, all behind the ``IssuerConnector`` protocol.

Issuers receive a PEM CSR (private keys stay on agents) and the profile to enforce, and
return PEM material plus the identifiers the control plane stores for each version.
Time is a parameter so services and the fleet simulator decide what "now" is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from certctl.core.model import CertificateProfile, RevocationReason
from certctl.pki.crl import RevokedSerial
from certctl.pki.names import NO_NAMES, SubjectAltNames


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A new certificate version as the control plane records and deploys it."""

    certificate_pem: bytes
    # The issuing CA and the certificates above it, as servers send them after the leaf.
    chain_pem: bytes
    serial: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime


class IssuerConnector(Protocol):
    def issue(
        self,
        csr_pem: bytes,
        profile: CertificateProfile,
        now: datetime,
        *,
        ttl: timedelta | None = None,
        extra_sans: SubjectAltNames = NO_NAMES,
    ) -> IssuedCertificate: ...

    def revoke(self, serial: str, reason: RevocationReason, now: datetime) -> RevokedSerial: ...

    def crl(self, now: datetime) -> bytes: ...
