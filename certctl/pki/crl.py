"""Revocation records and CRLs (RFC 5280 section 5).

The CRL number is an input, not something this module invents: whoever persists the
revocation list also persists the last number, so numbers keep increasing across restarts
(the earlier implementation used the unix time, which repeats when two CRLs are signed in
the same second and goes backwards when the clock does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certctl.core.model import RevocationReason
from certctl.pki.ca import CertificateAuthority
from certctl.pki.keys import signature_hash

# cryptography's names for the reasons of ``certctl.core.model.RevocationReason``, which it
# encodes as the RFC 5280 codes (``RevocationReason.code``). removeFromCRL (8) belongs to
# delta CRLs and aACompromise (10) to attribute certificates, so neither is offered.
_FLAGS: Final[MappingProxyType[RevocationReason, x509.ReasonFlags]] = MappingProxyType(
    {
        RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
        RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
        RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
        RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
        RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
        RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
        RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
        RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    }
)


def reason_flag(reason: RevocationReason) -> x509.ReasonFlags:
    """cryptography's name for ``reason``, which it encodes as ``reason.code``."""
    return _FLAGS[reason]


@dataclass(frozen=True, slots=True)
class RevokedSerial:
    serial: int
    reason: RevocationReason
    revoked_at: datetime


def build_crl(
    authority: CertificateAuthority,
    revocations: Iterable[RevokedSerial],
    *,
    number: int,
    now: datetime,
    lifetime: timedelta,
) -> bytes:
    """A DER CRL signed by ``authority``, valid from ``now`` until ``now + lifetime``."""
    this_update = now.replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(this_update)
        .next_update(this_update + lifetime)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority.authority_key_identifier, critical=False)
    )
    for revocation in revocations:
        entry = x509.RevokedCertificateBuilder(
            serial_number=revocation.serial,
            revocation_date=revocation.revoked_at.replace(microsecond=0),
        )
        # RFC 5280 5.3.1: the reasonCode entry extension SHOULD be absent for unspecified.
        if revocation.reason is not RevocationReason.UNSPECIFIED:
            entry = entry.add_extension(
                x509.CRLReason(reason_flag(revocation.reason)), critical=False
            )
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(authority.key, signature_hash(authority.key))
    return crl.public_bytes(serialization.Encoding.DER)
