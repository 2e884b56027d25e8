"""Certificate factories for tests: pooled keys, CA hierarchies, and deliberately broken CAs.

Key generation dominates any test that makes keys per example (RSA-4096 takes a second),
so keys come from a per-process pool; tests vary names, profiles and lifetimes instead.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.x509.oid import NameOID

from certctl.core.model import CertificateProfile, KeyAlgorithm, KeyRule
from certctl.pki.ca import CertificateAuthority, random_serial, self_signed_root
from certctl.pki.keys import (
    ECDSA_P256,
    KeySpec,
    SigningKey,
    generate_key,
    private_key_pem,
    signature_hash,
)
from certctl.pki.pem import certificates_pem

CA_LIFETIME = timedelta(days=3650)
# The reference's default profile: ECDSA>=256 or RSA>=2048, serverAuth, no TTL cap, any names.
DEFAULT_PROFILE = CertificateProfile(id="profile-default", name="default")
# Every key kind the CA certifies, at the smallest size worth certifying.
ANY_KEY_RULES = (
    KeyRule(KeyAlgorithm.ECDSA, 256),
    KeyRule(KeyAlgorithm.RSA, 2048),
    KeyRule(KeyAlgorithm.ED25519, 256),
)


@functools.cache
def pooled_key(spec: KeySpec = ECDSA_P256, index: int = 0) -> SigningKey:
    """The ``index``-th pooled key of ``spec``, generated once per process."""
    return generate_key(spec)


@functools.cache
def ca_key(name: str, spec: KeySpec = ECDSA_P256) -> SigningKey:
    """A pooled key for the CA called ``name``, distinct from every leaf key in the pool."""
    return generate_key(spec)


@functools.cache
def unacceptable_keys() -> tuple[SigningKey, ...]:
    """Keys no profile accepts: too small (RSA-1024), or of a kind we never certify
    (secp256k1, which has the size of P-256 but no TLS client support; Ed448)."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 (the point)
        ec.generate_private_key(ec.SECP256K1()),
        ed448.Ed448PrivateKey.generate(),
    )


def root_ca(now: datetime, *, common_name: str = "Test Root") -> CertificateAuthority:
    """A root that may have one sub-CA below it, as an operator's offline root would."""
    key = ca_key(common_name)
    cert = self_signed_root(key, common_name, now, CA_LIFETIME, path_length=1)
    return CertificateAuthority(cert, key)


def intermediate_ca(
    parent: CertificateAuthority,
    now: datetime,
    *,
    spec: KeySpec = ECDSA_P256,
    common_name: str = "Test Issuing CA",
    lifetime: timedelta = CA_LIFETIME,
) -> CertificateAuthority:
    """A sub-CA of ``parent``, carrying ``parent``'s chain above it."""
    key = ca_key(common_name, spec)
    cert = parent.issue_ca(key.public_key(), common_name, now, lifetime)
    return CertificateAuthority(cert, key, (parent.certificate, *parent.chain))


def self_signed_certificate(
    key: SigningKey,
    *,
    not_before: datetime,
    not_after: datetime,
    basic_constraints: x509.BasicConstraints | None,
    key_usage: x509.KeyUsage | None,
) -> x509.Certificate:
    """Any self-signed certificate, including ones no CA should accept as a CA."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Broken CA")])
    builder = x509.CertificateBuilder(
        issuer_name=name,
        subject_name=name,
        public_key=key.public_key(),
        serial_number=random_serial(),
        not_valid_before=not_before,
        not_valid_after=not_after,
    )
    if basic_constraints is not None:
        builder = builder.add_extension(basic_constraints, critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(key, signature_hash(key))


def key_usage(*, key_cert_sign: bool, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_authority(authority: CertificateAuthority, directory: Path) -> tuple[Path, Path]:
    """The CA's certificate (with its chain) and key as PEM files, as an operator supplies them."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    cert_path.write_bytes(authority.chain_pem)
    key_path.write_bytes(private_key_pem(authority.key))
    key_path.chmod(0o600)
    return cert_path, key_path


def write_certificates(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(certificates_pem(certs))
    return path
