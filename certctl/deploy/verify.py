"""Post-deploy verification: does the endpoint now serve the leaf we deployed?

A TLS handshake (SNI set) fetches the served leaf; we compare SHA-256 fingerprints of the
DER encoding. Certificate validation is off on purpose: we are not trusting the peer, we
are checking that it presents exactly the bytes we wrote, which is a stronger test than
chain validation and works for private CAs. Servers reload asynchronously (nginx finishes
its old workers gracefully), so a mismatch is retried with exponential backoff before it
counts as a failure.
"""

from __future__ import annotations

import ipaddress
import random as _random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio
from cryptography import x509

from certctl.core.backoff import Backoff
from certctl.deploy.errors import VerifyFailed
from certctl.deploy.plan import Handshake
from certctl.pki.pem import fingerprint_sha256

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = Backoff(initial=1.0, cap=16.0)
DEFAULT_TIMEOUT = 10.0


class Verifier(Protocol):
    """Raises ``VerifyFailed`` when the endpoint does not serve ``leaf``."""

    async def verify(self, leaf: x509.Certificate) -> Handshake: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect, and the SNI name (defaults to ``host`` unless it is an IP)."""

    host: str
    port: int = 443
    server_name: str | None = None

    @property
    def sni(self) -> str | None:
        if self.server_name is not None:
            return self.server_name
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        return None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Served:
    """The leaf an endpoint presented and the protocol it negotiated."""

    certificate: x509.Certificate
    tls_version: str


def _probe_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # We compare fingerprints instead of validating; see the module docstring.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch_served(endpoint: Endpoint, timeout: float = DEFAULT_TIMEOUT) -> Served:
    """One handshake; raises ``OSError``, ``trio.BrokenResourceError`` or ``trio.TooSlowError``."""
    with trio.fail_after(timeout):
        tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        stream = trio.SSLStream(tcp, _probe_context(), server_hostname=endpoint.sni)
        try:
            await stream.do_handshake()
            der = stream.getpeercert(binary_form=True)
            version = stream.version()
        finally:
            await trio.aclose_forcefully(stream)
    if not der:
        raise trio.BrokenResourceError(f"{endpoint} presented no certificate")
    return Served(x509.load_der_x509_certificate(der), str(version).replace("TLSv", "TLS "))


class TLSVerifier:
    """Retries up to ``attempts`` handshakes, waiting ``backoff`` between them."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: Backoff = DEFAULT_BACKOFF,
        timeout: float = DEFAULT_TIMEOUT,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"verify attempts is {attempts}; give at least 1.")
        self._endpoint = endpoint
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._random = random

    async def verify(self, leaf: x509.Certificate) -> Handshake:
        expected = fingerprint_sha256(leaf)
        endpoint = self._endpoint
        problem = ""
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                await trio.sleep(self._backoff.delay(attempt - 1, self._random))
            try:
                served = await fetch_served(endpoint, self._timeout)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                problem = f"handshake failed: {exc or type(exc).__name__}"
                continue
            fingerprint = fingerprint_sha256(served.certificate)
            if fingerprint == expected:
                return Handshake(
                    endpoint=str(endpoint),
                    server_name=endpoint.sni,
                    tls_version=served.tls_version,
                    fingerprint=fingerprint,
                    subject=served.certificate.subject.rfc4514_string(),
                    not_after=served.certificate.not_valid_after_utc,
                    attempts=attempt,
                )
            problem = f"served SHA-256 {fingerprint}, deployed {expected}"
        raise VerifyFailed(
            f"post-deploy verify of {endpoint} (SNI {endpoint.sni}) failed after "
            f"{self._attempts} attempts, last: {problem}; check that the reload command "
            "makes the server load the deployed files."
        )
