"""Leaf and sub-CA contents, serials, validity windows, and CA material checks."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from certctl.core.model import CertificateProfile, ExtendedKeyUsage
from certctl.pki.ca import (
    BACKDATE,
    SERIAL_BITS,
    CertificateAuthority,
    check_ca,
    format_serial,
    parse_serial,
)
from certctl.pki.csr import build_csr, load_csr
from certctl.pki.errors import CAError, PKIError
from certctl.pki.keys import (
    ECDSA_P384,
    ED25519,
    RSA_2048,
    KeySpec,
    key_identifier,
    subject_public_key_info,
)
from certctl.pki.names import SubjectAltNames
from certctl.pki.profile import DEFAULT_VALIDITY, enforce
from certctl.testing.certs import (
    ANY_KEY_RULES,
    DEFAULT_PROFILE,
    intermediate_ca,
    key_usage,
    pooled_key,
    root_ca,
    self_signed_certificate,
)

NOW = datetime(2025, 6, 1, 12, 30, 15, 999_999, tzinfo=UTC)
ROOT = root_ca(NOW)
ISSUING = intermediate_ca(ROOT, NOW)
TLS = replace(
    DEFAULT_PROFILE,
    allowed_key_algorithms=ANY_KEY_RULES,
    allowed_ekus=(ExtendedKeyUsage.SERVER_AUTH, ExtendedKeyUsage.CLIENT_AUTH),
)
EXAMPLE_COM = SubjectAltNames(dns=("example.com",))
_E = TypeVar("_E", bound=x509.ExtensionType)


def issue(
    authority: CertificateAuthority = ISSUING,
    *,
    spec: KeySpec = ECDSA_P384,
    common_name: str | None = "www.example.com",
    sans: SubjectAltNames = EXAMPLE_COM,
    profile: CertificateProfile = TLS,
    now: datetime = NOW,
    validity: timedelta = DEFAULT_VALIDITY,
) -> x509.Certificate:
    request = load_csr(build_csr(pooled_key(spec), common_name=common_name, sans=sans))
    grant = enforce(request, profile, validity=validity)
    return authority.issue(request.public_key, grant, now).certificate


def extension(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def test_leaf_carries_the_rfc_5280_profile() -> None:
    leaf = issue()
    assert leaf.issuer == ISSUING.certificate.subject
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.com"
    constraints = extension(leaf, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    usage = extension(leaf, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert list(extension(leaf, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    names = extension(leaf, x509.SubjectAlternativeName)
    assert not names.critical
    assert names.value.get_values_for_type(x509.DNSName) == ["example.com", "www.example.com"]
    assert extension(leaf, x509.SubjectKeyIdentifier).value.digest == key_identifier(
        subject_public_key_info(leaf.public_key())
    )
    authority = extension(leaf, x509.AuthorityKeyIdentifier).value
    assert authority.key_identifier == ISSUING.key_id
    assert (
        authority.key_identifier
        == extension(ISSUING.certificate, x509.SubjectKeyIdentifier).value.digest
    )
    for absent in (ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.TLS_FEATURE):
        with pytest.raises(x509.ExtensionNotFound):
            leaf.extensions.get_extension_for_oid(absent)
    leaf.verify_directly_issued_by(ISSUING.certificate)


def test_rsa_tls_leaves_also_get_key_encipherment() -> None:
    assert extension(issue(spec=RSA_2048), x509.KeyUsage).value.key_encipherment
    code_signing = replace(TLS, allowed_ekus=(ExtendedKeyUsage.CODE_SIGNING,))
    rsa_signing = issue(spec=RSA_2048, profile=code_signing)
    assert not extension(rsa_signing, x509.KeyUsage).value.key_encipherment
    assert not extension(issue(spec=ED25519), x509.KeyUsage).value.key_encipherment


def test_empty_subject_makes_the_san_critical() -> None:
    leaf = issue(
        common_name=None,
        sans=SubjectAltNames(ips=(ipaddress.ip_address("192.0.2.1"),), uris=("spiffe://x/y",)),
    )
    assert leaf.subject == x509.Name([])
    assert extension(leaf, x509.SubjectAlternativeName).critical


def test_must_staple_and_crl_distribution_point_when_configured() -> None:
    url = "http://pki.example/crl/issuing.crl"
    with_crl = CertificateAuthority(ISSUING.certificate, ISSUING.key, ISSUING.chain, url)
    leaf = issue(with_crl, profile=replace(TLS, must_staple=True))
    assert extension(leaf, x509.TLSFeature).value == x509.TLSFeature(
        [x509.TLSFeatureType.status_request]
    )
    points = extension(leaf, x509.CRLDistributionPoints).value
    assert [point.full_name for point in points] == [[x509.UniformResourceIdentifier(url)]]


def test_serials_are_159_bit_positive_and_fit_20_octets() -> None:
    serials = [issue().serial_number for _ in range(64)]
    assert len(set(serials)) == len(serials)
    assert all(0 < serial < 1 << SERIAL_BITS for serial in serials)
    # With 64 draws, at least one uses the top bits: the randomness is not truncated.
    assert max(serials).bit_length() >= SERIAL_BITS - 8
    for serial in serials:
        assert parse_serial(format_serial(serial)) == serial
        assert len(format_serial(serial)) == 40


@pytest.mark.parametrize("text", ["", "xyz", "0", "-1", "1" + "0" * 40])
def test_serials_no_certificate_can_carry_are_refused(text: str) -> None:
    with pytest.raises(PKIError, match="pass the serial as issued"):
        parse_serial(text)


def test_validity_starts_backdated_and_lasts_the_granted_lifetime() -> None:
    leaf = issue(validity=timedelta(hours=5))
    start = NOW.replace(microsecond=0) - BACKDATE
    assert leaf.not_valid_before_utc == start
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=5)


def test_validity_never_outlives_or_predates_the_issuing_ca() -> None:
    short = intermediate_ca(ROOT, NOW, common_name="Short CA", lifetime=timedelta(days=10))
    leaf = issue(short, now=NOW)
    assert leaf.not_valid_after_utc == short.certificate.not_valid_after_utc
    assert leaf.not_valid_before_utc == short.certificate.not_valid_before_utc


def test_an_expired_ca_refuses_to_issue() -> None:
    later = ISSUING.certificate.not_valid_after_utc
    with pytest.raises(CAError, match=r"expired at .*; renew the CA before issuing"):
        issue(now=later)


def test_sub_ca_sits_below_its_parent_with_path_length_zero() -> None:
    constraints = extension(ISSUING.certificate, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = extension(ISSUING.certificate, x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert ISSUING.chain == (ROOT.certificate,)
    assert ISSUING.chain_pem == b"".join(
        cert.public_bytes(serialization.Encoding.PEM)
        for cert in (ISSUING.certificate, ROOT.certificate)
    )
    ISSUING.certificate.verify_directly_issued_by(ROOT.certificate)


YEAR = timedelta(days=365)
GOOD_USAGE = key_usage(key_cert_sign=True, crl_sign=True)
CA_TRUE = x509.BasicConstraints(ca=True, path_length=None)


@pytest.mark.parametrize(
    ("constraints", "usage", "start", "end", "message"),
    [
        (None, GOOD_USAGE, NOW - YEAR, NOW + YEAR, "is not a CA certificate"),
        (
            x509.BasicConstraints(ca=False, path_length=None),
            GOOD_USAGE,
            NOW - YEAR,
            NOW + YEAR,
            "is not a CA certificate",
        ),
        (CA_TRUE, None, NOW - YEAR, NOW + YEAR, "lacks the keyCertSign and cRLSign"),
        (
            CA_TRUE,
            key_usage(key_cert_sign=False, crl_sign=True),
            NOW - YEAR,
            NOW + YEAR,
            "lacks the keyCertSign",
        ),
        (
            CA_TRUE,
            key_usage(key_cert_sign=True, crl_sign=False),
            NOW - YEAR,
            NOW + YEAR,
            "lacks the keyCertSign",
        ),
        (
            CA_TRUE,
            GOOD_USAGE,
            NOW - 2 * YEAR,
            NOW - YEAR,
            "is valid only from",
        ),
        (
            CA_TRUE,
            GOOD_USAGE,
            NOW + YEAR,
            NOW + 2 * YEAR,
            "is valid only from",
        ),
    ],
    ids=[
        "no-constraints",
        "ca-false",
        "no-usage",
        "no-cert-sign",
        "no-crl-sign",
        "expired",
        "not-yet",
    ],
)
def test_check_ca_refuses_material_that_cannot_sign_today(
    constraints: x509.BasicConstraints | None,
    usage: x509.KeyUsage | None,
    start: datetime,
    end: datetime,
    message: str,
) -> None:
    key = pooled_key()
    cert = self_signed_certificate(
        key, not_before=start, not_after=end, basic_constraints=constraints, key_usage=usage
    )
    with pytest.raises(CAError, match=f"^operator CA {message}"):
        check_ca(cert, key, NOW, source="operator CA")


def test_check_ca_refuses_a_key_that_does_not_match() -> None:
    with pytest.raises(CAError, match="does not match its private key"):
        check_ca(ROOT.certificate, ISSUING.key, NOW, source="root")
    check_ca(ROOT.certificate, ROOT.key, NOW, source="root")


def test_load_refuses_a_chain_out_of_order() -> None:
    other = root_ca(NOW, common_name="Other Root")
    loaded = CertificateAuthority.load(
        ISSUING.certificate, ISSUING.key, (ROOT.certificate,), NOW, source="bundle"
    )
    assert loaded.chain == (ROOT.certificate,)
    with pytest.raises(CAError, match=r"^bundle: certificate 2 did not issue certificate 1; list"):
        CertificateAuthority.load(
            ISSUING.certificate, ISSUING.key, (other.certificate,), NOW, source="bundle"
        )
    deeper = intermediate_ca(ROOT, NOW, common_name="Sibling CA")
    with pytest.raises(CAError, match="certificate 3 did not issue certificate 2"):
        CertificateAuthority.load(
            ISSUING.certificate,
            ISSUING.key,
            (ROOT.certificate, deeper.certificate),
            NOW,
            source="bundle",
        )
