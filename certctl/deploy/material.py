"""In-process check of the material a plan is about to stage.

A target's validate command (``nginx -t``) reads the *live* config, so it cannot catch a
key that does not match its certificate or a chain in the wrong order in the new files.
We check those here, before any file is touched, so a bad issuance never reaches a server.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certctl.deploy.errors import ValidateFailed
from certctl.deploy.plan import File, FileRole
from certctl.pki.errors import PKIError
from certctl.pki.pem import (
    SigningKey,
    fingerprint_sha256,
    key_matches_certificate,
    load_certificates,
    load_private_key,
)

_LEAF_ROLES = frozenset({FileRole.CERT, FileRole.FULLCHAIN, FileRole.COMBINED})
_KEY_ROLES = frozenset({FileRole.KEY, FileRole.COMBINED})


def check_material(files: Sequence[File], now: datetime) -> x509.Certificate | None:
    """Raise ``ValidateFailed`` naming the file at fault; return the leaf, if any file has one.

    Checks: every role-bearing file parses; all leaf-bearing files hold the same leaf;
    every key matches it; every chain is ordered (each certificate issued by the next);
    no certificate has expired at ``now``.
    """
    leaf: tuple[File, x509.Certificate] | None = None
    chains: list[tuple[File, list[x509.Certificate]]] = []
    keys: list[tuple[File, SigningKey]] = []
    for item in files:
        if item.role is FileRole.OTHER:
            continue
        certs, key = _parse(item, now)
        if key is not None:
            keys.append((item, key))
        if item.role in _LEAF_ROLES:
            if leaf is None:
                leaf = (item, certs[0])
            elif fingerprint_sha256(certs[0]) != fingerprint_sha256(leaf[1]):
                raise ValidateFailed(
                    f"{item.path} and {leaf[0].path} hold different leaf certificates; "
                    "deploy files from one certificate version."
                )
        if certs:
            chains.append((item, certs))
    if leaf is None:
        for item, certs in chains:
            _check_order(item, certs)
        return None
    for item, key in keys:
        if not key_matches_certificate(key, leaf[1]):
            raise ValidateFailed(
                f"{item.path} holds a private key that does not match the certificate in "
                f"{leaf[0].path}; deploy the key generated for this certificate."
            )
    for item, certs in chains:
        _check_order(item, [leaf[1], *certs] if item.role is FileRole.CHAIN else certs)
    return leaf[1]


def _parse(item: File, now: datetime) -> tuple[list[x509.Certificate], SigningKey | None]:
    try:
        certs = [] if item.role is FileRole.KEY else load_certificates(item.data)
        key = load_private_key(item.data) if item.role in _KEY_ROLES else None
    except PKIError as exc:
        raise ValidateFailed(f"{item.path} ({item.role}) is not usable: {exc}") from exc
    if item.role is FileRole.CERT and len(certs) != 1:
        raise ValidateFailed(
            f"{item.path} holds {len(certs)} certificates but its role is cert; "
            "use role fullchain or keep only the leaf."
        )
    for cert in certs:
        if cert.not_valid_after_utc <= now:
            raise ValidateFailed(
                f"{item.path} holds {cert.subject.rfc4514_string()!r}, expired at "
                f"{cert.not_valid_after_utc.isoformat()}; deploy a current certificate."
            )
    return certs, key


def _check_order(item: File, certs: list[x509.Certificate]) -> None:
    for child, issuer in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise ValidateFailed(
                f"{item.path}: {child.subject.rfc4514_string()!r} is not followed by its "
                "issuer; order the chain leaf first, each certificate followed by its issuer."
            ) from None
