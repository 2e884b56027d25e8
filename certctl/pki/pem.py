"""PEM bundles as they arrive from issuers, operators and disks.

Bundles are messy in practice: CRLF line ends, blank lines, comments or "Bag Attributes"
junk between blocks. We scan for BEGIN/END blocks and ignore everything else, then parse
each block strictly, so junk around blocks is tolerated but a damaged block is an error.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certctl.pki.errors import PARSE_ERRORS, PEMError
from certctl.pki.keys import SigningKey, subject_public_key_info

__all__ = [
    "MAX_PEM_BYTES",
    "Bundle",
    "SigningKey",
    "certificates_pem",
    "fingerprint_sha256",
    "key_matches_certificate",
    "load_certificates",
    "load_private_key",
    "pem_blocks",
    "pem_encode",
    "split_bundle",
]

# Largest bundle we accept; real chains are a few KiB, so anything near this is an attack
# or a wrong file, and parsing it would only burn memory.
MAX_PEM_BYTES = 1 << 20

# The body may hold only base64 and whitespace (RFC 7468 "strict" text, plus CRLF): a
# narrow class keeps the scan linear, where ".*?" up to the END line would rescan the rest
# of the input after every unterminated BEGIN and turn a 1 MiB upload into minutes of CPU.
_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n([A-Za-z0-9+/=\s]*)-----END \1-----")
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")


@dataclass(frozen=True, slots=True)
class Bundle:
    """A leaf certificate and the chain that followed it, in the order given."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def _check_size(data: bytes, what: str) -> None:
    if len(data) > MAX_PEM_BYTES:
        raise PEMError(
            f"{what} input is {len(data)} bytes, over the {MAX_PEM_BYTES}-byte limit; "
            "pass the PEM file itself, not a larger file."
        )


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """Every complete ``label`` block in ``data``, re-encoded with LF line ends."""
    _check_size(data, label)
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


def no_block_error(data: bytes, label: str) -> PEMError:
    """The refusal for input without a usable ``label`` block, naming what was there instead."""
    found = sorted({m.group(1).decode() for m in _BEGIN.finditer(data)} - {label})
    if found:
        return PEMError(
            f"expected a PEM {label} block but found {', '.join(found)}; pass the {label} file."
        )
    return PEMError(
        f"no complete PEM {label} block found (missing, truncated or damaged); "
        f"pass text that starts with -----BEGIN {label}-----."
    )


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in a bundle, in order; at least one, each block parsed strictly.

    Extensions are decoded here rather than lazily so that a damaged extension is a
    ``PEMError`` now instead of a ``ValueError`` from whichever caller reads it first.
    """
    blocks = pem_blocks(data, "CERTIFICATE")
    if not blocks:
        raise no_block_error(data, "CERTIFICATE")
    certs = []
    for index, block in enumerate(blocks):
        try:
            cert = x509.load_pem_x509_certificate(block)
            _ = cert.extensions
        except PARSE_ERRORS as exc:
            raise PEMError(
                f"CERTIFICATE block {index + 1} does not parse ({exc}); "
                "pass the certificate exactly as the CA issued it."
            ) from exc
        certs.append(cert)
    return certs


def split_bundle(data: bytes) -> Bundle:
    """The first certificate is the leaf, the rest its chain."""
    certs = load_certificates(data)
    return Bundle(leaf=certs[0], chain=tuple(certs[1:]))


def load_private_key(data: bytes) -> SigningKey:
    """An unencrypted PEM private key of a type that can sign certificates or handshakes."""
    _check_size(data, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except PARSE_ERRORS as exc:
        raise PEMError(
            f"private key does not parse as unencrypted PEM ({exc}); "
            "pass an unencrypted PKCS#8, SEC1 or PKCS#1 PEM key."
        ) from exc
    if not isinstance(key, SigningKey):
        raise PEMError(
            f"private key type {type(key).__name__} cannot sign certificates; "
            "use ECDSA, RSA or Ed25519."
        )
    return key


def key_matches_certificate(key: SigningKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of the certificate's public key."""
    return subject_public_key_info(key.public_key()) == subject_public_key_info(cert.public_key())


def pem_encode(label: str, der: bytes) -> bytes:
    """One PEM block in the layout cryptography and OpenSSL write (64-character lines)."""
    body = base64.b64encode(der)
    lines = b"\n".join(body[start : start + 64] for start in range(0, len(body), 64))
    marker = label.encode()
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (marker, lines, marker)


def certificates_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as one PEM bundle, in the order given (leaf first for servers)."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def fingerprint_sha256(cert: x509.Certificate | bytes) -> str:
    """Lowercase hex SHA-256 of the DER encoding (``cert`` itself when it is DER already):
    the identity we compare after deploys."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()
