"""Argument checks both stores run before touching any row, so both refuse the same calls
with the same ``ValueError`` (PostgreSQL's CHECK constraints are the backstop, not the
message an operator sees)."""

from __future__ import annotations

import re
from typing import Final

from certctl.core.model import CertificateVersion, Job, ManagedCertificate

_KEY_HASH: Final = re.compile(r"[0-9a-f]{64}")


def key_hash(value: str) -> str:
    if not isinstance(value, str) or not _KEY_HASH.fullmatch(value):
        raise ValueError(
            "key_hash is not a SHA-256 hex digest; pass hashlib.sha256(key).hexdigest() "
            "of the agent key, never the key itself."
        )
    return value


def new_certificate(cert: ManagedCertificate) -> ManagedCertificate:
    if cert.expires_at is not None:
        raise ValueError(
            f"ManagedCertificate {cert.id} expires_at is set at creation; leave it None, "
            "the first version sets it."
        )
    return cert


def version(v: CertificateVersion) -> CertificateVersion:
    if v.not_after <= v.not_before:
        raise ValueError(
            f"CertificateVersion {v.id} not_after must be later than not_before; pass the "
            "validity period of the issued certificate."
        )
    return v


def transition(previous: Job, new: Job) -> None:
    if previous.id != new.id:
        raise ValueError(
            f"new.id is {new.id}; pass the transition of job {previous.id} computed from it."
        )
