"""The CA's own leaf encoding against ``cryptography``'s ``CertificateBuilder``.

``CertificateAuthority.issue`` assembles the TBSCertificate itself for speed
(``certctl/pki/der.py``). Here every generated grant is issued, then the same certificate is
described to ``CertificateBuilder`` with the serial and validity the CA chose, and the two
TBSCertificates must be the same bytes; the signature must verify under the CA's key. CAs
of every key type we sign with, with and without a CRL URL; validity on both sides of 2050
(UTCTime vs GeneralizedTime); every name kind, with and without a common name.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st
from pki_strategies import hosts, name_sets

from certctl.core.model import ExtendedKeyUsage, KeyAlgorithm
from certctl.pki import der
from certctl.pki.ca import CertificateAuthority, Leaf
from certctl.pki.keys import (
    ECDSA_P256,
    ECDSA_P384,
    ED25519,
    GENERATED_SPECS,
    RSA_2048,
    KeySpec,
    key_identifier,
    key_spec,
    signature_hash,
    subject_public_key_info,
)
from certctl.pki.names import SubjectAltNames
from certctl.pki.pem import fingerprint_sha256
from certctl.pki.profile import Grant, eku_oid
from certctl.testing.certs import intermediate_ca, pooled_key, root_ca

# Late enough that leaves cross 1 January 2050, where RFC 5280 switches time encodings.
NOW = datetime(2045, 3, 1, tzinfo=UTC)
ROOT = root_ca(NOW)
CAS = {
    "root P-256": ROOT,
    **{
        f"sub-CA {spec}": intermediate_ca(ROOT, NOW, spec=spec, common_name=f"Issuing {spec}")
        for spec in (ECDSA_P384, RSA_2048, ED25519)
    },
}
CA_NAMES = sorted(CAS)
WITH_CRL_URL = {
    name: CertificateAuthority(ca.certificate, ca.key, ca.chain, "http://crl.example/ca.crl")
    for name, ca in CAS.items()
}
# A grant always names something; examples that drew no names at all get this one.
FALLBACK_NAMES = SubjectAltNames(dns=("fallback.example",))
TLS_USAGES = (ExtendedKeyUsage.SERVER_AUTH, ExtendedKeyUsage.CLIENT_AUTH)


def reference_tbs(
    authority: CertificateAuthority,
    public_key: CertificatePublicKeyTypes,
    grant: Grant,
    leaf: Leaf,
) -> bytes:
    """What ``CertificateBuilder`` makes of the leaf profile (RFC 5280 extensions in the
    CA's order), given the serial and validity the CA chose: the reference, written
    independently of ``certctl.pki.ca`` so a change there cannot change both sides."""
    key_encipherment = grant.key.algorithm is KeyAlgorithm.RSA and any(
        usage in TLS_USAGES for usage in grant.extended_key_usages
    )
    subject = (
        []
        if grant.common_name is None
        else [x509.NameAttribute(NameOID.COMMON_NAME, grant.common_name)]
    )
    builder = (
        x509.CertificateBuilder()
        .issuer_name(authority.certificate.subject)
        .subject_name(x509.Name(subject))
        .public_key(public_key)
        .serial_number(leaf.serial)
        .not_valid_before(leaf.not_before)
        .not_valid_after(leaf.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([eku_oid(usage) for usage in grant.extended_key_usages]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(grant.sans.general_names()),
            critical=grant.common_name is None,
        )
        .add_extension(
            x509.SubjectKeyIdentifier(key_identifier(subject_public_key_info(public_key))),
            critical=False,
        )
        .add_extension(authority.authority_key_identifier, critical=False)
    )
    if authority.crl_url is not None:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(authority.crl_url)], None, None, None
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if grant.must_staple:
        builder = builder.add_extension(
            x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False
        )
    return builder.sign(authority.key, signature_hash(authority.key)).tbs_certificate_bytes


usages = st.lists(st.sampled_from(list(ExtendedKeyUsage)), min_size=1, unique=True).map(tuple)
common_names = st.none() | hosts


@given(
    ca_name=st.sampled_from(CA_NAMES),
    crl_url=st.booleans(),
    spec=st.sampled_from(GENERATED_SPECS),
    common_name=common_names,
    names=name_sets,
    usages=usages,
    lifetime=st.timedeltas(timedelta(seconds=1), timedelta(days=800)),
    issued_after=st.timedeltas(timedelta(0), timedelta(days=3000)),
    must_staple=st.booleans(),
)
@example(  # A leaf that ends in 2050: GeneralizedTime after UTCTime.
    ca_name="root P-256",
    crl_url=False,
    spec=ECDSA_P256,
    common_name="edge.example",
    names=FALLBACK_NAMES,
    usages=TLS_USAGES,
    lifetime=timedelta(days=400),
    issued_after=timedelta(days=1700),
    must_staple=False,
)
def test_issued_leaf_is_what_certificate_builder_makes(
    *,
    ca_name: str,
    crl_url: bool,
    spec: KeySpec,
    common_name: str | None,
    names: SubjectAltNames,
    usages: tuple[ExtendedKeyUsage, ...],
    lifetime: timedelta,
    issued_after: timedelta,
    must_staple: bool,
) -> None:
    authority = (WITH_CRL_URL if crl_url else CAS)[ca_name]
    public_key = pooled_key(spec).public_key()
    sans = names if names or common_name else FALLBACK_NAMES
    grant = Grant(common_name, sans, spec, usages, lifetime, must_staple)
    leaf = authority.issue(public_key, grant, NOW + issued_after)

    certificate = leaf.certificate
    assert certificate.tbs_certificate_bytes == reference_tbs(authority, public_key, grant, leaf)
    certificate.verify_directly_issued_by(authority.certificate)
    assert certificate.serial_number == leaf.serial
    assert certificate.not_valid_before_utc == leaf.not_before
    assert certificate.not_valid_after_utc == leaf.not_after
    assert certificate.public_bytes(serialization.Encoding.DER) == leaf.der
    assert certificate.public_bytes(serialization.Encoding.PEM) == leaf.pem
    assert fingerprint_sha256(certificate) == leaf.fingerprint_sha256
    assert key_spec(certificate.public_key()) == spec


def test_a_leaf_ending_in_2050_carries_utc_time_then_generalized_time() -> None:
    authority = CAS["root P-256"]
    grant = Grant(None, FALLBACK_NAMES, ECDSA_P256, TLS_USAGES, timedelta(days=200), False)
    leaf = authority.issue(pooled_key().public_key(), grant, datetime(2049, 10, 1, tzinfo=UTC))
    validity = der.tlv(der.SEQUENCE, der.time(leaf.not_before) + der.time(leaf.not_after))
    assert validity in leaf.der
    assert der.time(leaf.not_before)[0] == der.UTC_TIME
    assert der.time(leaf.not_after)[0] == der.GENERALIZED_TIME
    assert leaf.certificate.not_valid_after_utc.year == 2050


@given(
    oid=st.lists(st.integers(0, 2**64), min_size=1, max_size=6).flatmap(
        lambda arcs: st.tuples(st.integers(0, 2), st.integers(0, 39)).map(
            lambda head: x509.ObjectIdentifier(".".join(str(arc) for arc in (*head, *arcs)))
        )
    )
)
def test_object_identifier_is_encoded_as_cryptography_encodes_it(
    oid: x509.ObjectIdentifier,
) -> None:
    # An EKU extension value is SEQUENCE OF OBJECT IDENTIFIER: its content is our TLV.
    assert der.content(x509.ExtendedKeyUsage([oid]).public_bytes()) == der.object_identifier(oid)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 24])
def test_lengths_round_trip_through_the_reader(size: int) -> None:
    element = der.tlv(der.OCTET_STRING, bytes(size))
    assert der.content(element) == bytes(size)
    assert der.children(der.tlv(der.SEQUENCE, element * 2)) == [element, element]


@given(st.integers(0, 1 << 200))
def test_integers_are_minimal_twos_complement(value: int) -> None:
    encoded = der.integer(value)
    body = der.content(encoded)
    assert int.from_bytes(body, "big", signed=True) == value
    # Minimal: no leading octet that only repeats the sign of the next one.
    assert len(body) == 1 or not (body[0] == 0 and body[1] < 0x80)


def test_negative_integers_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        der.integer(-1)


@pytest.mark.parametrize(
    ("moment", "encoded"),
    [
        (datetime(1950, 1, 1, tzinfo=UTC), b"\x17\x0d500101000000Z"),
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x17\x0d491231235959Z"),
        (datetime(2050, 1, 1, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
        (datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f19491231235959Z"),
        (datetime(2030, 6, 1, 12), b"\x17\x0d300601120000Z"),
        (datetime(2030, 6, 1, 16, tzinfo=timezone(timedelta(hours=2))), b"\x17\x0d300601140000Z"),
    ],
)
def test_times_switch_encoding_at_1950_and_2050(moment: datetime, encoded: bytes) -> None:
    assert der.time(moment) == encoded
