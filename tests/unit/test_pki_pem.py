"""PEM bundles: splitting, junk tolerance, typed refusals, fingerprints."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, x25519

from certctl.pki.errors import PEMError
from certctl.pki.keys import ECDSA_P256, RSA_2048, private_key_pem
from certctl.pki.pem import (
    MAX_PEM_BYTES,
    certificates_pem,
    fingerprint_sha256,
    key_matches_certificate,
    load_certificates,
    load_private_key,
    pem_blocks,
    split_bundle,
)
from certctl.testing.certs import intermediate_ca, pooled_key, root_ca

NOW = datetime(2025, 6, 1, tzinfo=UTC)
ROOT = root_ca(NOW)
ISSUING = intermediate_ca(ROOT, NOW)
LEAF_PEM = ISSUING.certificate.public_bytes(serialization.Encoding.PEM)
ROOT_PEM = ROOT.certificate.public_bytes(serialization.Encoding.PEM)


def test_messy_bundle_splits_into_leaf_and_chain() -> None:
    messy = (
        b"Bag Attributes\r\n    friendlyName: leaf\r\n"
        + LEAF_PEM.replace(b"\n", b"\r\n")
        + b"\r\n\r\nsubject=/CN=whatever\n\n"
        + ROOT_PEM
        + b"\n# trailing comment\n"
    )
    bundle = split_bundle(messy)
    assert bundle.leaf == ISSUING.certificate
    assert bundle.chain == (ROOT.certificate,)
    assert load_certificates(certificates_pem([ISSUING.certificate, ROOT.certificate])) == [
        ISSUING.certificate,
        ROOT.certificate,
    ]


def test_blocks_are_re_encoded_with_lf_line_ends() -> None:
    crlf = LEAF_PEM.replace(b"\n", b"\r\n")
    assert pem_blocks(crlf, "CERTIFICATE") == [LEAF_PEM]
    assert pem_blocks(crlf, "PRIVATE KEY") == []


def test_fingerprint_is_lowercase_hex_sha256_of_der() -> None:
    der = ROOT.certificate.public_bytes(serialization.Encoding.DER)
    fingerprint = fingerprint_sha256(ROOT.certificate)
    assert fingerprint == hashlib.sha256(der).hexdigest()
    assert fingerprint == fingerprint.lower()
    assert len(fingerprint) == 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no complete PEM CERTIFICATE block"),
        (LEAF_PEM[: len(LEAF_PEM) // 2], "no complete PEM CERTIFICATE block"),
        (private_key_pem(pooled_key()), "expected a PEM CERTIFICATE block but found PRIVATE KEY"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "CERTIFICATE block 1 does not parse",
        ),
        (
            LEAF_PEM + b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
            "CERTIFICATE block 2 does not parse",
        ),
        (b"\x30\x82\x01\x00" + b"\x00" * 300, "no complete PEM CERTIFICATE block"),
    ],
    ids=["empty", "truncated", "wrong-type", "der-noise", "second-block-bad", "raw-der"],
)
def test_unusable_certificate_input_is_a_pem_error(data: bytes, message: str) -> None:
    with pytest.raises(PEMError, match=message):
        load_certificates(data)


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(PEMError, match="over the 1048576-byte limit"):
        load_certificates(LEAF_PEM + b" " * MAX_PEM_BYTES)
    with pytest.raises(PEMError, match="over the 1048576-byte limit"):
        load_private_key(b"x" * (MAX_PEM_BYTES + 1))


def test_unterminated_blocks_are_scanned_in_linear_time() -> None:
    # Every BEGIN without an END used to rescan the rest of the input.
    hostile = b"-----BEGIN CERTIFICATE-----\n" * (MAX_PEM_BYTES // 28)
    started = time.perf_counter()
    with pytest.raises(PEMError):
        load_certificates(hostile)
    assert time.perf_counter() - started < 5


def test_private_keys_load_and_match_their_certificate() -> None:
    assert key_matches_certificate(load_private_key(private_key_pem(ROOT.key)), ROOT.certificate)
    for spec in (ECDSA_P256, RSA_2048):
        assert not key_matches_certificate(pooled_key(spec), ROOT.certificate)


def test_keys_that_cannot_sign_certificates_are_refused() -> None:
    for key in (dsa.generate_private_key(2048), x25519.X25519PrivateKey.generate()):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(PEMError, match="cannot sign certificates; use ECDSA, RSA or Ed25519"):
            load_private_key(pem)


def test_encrypted_and_garbage_keys_are_pem_errors() -> None:
    encrypted = pooled_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    for data in (
        encrypted,
        b"",
        LEAF_PEM,
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ):
        with pytest.raises(PEMError, match="pass an unencrypted PKCS#8, SEC1 or PKCS#1 PEM key"):
            load_private_key(data)
