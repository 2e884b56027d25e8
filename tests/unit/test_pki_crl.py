"""CRLs: signed by the CA, numbered by the caller, reasons encoded as RFC 5280 codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509

from certctl.core.model import RevocationReason
from certctl.pki.ca import random_serial
from certctl.pki.crl import RevokedSerial, build_crl, reason_flag
from certctl.testing.certs import intermediate_ca, root_ca

NOW = datetime(2025, 6, 1, 8, 0, 0, 123_456, tzinfo=UTC)
ISSUING = intermediate_ca(root_ca(NOW), NOW)

# RFC 5280 section 5.3.1 CRLReason codes.
CODES = {
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.CA_COMPROMISE: 2,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.CERTIFICATE_HOLD: 6,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
}


def test_crl_lists_every_revocation_with_its_reason_code() -> None:
    revocations = [
        RevokedSerial(random_serial(), reason, NOW - timedelta(hours=index))
        for index, reason in enumerate(RevocationReason)
    ]
    der = build_crl(ISSUING, revocations, number=7, now=NOW, lifetime=timedelta(hours=24))
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ISSUING.key.public_key())
    assert crl.issuer == ISSUING.certificate.subject
    assert crl.last_update_utc == NOW.replace(microsecond=0)
    assert crl.next_update_utc == NOW.replace(microsecond=0) + timedelta(hours=24)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert (
        crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        == ISSUING.key_id
    )
    assert len(crl) == len(revocations)
    for revocation in revocations:
        entry = crl.get_revoked_certificate_by_serial_number(revocation.serial)
        assert entry is not None
        assert entry.revocation_date_utc == revocation.revoked_at.replace(microsecond=0)
        if revocation.reason is RevocationReason.UNSPECIFIED:
            # RFC 5280: the reasonCode SHOULD be absent rather than "unspecified".
            assert len(entry.extensions) == 0
            continue
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value
        assert reason.reason is reason_flag(revocation.reason)
        # The DER carries the code itself: ENUMERATED (0x0a 0x01 code).
        assert reason.public_bytes() == bytes([0x0A, 0x01, CODES[revocation.reason]])
        assert CODES[revocation.reason] == revocation.reason.code


def test_every_core_reason_has_a_flag_that_encodes_its_code() -> None:
    for reason in RevocationReason:
        flag = reason_flag(reason)
        assert x509.CRLReason(flag).public_bytes() == bytes([0x0A, 0x01, reason.code])


def test_empty_crl_is_still_signed_and_numbered() -> None:
    crl = x509.load_der_x509_crl(
        build_crl(ISSUING, [], number=1, now=NOW, lifetime=timedelta(days=7))
    )
    assert len(crl) == 0
    assert crl.is_signature_valid(ISSUING.key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
