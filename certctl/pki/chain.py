"""RFC 5280 path building and validation, by cryptography's Rust verifier.

The verifier builds the path itself from the untrusted intermediates (in any order, with
strays ignored) and applies the CA/Browser Forum profile that real clients apply, so a
chain that passes here is one browsers and TLS libraries accept too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.verification import (
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from certctl.pki.errors import ChainError


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    server_name: str | None = None,
) -> tuple[x509.Certificate, ...]:
    """The validated path, leaf first and trust anchor last, or ``ChainError``.

    With ``server_name`` (a host name or IP address) the leaf is checked as a TLS server
    certificate for that name; without one, as a TLS client certificate. Both require the
    matching extended key usage, as clients do.
    """
    if not roots:
        raise ChainError("no trust anchors given; pass the root certificate(s) to trust.")
    builder = PolicyBuilder().store(Store(list(roots))).time(now)
    try:
        if server_name is None:
            return tuple(builder.build_client_verifier().verify(leaf, list(intermediates)).chain)
        return tuple(_server_verifier(builder, server_name).verify(leaf, list(intermediates)))
    except VerificationError as exc:
        raise ChainError(
            f"certificate {leaf.subject.rfc4514_string() or '(empty subject)'} does not "
            f"validate ({exc}); deploy the leaf with its issuing chain from a trusted root."
        ) from exc


def _server_verifier(builder: PolicyBuilder, server_name: str) -> ServerVerifier:
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        subject = x509.DNSName(server_name)
    try:
        return builder.build_server_verifier(subject)
    except ValueError as exc:
        raise ChainError(
            f"server_name {server_name!r} is neither a DNS name nor an IP address; "
            "pass the name clients connect to."
        ) from exc
