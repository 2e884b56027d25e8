"""Key generation, description and RFC 7093 key identifiers."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from certctl.core.model import KeyAlgorithm
from certctl.pki.errors import PKIError
from certctl.pki.keys import (
    ECDSA_P256,
    ED25519,
    GENERATED_SPECS,
    KeySpec,
    describe_key,
    generate_key,
    key_identifier,
    key_spec,
    private_key_pem,
    subject_public_key_info,
)
from certctl.pki.pem import load_private_key
from certctl.testing.certs import pooled_key, unacceptable_keys


@pytest.mark.parametrize("spec", GENERATED_SPECS, ids=str)
def test_generated_keys_have_the_requested_spec_and_round_trip_through_pem(spec: KeySpec) -> None:
    key = pooled_key(spec)
    assert key_spec(key.public_key()) == spec
    reloaded = load_private_key(private_key_pem(key))
    assert key_spec(reloaded.public_key()) == spec
    assert private_key_pem(reloaded) == private_key_pem(key)


def test_generation_defaults_to_ecdsa_p256_and_yields_fresh_keys() -> None:
    first, second = generate_key(), generate_key()
    assert key_spec(first.public_key()) == ECDSA_P256
    assert private_key_pem(first) != private_key_pem(second)


@pytest.mark.parametrize(
    "spec", [KeySpec(KeyAlgorithm.RSA, 1024), KeySpec(KeyAlgorithm.ECDSA, 521)], ids=str
)
def test_specs_we_do_not_issue_for_are_not_generated(spec: KeySpec) -> None:
    with pytest.raises(PKIError, match="cannot be generated; choose one of ECDSA P-256"):
        generate_key(spec)


def test_unusual_keys_are_described_but_have_no_spec() -> None:
    small_rsa, k1, ed448_key = unacceptable_keys()
    assert key_spec(small_rsa.public_key()) == KeySpec(KeyAlgorithm.RSA, 1024)
    assert key_spec(k1.public_key()) is None
    assert describe_key(k1.public_key()) == "ECDSA secp256k1"
    assert key_spec(ed448_key.public_key()) is None
    assert describe_key(ed448_key.public_key()) == "Ed448"
    dsa_key = dsa.generate_private_key(2048).public_key()
    assert key_spec(dsa_key) is None
    assert describe_key(dsa_key) == "DSA"
    assert describe_key(pooled_key(ED25519).public_key()) == "Ed25519"
    assert key_spec(ec.generate_private_key(ec.SECP521R1()).public_key()) == KeySpec(
        KeyAlgorithm.ECDSA, 521
    )


@pytest.mark.parametrize("spec", GENERATED_SPECS, ids=str)
def test_key_identifier_is_truncated_sha256_of_the_subject_public_key_bits(spec: KeySpec) -> None:
    public = pooled_key(spec).public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        bits = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(public, rsa.RSAPublicKey):
        bits = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        bits = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_identifier(subject_public_key_info(public)) == hashlib.sha256(bits).digest()[:20]
    # Same bits as RFC 5280's SHA-1 method hashes, which cryptography implements itself.
    assert x509.SubjectKeyIdentifier.from_public_key(public).digest == hashlib.sha1(bits).digest()
