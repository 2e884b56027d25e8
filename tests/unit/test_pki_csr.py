"""CSR building and parsing: names, requested usages, signature and structure checks."""

from __future__ import annotations

import ipaddress
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certctl.pki.csr import build_csr, load_csr
from certctl.pki.errors import CSRError, PEMError
from certctl.pki.keys import ED25519, RSA_2048, KeySpec, key_spec
from certctl.pki.names import SubjectAltNames
from certctl.testing.certs import pooled_key

ALL_KINDS = SubjectAltNames(
    dns=("WWW.Example.COM", "www.example.com", "*.api.example.com"),
    ips=(ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::1")),
    emails=("ops@example.com",),
    uris=("spiffe://example.com/ns/web",),
)


@pytest.mark.parametrize("spec", [RSA_2048, ED25519], ids=str)
def test_built_csr_parses_back_with_every_name_kind(spec: KeySpec) -> None:
    key = pooled_key(spec)
    request = load_csr(
        build_csr(
            key,
            common_name="www.example.com",
            sans=ALL_KINDS,
            extended_key_usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        )
    )
    assert request.common_name == "www.example.com"
    assert request.sans == ALL_KINDS
    assert request.sans.dns == ("www.example.com", "*.api.example.com")
    assert request.unsupported_names == ()
    assert request.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH,)
    assert key_spec(request.public_key) == spec


def test_csr_without_subject_or_extensions_asks_for_nothing() -> None:
    request = load_csr(build_csr(pooled_key()))
    assert request.common_name is None
    assert not request.sans
    assert request.extended_key_usages is None


def _raw_csr(builder: x509.CertificateSigningRequestBuilder) -> bytes:
    return builder.sign(pooled_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_san_kinds_we_do_not_issue_are_reported_not_dropped() -> None:
    pem = _raw_csr(
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("a.example"),
                    x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
                    x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a"),
                ]
            ),
            critical=False,
        )
    )
    request = load_csr(pem)
    assert request.sans == SubjectAltNames(dns=("a.example",))
    assert len(request.unsupported_names) == 2
    assert request.unsupported_names[0].startswith("RegisteredID")


def test_tampered_csr_signature_is_refused() -> None:
    csr = x509.load_pem_x509_csr(build_csr(pooled_key(), common_name="a.example"))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[der.index(b"a.example")] ^= 0x01  # "`.example": same length, different signed bytes
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRError, match="signature does not verify"):
        load_csr(pem)


def test_two_common_names_are_refused() -> None:
    pem = _raw_csr(
        x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "a.example"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "b.example"),
                ]
            )
        )
    )
    with pytest.raises(CSRError, match="2 common names"):
        load_csr(pem)


def test_over_long_common_name_is_refused_as_unencodable() -> None:
    # cryptography refuses to build such a CN (X.520 allows 64); a hostile CSR is not so polite.
    with warnings.catch_warnings(action="ignore"):
        attribute = x509.NameAttribute(NameOID.COMMON_NAME, "a" * 65, _validate=False)
    pem = _raw_csr(x509.CertificateSigningRequestBuilder().subject_name(x509.Name([attribute])))
    with pytest.raises(CSRError, match="length must be >= 1 and <= 64"):
        load_csr(pem)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", PEMError, "no complete PEM CERTIFICATE REQUEST block"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
            CSRError,
            "CSR does not parse",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            PEMError,
            "found CERTIFICATE",
        ),
    ],
    ids=["empty", "der-noise", "wrong-type"],
)
def test_garbage_is_a_typed_error(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_csr(data)
