"""PEM bundles as they arrive from issuers, operators and disks.

Bundles are messy in practice: CRLF line ends, blank lines, comments or "Bag Attributes"
junk between blocks. We scan for BEGIN/END blocks and ignore everything else, then parse
each block strictly, so junk around blocks is tolerated but a damaged block is an error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, ed448, ed25519, rsa, x448, x25519

from certctl.pki.errors import PEMError

# Largest bundle we accept; real chains are a few KiB, so anything near this is an attack
# or a wrong file, and parsing it would only burn memory.
MAX_PEM_BYTES = 1 << 20

_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)

SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A leaf certificate and the chain that followed it, in the order given."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """Every complete ``label`` block in ``data``, re-encoded with LF line ends."""
    if len(data) > MAX_PEM_BYTES:
        raise PEMError(
            f"PEM input is {len(data)} bytes, over the {MAX_PEM_BYTES}-byte limit; "
            "pass the certificate bundle, not a larger file."
        )
    blocks = []
    for match in _BLOCK.finditer(data):
        if match.group(1).decode() == label:
            body = match.group(2).replace(b"\r\n", b"\n")
            blocks.append(
                b"-----BEGIN "
                + label.encode()
                + b"-----\n"
                + body
                + b"-----END "
                + label.encode()
                + b"-----\n"
            )
    return blocks


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in a bundle, in order; at least one, each block parsed strictly."""
    blocks = pem_blocks(data, "CERTIFICATE")
    if not blocks:
        raise PEMError("no complete CERTIFICATE block found; expected PEM-encoded certificates.")
    certs = []
    for index, block in enumerate(blocks):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise PEMError(f"CERTIFICATE block {index + 1} does not parse: {exc}.") from exc
    return certs


def split_bundle(data: bytes) -> Bundle:
    """The first certificate is the leaf, the rest its chain."""
    certs = load_certificates(data)
    return Bundle(leaf=certs[0], chain=tuple(certs[1:]))


def load_private_key(data: bytes) -> SigningKey:
    """An unencrypted PEM private key of a type that can sign certificates or handshakes."""
    if len(data) > MAX_PEM_BYTES:
        raise PEMError(f"private key input is {len(data)} bytes; expected a single PEM key.")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PEMError(f"private key does not parse as unencrypted PEM: {exc}.") from exc
    if isinstance(key, dh.DHPrivateKey | x25519.X25519PrivateKey | x448.X448PrivateKey):
        raise PEMError(
            f"private key type {type(key).__name__} cannot sign; use ECDSA, RSA or Ed25519."
        )
    return key  # type: ignore[return-value]


def key_matches_certificate(key: SigningKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of the certificate's public key."""
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER encoding: the identity we compare after deploys."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
