"""What a client of a sidecar sees, judged by code that shares nothing with the connectors.

``served_leaf`` fetches the leaf with the standard library's ``ssl`` (and ``smtplib`` or
``imaplib`` for STARTTLS): a check that shares no code with the connector's verifier it
is used to judge. ``decoy_tls_server`` is a listener presenting another certificate, for
verification that must fail.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import smtplib
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, cast

import trio
from cryptography import x509

from certctl.deploy import Endpoint

__all__ = ["PROBE_ERRORS", "StartTLS", "decoy_tls_server", "served_leaf"]

StartTLS = Literal["smtp", "imap"]
# What ``served_leaf`` raises while a server is not (yet) serving TLS.
PROBE_ERRORS = (OSError, smtplib.SMTPException, imaplib.IMAP4.error)


def served_leaf(
    endpoint: Endpoint, starttls: StartTLS | None = None, timeout: float = 5.0
) -> x509.Certificate:
    """One handshake (after STARTTLS when asked); no certificate validation: we compare."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    der: bytes | None
    if starttls == "smtp":
        with smtplib.SMTP(endpoint.host, endpoint.port, timeout=timeout) as smtp:
            smtp.starttls(context=context)
            der = cast(ssl.SSLSocket, smtp.sock).getpeercert(binary_form=True)
    elif starttls == "imap":
        imap = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=timeout)
        try:
            imap.starttls(ssl_context=context)
            der = imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        finally:
            imap.shutdown()
    else:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{endpoint} presented no certificate")
    return x509.load_der_x509_certificate(der)


@contextlib.asynccontextmanager
async def decoy_tls_server(cert_pem: bytes, key_pem: bytes) -> AsyncIterator[Endpoint]:
    """A loopback TLS listener presenting another certificate: a verify target that must
    fail, as when the endpoint in a target config points at the wrong server."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="certctl-decoy-") as scratch:
        pem = Path(scratch) / "decoy.pem"
        pem.write_bytes(cert_pem + key_pem)
        context.load_cert_chain(pem)

    async def handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.do_handshake()
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_ssl_over_tcp, handshake, 0, context, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        yield Endpoint("127.0.0.1", port)
        nursery.cancel_scope.cancel()
