"""Key generation, key description and key identifiers.

Agents generate keys here (ECDSA P-256 unless a profile asks otherwise), and the CA uses
``key_spec`` to describe the key inside a CSR so that profiles can judge it. Only the NIST
curves are described as ECDSA: other curves (secp256k1, brainpool) have the same bit sizes
but no TLS client accepts them, so treating them as "ECDSA 256" would let a profile pass a
certificate nobody can use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from certctl.core.model import KeyAlgorithm
from certctl.pki import der
from certctl.pki.errors import PKIError

SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

_Digest = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
SignatureHash = _Digest | None

# Public exponent 65537 is the only one every TLS stack accepts and the one FIPS requires.
_RSA_EXPONENT = 65537

_CURVES: dict[int, ec.EllipticCurve] = {
    256: ec.SECP256R1(),
    384: ec.SECP384R1(),
    521: ec.SECP521R1(),
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """An algorithm and its size in bits: curve size, RSA modulus, or 256 for Ed25519."""

    algorithm: KeyAlgorithm
    size: int

    def __str__(self) -> str:
        if self.algorithm is KeyAlgorithm.ECDSA:
            return f"ECDSA P-{self.size}"
        if self.algorithm is KeyAlgorithm.RSA:
            return f"RSA {self.size}"
        return "Ed25519"


ECDSA_P256 = KeySpec(KeyAlgorithm.ECDSA, 256)
ECDSA_P384 = KeySpec(KeyAlgorithm.ECDSA, 384)
RSA_2048 = KeySpec(KeyAlgorithm.RSA, 2048)
RSA_3072 = KeySpec(KeyAlgorithm.RSA, 3072)
RSA_4096 = KeySpec(KeyAlgorithm.RSA, 4096)
ED25519 = KeySpec(KeyAlgorithm.ED25519, 256)

# By curve name: the only NIST curves, so other curves of the same sizes are not ECDSA here.
_EC_SPECS = {curve.name: KeySpec(KeyAlgorithm.ECDSA, size) for size, curve in _CURVES.items()}

GENERATED_SPECS = (ECDSA_P256, ECDSA_P384, RSA_2048, RSA_3072, RSA_4096, ED25519)


def generate_key(spec: KeySpec = ECDSA_P256) -> SigningKey:
    """A fresh private key; only the sizes we are willing to put into certificates."""
    if spec not in GENERATED_SPECS:
        choices = ", ".join(str(s) for s in GENERATED_SPECS)
        raise PKIError(f"key spec {spec} cannot be generated; choose one of {choices}.")
    if spec.algorithm is KeyAlgorithm.ECDSA:
        return ec.generate_private_key(_CURVES[spec.size])
    if spec.algorithm is KeyAlgorithm.RSA:
        return rsa.generate_private_key(public_exponent=_RSA_EXPONENT, key_size=spec.size)
    return ed25519.Ed25519PrivateKey.generate()


def signature_hash(key: SigningKey) -> SignatureHash:
    """The digest to pair with ``key``: matched to the curve's strength, none for EdDSA."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return _digest(key)


def _digest(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> _Digest:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 384:
        return hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def signer(key: SigningKey) -> Callable[[bytes], bytes]:
    """How ``key`` signs what the CA encodes itself, exactly as ``CertificateBuilder.sign``
    with ``signature_hash(key)`` would: PKCS#1 v1.5 padding for RSA, no digest for EdDSA.
    Built once per CA so an issuance does not redo the dispatch."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign
    digest = _digest(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(digest)
        return lambda data: key.sign(data, ecdsa)
    pkcs1 = padding.PKCS1v15()
    return lambda data: key.sign(data, pkcs1, digest)


def private_key_pem(key: SigningKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the one format every target (NGINX, HAProxy, Java) reads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_spec(public_key: CertificatePublicKeyTypes) -> KeySpec | None:
    """What the key is, or None for a key we would never certify (DSA, Ed448, odd curves)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _EC_SPECS.get(public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeySpec(KeyAlgorithm.RSA, public_key.key_size)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ED25519
    return None


def describe_key(public_key: CertificatePublicKeyTypes) -> str:
    """A human name for any key, used in refusals so the operator sees what was sent."""
    spec = key_spec(public_key)
    if spec is not None:
        return str(spec)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA {public_key.curve.name}"
    return type(public_key).__name__.removesuffix("PublicKey")


def subject_public_key_info(public_key: CertificatePublicKeyTypes) -> bytes:
    """The key as certificates carry it (SubjectPublicKeyInfo DER)."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_identifier(spki: bytes) -> bytes:
    """RFC 7093 method 1: the leftmost 160 bits of SHA-256 over the subjectPublicKey bits.

    RFC 5280's SHA-1 method still works but SHA-1 is banned in some environments (FIPS
    audits flag it); truncated SHA-256 keeps the usual 20-byte length. Reading the bits out
    of the SubjectPublicKeyInfo DER (``subject_public_key_info``) works the same for every
    key type.
    """
    # SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, subjectPublicKey BIT STRING }
    _, bits = der.children(spki)
    # The first content octet of a BIT STRING counts unused bits (always 0 for keys).
    return hashlib.sha256(der.content(bits)[1:]).digest()[:20]
